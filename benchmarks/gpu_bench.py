"""Training throughput on a GPU (or a CPU): slices per second, peak memory, TFLOP/s, percent of peak.

    python benchmarks/gpu_bench.py [--preset paper] [--device auto] [--precision auto] [--steps 20]
                                   [--epochs 3] [--cases 10] [--data DIR] [--compile] [--out FILE]

Both measurements run the trainer's own step (:func:`stroke_helpers.train.train_step`: the
paper's augmentation, forward, multilevel loss, backward, AdamW; channels_last; the precision,
TF32 and cuDNN settings a run would choose, printed first):

- **synthetic**: one batch of random inputs already on the device, stepped ``--steps`` times:
  the compute ceiling of the model at this precision;
- **data**: the package's data path on a small phantom generated for the purpose (``--cases``
  training studies; or ``--data``, an ISLES-layout folder): the slice cache, the slices stacked
  on the device (:class:`~stroke_helpers.train.DeviceSlices`) and whole epochs of the training
  loop with its sampler, its batch gathering and its loss reads; the first epoch is a warm-up
  (cuDNN autotuning, ``torch.compile``), the others are timed, and one validation pass too.

FLOPs of one step come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matmuls, forward and backward; what it does not count, normalisation and elementwise work, is
left out, so the figure is a lower bound). Achieved TFLOP/s is shown against the card's dense
peak at the step's precision (:data:`PEAKS`, by device name; TF32 for fp32 where the policy
turns it on). A CPU has no entry: "n/a", never an invented peak. A percentage above 100 is a
broken measurement (a wrong peak or a timing that missed work) and stops the benchmark.

Default preset: ``paper`` on a GPU, ``cpu`` on a CPU. Writes
``benchmarks/results/gpu_<device>.json``. No GPU figure has been measured in this repository yet.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from stroke_helpers.augment import paper_augmentation
from stroke_helpers.engine import (
    apply_tf32_policy,
    choose_precision,
    configure_determinism,
    device_name,
    grad_scaler,
    resolve_device,
    synchronize,
)
from stroke_helpers.runs import TrainConfig
from stroke_helpers.train import DeviceSlices, Validation, _datasets, _train_epoch, train_step

#: Dense (no sparsity) peak TFLOP/s by device name: the first pattern that matches the name.
#: Vendor data sheets: H100/H200 SXM, H100 PCIe and NVL, A100 (SXM and PCIe), L4, T4, V100 SXM2
#: (the V100 PCIe's peaks are lower: its percentages read low, never above 100).
PEAKS = [
    (r"H200 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (r"H100.*PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (r"H100 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"H100", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}),
    (r"V100", {"fp16": 125.0, "fp32": 15.7}),
]


def peak_tflops(device: torch.device, name: str, precision: str) -> tuple[float | None, str]:
    """The card's dense peak for the step's precision, and which one it is; None off the table."""
    if device.type != "cuda":
        return None, "n/a"
    key = precision
    if precision == "fp32" and torch.cuda.get_device_capability(device) >= (8, 0):
        key = "tf32"  # the TF32 policy (engine.TF32) runs fp32 convolutions and matmuls on TF32 cores
    for pattern, peaks in PEAKS:
        if re.search(pattern, name):
            return peaks.get(key), key
    return None, key


def percent_of_peak(achieved_tflops: float, peak: float | None) -> float | None:
    if peak is None:
        return None
    percent = 100 * achieved_tflops / peak
    assert percent <= 100, f"{percent:.0f} % of the peak: a broken measurement (wrong peak or timing), not a result"
    return percent


def _model(config: TrainConfig, device: torch.device, compile: bool):
    torch.manual_seed(0)
    model = config.build_model().to(device, memory_format=torch.channels_last)
    fused = True if device.type == "cuda" else None
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.settings.weight_decay, fused=fused
    )
    return model, (torch.compile(model) if compile else model), optimiser


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def step_flops(config: TrainConfig, device: torch.device, dtype) -> float:
    """FLOPs of one training step of a full batch (eager, counted by FlopCounterMode)."""
    model, _, optimiser = _model(config, device, compile=False)
    s, b = config.settings.size, config.settings.batch_size
    x = torch.randn(b, config.in_channels, s, s, device=device)
    y = (torch.rand(b, 1, s, s, device=device) > 0.95).float()
    with FlopCounterMode(display=False) as counter:
        train_step(model, x, y, None, optimiser, None, config.multilevel, dtype)
    return float(counter.get_total_flops())


def bench_synthetic(config: TrainConfig, device: torch.device, precision, steps: int, compile: bool) -> dict:
    model, net, optimiser = _model(config, device, compile)
    scaler = grad_scaler(device, precision)
    s, b = config.settings.size, config.settings.batch_size
    x = torch.randn(b, config.in_channels, s, s, device=device)
    y = (torch.rand(b, 1, s, s, device=device) > 0.95).float()
    augment = paper_augmentation(config.settings.augment, seed=0)

    def step():
        return train_step(net, x, y, augment, optimiser, scaler, config.multilevel, precision.dtype)

    t0 = time.perf_counter()
    step()  # the first step: cuDNN autotuning, torch.compile
    synchronize(device)
    first = time.perf_counter() - t0
    for _ in range(2):
        step()
    synchronize(device)
    _reset_memory(device)
    losses, t0 = [], time.perf_counter()
    for _ in range(steps):
        losses.append(step())
    synchronize(device)
    seconds = time.perf_counter() - t0
    assert bool(torch.stack(losses).isfinite().all()), "non-finite loss in the benchmark"
    return {
        "steps": steps,
        "first_step_s": first,
        "step_s": seconds / steps,
        "slices_per_s": steps * b / seconds,
        "peak_memory_gib": _peak_memory_gib(device),
    }


def bench_data(config: TrainConfig, device: torch.device, precision, epochs: int, compile: bool) -> dict:
    t0 = time.perf_counter()
    train_set, val_set, *_, augment = _datasets(config)
    cache_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    slices, validation = DeviceSlices(train_set, device), Validation(val_set, device)
    synchronize(device)
    stack_s = time.perf_counter() - t0
    sampler = torch.utils.data.DistributedSampler(train_set, 1, 0, shuffle=True, seed=config.seed)
    batch = config.settings.batch_size
    n_batches = math.ceil(len(sampler) / batch)
    model, net, optimiser = _model(config, device, compile)
    scaler = grad_scaler(device, precision)
    timed = []
    for epoch in range(epochs):
        if epoch == 1:
            _reset_memory(device)
        sampler.set_epoch(epoch)
        if augment is not None:
            augment.set_random_state(epoch)
        t0 = time.perf_counter()
        _train_epoch(
            net, slices.batches(sampler, batch), n_batches, augment, optimiser, scaler, config, epoch,
            precision.dtype, show=False,
        )  # fmt: skip
        synchronize(device)
        if epoch:  # the first epoch is the warm-up
            timed.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    validation.dice(model, precision.dtype)
    val_s = time.perf_counter() - t0
    per_epoch = sum(timed) / len(timed)
    return {
        "training_slices": len(train_set),
        "validation_slices": len(val_set),
        "slices_on_device": slices.on_device,
        "cache_s": cache_s,
        "stack_s": stack_s,
        "timed_epochs": len(timed),
        "epoch_s": per_epoch,
        "slices_per_s": len(sampler) / per_epoch,
        "validation_s": val_s,
        "peak_memory_gib": _peak_memory_gib(device),
    }


def _phantom(cases: int, seed: int = 0) -> Path:
    import os

    from stroke_helpers.phantom import generate_dataset

    out = Path(tempfile.mkdtemp(prefix="gpu_bench_")) / "synthetic"
    print(f"generating a {cases}-study phantom in {out}", flush=True)
    return generate_dataset(out, cases, 0, seed, workers=min(os.cpu_count() or 1, 8), progress=False)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", help="default: paper on a GPU, cpu on a CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--steps", type=int, help="timed synthetic steps (default: 20 on a GPU, 3 on a CPU)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the data path, the first untimed (default 3)")
    ap.add_argument("--cases", type=int, default=10, help="training studies of the generated phantom (default 10)")
    ap.add_argument("--data", type=Path, help="an ISLES-layout folder instead of a generated phantom")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--skip-data", action="store_true", help="synthetic inputs only")
    ap.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = args.preset or ("paper" if device.type == "cuda" else "cpu")
    steps = args.steps or (20 if device.type == "cuda" else 3)
    precision = choose_precision(device, args.precision)
    notes = [configure_determinism(device, False), apply_tf32_policy(device, precision)]
    name = device_name(device)
    print(f"{name} ({device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    print(f"preset {preset}, {precision}" + "".join(f"; {n}" for n in notes if n))

    data = args.data
    if data is None and not args.skip_data:
        data = _phantom(args.cases)
    config = TrainConfig(
        data=str(data or "."),
        out=str(Path(tempfile.gettempdir()) / "gpu_bench_run"),
        preset=preset,
        precision=args.precision,
        device=str(device),
        progress=False,
    )
    flops = step_flops(config, device, precision.dtype)
    peak, peak_kind = peak_tflops(device, name, precision.name)
    per_slice = flops / config.settings.batch_size
    rows = {"synthetic": bench_synthetic(config, device, precision, steps, args.compile)}
    if not args.skip_data:
        rows["data"] = bench_data(config, device, precision, max(2, args.epochs), args.compile)
    print(f"{'inputs':<10}{'slices/s':>10}{'TFLOP/s':>9}{'% peak':>8}{'peak mem GiB':>14}")
    for kind, row in rows.items():
        row["tflops"] = row["slices_per_s"] * per_slice / 1e12
        row["percent_of_peak"] = percent_of_peak(row["tflops"], peak)
        shown = f"{row['percent_of_peak']:.1f}" if row["percent_of_peak"] is not None else "n/a"
        memory = f"{row['peak_memory_gib']:.2f}" if row["peak_memory_gib"] is not None else "n/a"
        print(f"{kind:<10}{row['slices_per_s']:>10.1f}{row['tflops']:>9.3f}{shown:>8}{memory:>14}")
    print(
        f"one step of {config.settings.batch_size}: {flops / 1e9:.1f} GFLOP (FlopCounterMode); "
        f"peak {'n/a' if peak is None else f'{peak:.0f} TFLOP/s dense {peak_kind}'}"
    )
    if "data" in rows:
        d = rows["data"]
        print(
            f"data path: {d['training_slices']} training slices ({'on the device' if d['slices_on_device'] else 'pinned host memory'}), "
            f"{d['epoch_s']:.2f} s per epoch, validation of {d['validation_slices']} slices {d['validation_s']:.2f} s, "
            f"slice cache {d['cache_s']:.1f} s"
        )
    result = {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda_capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "preset": preset,
        "precision": precision.name,
        "precision_reason": precision.reason,
        "compile": args.compile,
        "gflop_per_step": flops / 1e9,
        "batch": config.settings.batch_size,
        "peak_tflops": peak,
        "peak_kind": peak_kind,
        "host_max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        **rows,
    }
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or device.type
    out = args.out or Path(__file__).parent / "results" / f"gpu_{slug}{'_compile' if args.compile else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
