"""Training and inference speed of the cross-attention autoencoder (prints a table, writes JSON).

    python benchmarks/model_bench.py [--out benchmarks/results/model_<device>.json] [--quick] [--grid results/cpu]

Measured in one run, so ratios are comparable even on a noisy machine:

- the machine's matmul peak (fp32, and bf16 where the hardware has bf16 units);
- training steps (forward, multilevel loss, backward, AdamW; batch 8) of our model and of
  MONAI's ``AttentionUnet`` (the field's standard attention U-Net) at the same widths, input,
  sizes (128 and 224 px) and precision, in what the trainer really runs: channels_last, fp32
  (``fp32+cl``) and, only where the hardware has bf16 units, bf16 autocast (``bf16+cl``; without
  the units bf16 is emulated and the trainer never picks it); plus fp32 NCHW for reference;
  achieved GFLOP/s from ``torch.utils.flop_counter`` (fwd + bwd) as a percent of the matching
  matmul peak (a value above 100 means the peak was mismeasured and is reported as such, never
  as a result);
- the paper-size model (widths 32 .. 1024, 224 px) against the matmul peak;
- inference of a 22-slice 256 x 256 study with the ``cpu`` preset, resizing included;
- with ``--grid RESULTS``: the end-to-end figure of a whole ``reproduce`` grid, training slices
  per second of wall time (from ``RESULTS/timing.json``).

Goals (2-core CPU): >= 2x MONAI's fp32 throughput at equal widths; paper-size model
>= 25 % of the bf16 matmul peak; a 22-slice study in < 1 s with the cpu preset.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from stroke_helpers.augment import PaperAugmentation
from stroke_helpers.engine import bf16_supported, resolve_device
from stroke_helpers.loss import multilevel_loss
from stroke_helpers.model import PAPER_WIDTHS, CrossAttentionAutoencoder
from stroke_helpers.presets import PRESETS

BATCH = 8
WIDTHS = (16, 32, 64, 128, 256, 512)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Seconds per call of ``fn``, after one untimed warm-up call."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def matmul_peak(device, dtype, sizes=(1024, 2048, 4096), seconds=1.5) -> float:
    """The best achieved GFLOP/s of square matmuls over a few sizes (one size can miss the peak).

    Convolutions can still exceed it: oneDNN may run 3x3 convolutions with Winograd or other
    fast algorithms that do fewer multiplications than the direct FLOP count assumes."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


class Monai(torch.nn.Module):
    """MONAI AttentionUnet with our loss interface (one full-resolution output)."""

    def __init__(self, widths):
        super().__init__()
        from monai.networks.nets import AttentionUnet

        self.net = AttentionUnet(2, 5, 1, channels=widths, strides=(2,) * (len(widths) - 1))

    def forward(self, x, levels=False):
        return [self.net(x)]


def make(kind, widths):
    if kind == "ours":
        return CrossAttentionAutoencoder(5, widths)
    return Monai(widths)


def train_step_fn(model, x, y, dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ours = isinstance(model, CrossAttentionAutoencoder)

    def step():
        with torch.autocast(x.device.type, dtype or torch.float32, enabled=dtype is not None):
            out = model(x, levels=True)
            loss = multilevel_loss(out.levels if ours else out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_training(kind, widths, size, mode, device, steps) -> dict:
    torch.manual_seed(0)
    model = make(kind, widths).to(device)
    x = torch.randn(BATCH, 5, size, size, device=device)
    y = (torch.rand(BATCH, 1, size, size, device=device) > 0.95).float()
    dtype = torch.bfloat16 if mode == "bf16+cl" else None
    if mode.endswith("+cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step = train_step_fn(model, x, y, dtype)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    dt = timed(step, device, steps)
    return {
        "model": kind,
        "widths": list(widths),
        "size": size,
        "mode": mode,
        "slices_per_s": BATCH / dt,
        "gflop_per_step": flops / 1e9,
        "gflop_per_s": flops / dt / 1e9,
    }


def bench_inference(device, repeats=5) -> float:
    """Seconds to predict a 22-slice 256 x 256 study with the cpu preset (resizing included)."""
    preset = PRESETS["cpu"]
    model = CrossAttentionAutoencoder(5, preset.widths).to(device, memory_format=torch.channels_last).eval()
    study = torch.rand(22, 5, 256, 256)

    def predict():
        with torch.no_grad():
            x = F.interpolate(study, size=(preset.size,) * 2, mode="bilinear", antialias=True).to(device)
            p = torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)).logits)
            return F.interpolate(p.cpu(), size=(256, 256), mode="bilinear") > 0.5

    predict()
    t0 = time.perf_counter()
    for _ in range(repeats):
        predict()
    return (time.perf_counter() - t0) / repeats


