"""The trainer: one function, :func:`train`, behind the CLI, the notebooks and ``torchrun``.

A run folder holds everything about one run and nothing is overwritten without asking::

    RUN/config.json    the configuration (preset, modalities, switches, seed)
    RUN/split.json     the training and validation studies
    RUN/history.csv    one row per epoch: train loss, validation Dice, seconds (notebooks plot it)
    RUN/last.pt        model, optimiser, epoch and history after the last finished epoch
    RUN/best.pt        the model of the epoch with the best validation Dice

Checkpoints are written to a temporary file and renamed, so a killed run leaves the previous
one intact; ``resume=True`` continues from ``last.pt``. Shuffling and augmentation are seeded
from ``(seed, epoch)``, so a resumed run sees the same batches as an uninterrupted one.

Validation Dice each epoch is per study (3D, over all its slices) at the training resolution,
which is cheap; :func:`stroke_helpers.inference.evaluate` scores at native resolution.

Precision: ``"auto"`` uses bf16 autocast where the hardware has bf16 units (CUDA with bf16,
CPUs with AVX512-BF16 or AMX) and fp32 elsewhere; ``"fp32"`` and ``"bf16"`` force it. Inputs and
weights are channels_last, which was faster on every CPU measured (see ``benchmarks/``).

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU), each rank sees its share of every epoch
through a DistributedSampler, BatchNorm statistics are copied from rank 0 after each epoch,
and only rank 0 writes files or shows progress.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .augment import paper_augmentation
from .datasets import SliceArrays, SliceDataset, build_slices, split_studies
from .isles import MODALITIES
from .loss import multilevel_loss
from .metrics import dice
from .model import CrossAttentionAutoencoder
from .presets import deviations, get_preset

# settings that define a run: resuming with any of them changed is refused
IDENTITY = (
    "data",
    "preset",
    "modalities",
    "attention",
    "multilevel",
    "seed",
    "synthetic_map",
    "train_studies",
    "val_studies",
)


class RunError(RuntimeError):
    """A run folder that cannot be used as asked (exists, no checkpoint, other settings)."""


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "cpu"
    modalities: tuple[str, ...] = MODALITIES
    attention: bool = True
    multilevel: bool = True
    epochs: int | None = None  # None: the preset's
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    device: str = "auto"
    split_seed: int = 0  # the validation split; fixed so every run of a grid is scored on the same studies
    synthetic_map: str | None = None  # cascade stage 2: file with Ms for every TRAINING slice
    train_studies: list[str] | None = None  # default: every study not held out
    val_studies: list[str] | None = None
    progress: bool = True
    workers: int = 0  # DataLoader worker processes

    def __post_init__(self):
        get_preset(self.preset)
        mods = tuple(self.modalities.split(",")) if isinstance(self.modalities, str) else tuple(self.modalities)
        unknown = [m for m in mods if m not in MODALITIES]
        if unknown or not mods:
            raise ValueError(f"unknown modality {', '.join(unknown) or '(none)'}; choose from {','.join(MODALITIES)}")
        self.modalities = tuple(m for m in MODALITIES if m in mods)  # the fixed channel order
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        self.data, self.out = str(self.data), str(self.out)

    @property
    def in_channels(self) -> int:
        return len(self.modalities) + (self.synthetic_map is not None)

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else get_preset(self.preset).epochs

    @property
    def name(self) -> str:
        kind = (
            "base"
            if not (self.attention or self.multilevel)
            else "+".join(k for k, on in (("MR", self.multilevel), ("ATT", self.attention)) if on)
        )
        return f"{kind} {'+'.join(self.modalities)}"


@dataclass
class TrainResult:
    model: CrossAttentionAutoencoder
    history: list[dict] = field(default_factory=list)
    out: Path | None = None


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: the accelerator PyTorch finds (CUDA, MPS, XPU ...), else the CPU."""
    if name != "auto":
        return torch.device(name)
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc if acc is not None else torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for fp32."""
    if precision == "fp32" or (precision == "auto" and not bf16_supported(device)):
        return None
    return torch.bfloat16


def distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_history(history: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def read_history(run_dir: str | Path) -> list[dict]:
    """``history.csv`` of a run as a list of dicts of floats (what notebooks plot)."""
    with open(Path(run_dir) / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise RunError(f"{run_dir}: not a run folder (no config.json)")
    return TrainConfig(**json.loads(path.read_text()))


def load_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """``(model in eval mode, config)`` from a run's ``best.pt`` (or ``last.pt``)."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if not path.exists():
        raise RunError(f"{run_dir}: no {which}.pt checkpoint (has the run finished an epoch?)")
    config = load_config(run_dir)
    model = CrossAttentionAutoencoder(
        config.in_channels, get_preset(config.preset).widths, config.attention, config.multilevel
    )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
    return model.to(device).eval(), config


def split_names(config: TrainConfig, arrays: SliceArrays) -> tuple[list[str], list[str]]:
    """Training and validation study names (the preset's 19 held out, by patient; fewer when
    the dataset is small: a fifth of the studies)."""
    if config.val_studies is not None:
        val = list(config.val_studies)
        train = (
            list(config.train_studies)
            if config.train_studies is not None
            else [s for s in arrays.studies if s not in val]
        )
        return train, val
    n_val = min(get_preset(config.preset).n_val, max(1, len(arrays.studies) // 5))
    train_idx, val_idx = split_studies(arrays.studies, arrays.patients, n_val, config.split_seed)
    train = [arrays.studies[i] for i in train_idx]
    if config.train_studies is not None:
        train = [s for s in train if s in set(config.train_studies)]
    return train, [arrays.studies[i] for i in val_idx]


def load_synthetic_map(path: str | Path, arrays: SliceArrays) -> torch.Tensor:
    """The cascade's ``Ms (N, 1, S, S)`` for every slice of ``arrays``, checked against them."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["studies"] != arrays.studies or tuple(saved["ms"].shape[-2:]) != tuple(arrays.images.shape[-2:]):
        raise RunError(
            f"{path}: synthetic maps were computed for other slices than {len(arrays.studies)} studies at this size"
        )
    return saved["ms"].float()


def study_indices(arrays: SliceArrays, names: list[str]) -> list[int]:
    lookup = {s: i for i, s in enumerate(arrays.studies)}
    missing = [n for n in names if n not in lookup]
    if missing:
        raise RunError(f"studies not in the dataset: {', '.join(missing[:5])}")
    return [lookup[n] for n in names]


def predict_logits(model, images: torch.Tensor, device, dtype=None, batch_size: int = 16) -> torch.Tensor:
    """Full-resolution logits ``(N, S, S)`` float32 on the CPU, in eval mode, batch by batch."""
    model.eval()
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            out.append(model(x).logits[:, 0].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:])


def validation_dice(model, dataset: SliceDataset, device, dtype) -> float:
    """Mean per-study Dice at the training resolution (threshold 0.5)."""
    idx = dataset.indices
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]) if len(dataset) else torch.zeros(0)
    pred = predict_logits(model, images, device, dtype) > 0  # sigmoid(x) > 0.5
    masks = dataset.arrays.masks[idx].bool()
    studies = dataset.arrays.study_index[idx]
    return float(np.mean([dice(pred[studies == s].numpy(), masks[studies == s].numpy()) for s in np.unique(studies)]))


def _check_run_folder(config: TrainConfig, out: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from, or None for a fresh start; refuses to overwrite."""
    last = out / "last.pt"
    if not last.exists():
        if resume and not (out / "config.json").exists():
            print(f"{out}: nothing to resume, starting a new run")
        return None
    if not resume:
        raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    state = torch.load(last, map_location="cpu", weights_only=False)
    saved = state["config"]
    changed = [k for k in IDENTITY if json.dumps(saved.get(k)) != json.dumps(asdict(config)[k], default=list)]
    if changed:
        raise RunError(
            f"{out}: cannot resume with different {', '.join(changed)} (the run has {[saved.get(k) for k in changed]})"
        )
    return state


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train one model as ``config`` says; returns the model after the last epoch."""
    rank, world, local_rank = distributed()
    preset = get_preset(config.preset)
    device = resolve_device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dtype = autocast_dtype(device, config.precision)
    out = Path(config.out)
    main = rank == 0
    state = _check_run_folder(config, out, resume)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        diffs = deviations(preset, epochs=config.epochs)
        print(
            f"run {config.name} -> {out} | preset {preset.name}, {device}, {'bf16' if dtype else 'fp32'}, world {world}"
        )
        if diffs:
            print(f"  preset {preset.name} differs from the paper: {'; '.join(diffs)}")

    # data: rank 0 builds the slice cache, the others read it
    if world > 1 and not main:
        dist.barrier()
    arrays = build_slices(config.data, "TRAINING", preset.size, progress=config.progress and main)
    if world > 1 and main:
        dist.barrier()
    extra = load_synthetic_map(config.synthetic_map, arrays) if config.synthetic_map else None
    train_names, val_names = split_names(config, arrays)
    augment = paper_augmentation(preset.augment, seed=config.seed) if preset.augment > 0 else None
    train_set = SliceDataset(arrays, config.modalities, study_indices(arrays, train_names), augment, extra)
    val_set = SliceDataset(arrays, config.modalities, study_indices(arrays, val_names), None, extra)
    sampler = torch.utils.data.DistributedSampler(train_set, world, rank, shuffle=True, seed=config.seed)
    loader = torch.utils.data.DataLoader(train_set, preset.batch_size, sampler=sampler, num_workers=config.workers)

    torch.manual_seed(config.seed)
    model = CrossAttentionAutoencoder(config.in_channels, preset.widths, config.attention, config.multilevel)
    model = model.to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    history, best, start = [], -math.inf, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        history, best, start = state["history"], state["best_dice"], state["epoch"]
        if main:
            print(f"  resuming after epoch {start}")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if main:
        (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
        (out / "split.json").write_text(json.dumps({"train": train_names, "val": val_names}, indent=1))

    for epoch in range(start, config.n_epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        if augment is not None:
            augment.set_random_state(config.seed * 100_003 + epoch * 101 + rank)
        net.train()
        losses = []
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{config.n_epochs}", disable=not (config.progress and main), leave=False
        )
        for batch in bar:
            x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(device)
            with torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None):
                o = net(x, levels=config.multilevel)
                loss = multilevel_loss(o.levels if config.multilevel else [o.logits], y)
            if not torch.isfinite(loss):
                raise RunError(f"{out}: the loss became {loss.item()} in epoch {epoch + 1}; try a lower learning rate")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)
        val = validation_dice(model, val_set, device, dtype)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_dice": val,
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        if main:
            if val > best:
                best = val
                atomic_save(
                    {"model": model.state_dict(), "epoch": epoch + 1, "val_dice": val, "config": asdict(config)},
                    out / "best.pt",
                )
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimiser.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best_dice": best,
                    "config": asdict(config),
                },
                out / "last.pt",
            )
            write_history(history, out / "history.csv")
            if config.progress:
                print(
                    f"  epoch {epoch + 1:3d}/{config.n_epochs}  loss {row['train_loss']:.4f}  val Dice {val:.3f}  {row['seconds']:.0f} s"
                )
        else:
            best = max(best, val)
    if world > 1:
        dist.barrier()
    return TrainResult(model.eval(), history, out)


def is_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether a run folder holds a run that completed ``epochs`` (default: its own) epochs."""
    last = Path(run_dir) / "last.pt"
    if not last.exists():
        return False
    state = torch.load(last, map_location="cpu", weights_only=False)
    want = epochs if epochs is not None else TrainConfig(**state["config"]).n_epochs
    return state["epoch"] >= want