def bench_augmentation(device, batch=8, repeats=20) -> dict:
    """Milliseconds per batch of ``cpu``-preset slices: the trainer's batched augmentation
    against the same list as MONAI per-slice dictionary transforms."""
    from monai import transforms as mt

    size = PRESETS["cpu"].size
    x, y = (
        torch.randn(batch, 5, size, size, device=device),
        (torch.rand(batch, 1, size, size, device=device) > 0.97).float(),
    )
    ours = PaperAugmentation(0.5)
    keys, modes = ("image", "mask"), ("bilinear", "nearest")
    monai = mt.Compose(
        [
            mt.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            mt.RandScaleIntensityd("image", factors=0.2, prob=0.5),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=0),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=1),
            mt.RandRotated(keys, range_x=math.pi / 12, prob=0.5, mode=modes),
            mt.Rand2DElasticd(keys, spacing=(32, 32), magnitude_range=(1, 3), prob=0.25, mode=modes),
            mt.RandGridDistortiond(keys, num_cells=5, distort_limit=(-0.05, 0.05), prob=0.25, mode=modes),
        ]
    )
    xc, yc = x.cpu(), y.cpu()
    return {
        "batch": batch,
        "size": size,
        "ours_batched_ms": 1e3 * timed(lambda: ours(x, y), device, repeats),
        "monai_per_slice_ms": 1e3
        * timed(lambda: [monai({"image": xc[i], "mask": yc[i]}) for i in range(batch)], device, repeats),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="128 px only, one timed step")
    ap.add_argument("--grid", type=Path, help="a reproduce results folder: add its end-to-end slices per second")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    steps = 1 if args.quick else (10 if device.type == "cuda" else 2)
    bf16 = bf16_supported(device)
    peak = {"fp32": matmul_peak(device, torch.float32)} | (
        {"bf16": matmul_peak(device, torch.bfloat16)} if bf16 else {}
    )
    print(
        f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"bf16 units: {bf16}; matmul peak " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()) + " GFLOP/s"
    )
    modes = ("fp32", "fp32+cl") + (("bf16+cl",) if bf16 else ())
    rows = []
    print(f"{'model':<7}{'widths':<22}{'size':>5} {'mode':<9}{'slices/s':>9}{'GFLOP/s':>9}{'% peak':>8}")
    configs = [
        (k, WIDTHS, s, m) for s in ((128,) if args.quick else (128, 224)) for k in ("ours", "monai") for m in modes
    ]
    configs += [("ours", PAPER_WIDTHS, 224, m) for m in modes[1:]] if not args.quick else []
    for kind, widths, size, mode in configs:
        r = bench_training(kind, widths, size, mode, device, steps)
        percent = 100 * r["gflop_per_s"] / peak["bf16" if mode == "bf16+cl" else "fp32"]
        r["percent_of_peak"] = percent if percent <= 100 else None  # above 100: the peak is wrong, not the model fast
        rows.append(r)
        shown = f"{percent:>7.0f}%" if percent <= 100 else "  (peak?)"
        print(
            f"{kind:<7}{str(widths):<22}{size:>5} {mode:<9}{r['slices_per_s']:>9.1f}{r['gflop_per_s']:>9.0f}{shown}",
            flush=True,
        )
    inference = bench_inference(device)
    print(f"inference, 22-slice 256x256 study, cpu preset: {inference:.3f} s")
    augmentation = bench_augmentation(device)
    print(
        f"augmentation, batch of {augmentation['batch']} at {augmentation['size']} px: "
        f"{augmentation['ours_batched_ms']:.1f} ms batched (ours), {augmentation['monai_per_slice_ms']:.1f} ms per slice (MONAI)"
    )

    def speed(kind, size, mode):
        return next(
            r["slices_per_s"]
            for r in rows
            if (r["model"], r["size"], r["mode"], r["widths"]) == (kind, size, mode, list(WIDTHS))
        )

    speedups = {
        f"{s} px {m}": speed("ours", s, m) / speed("monai", s, m) for s in {r["size"] for r in rows} for m in modes
    }
    for k, v in sorted(speedups.items()):
        print(f"ours / MONAI AttentionUnet at {k}: {v:.2f}x")
    end_to_end = None
    if args.grid:
        timing = json.loads((args.grid / "timing.json").read_text())
        end_to_end = timing["end_to_end"]
        print(f"end to end, {args.grid}: {end_to_end['slices_per_s']:.1f} training slices per second of grid wall time")
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_units": bf16_supported(device),
        "matmul_peak_gflops": peak,
        "training": rows,
        "speedup_vs_monai_same_mode": speedups,
        "inference_22_slices_s": inference,
        "augmentation": augmentation,
        "end_to_end": end_to_end,
    }
    out = args.out or Path(__file__).parent / "results" / f"model_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
