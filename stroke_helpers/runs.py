"""A training run: its configuration and its folder on disk, read and written only here.

A run folder holds everything about one run and nothing is overwritten without asking::

    RUN/config.json          the configuration (preset, modalities, switches, seed)
    RUN/split.json           the training and validation studies
    RUN/history.csv          one row per epoch: train loss, validation Dice, seconds
    RUN/last.pt              model, optimiser, epoch and history after the last finished epoch
    RUN/best.pt              the model of the epoch with the best validation Dice
    RUN/synthetic_maps.pt    (cascades) the synthetic map ``Ms`` of every training slice

Checkpoints hold only tensors, numbers, strings, lists and dicts, and are loaded with
``torch.load(weights_only=True)``: a crafted ``.pt`` file cannot run code here, and a file that
is not such a plain state (pickled objects, truncated, empty) is refused in one line naming it.
Files are written to a temporary name and renamed, so a killed run leaves the previous one intact.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .datasets import SliceArrays, split_studies
from .isles import MODALITIES, canonical_modalities, channel_indices
from .model import CrossAttentionAutoencoder
from .presets import Preset, get_preset

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
    """A run folder or run file that cannot be used as asked; the message names it."""


@dataclass
class TrainConfig:
    """One training run. ``modalities`` is made canonical here, once: the fixed channel order,
    from which :attr:`channels` gives the indices the dataset, the cascade and the predictor take."""

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
        self.settings: Preset = get_preset(self.preset)
        self.modalities = canonical_modalities(self.modalities)
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, not {self.epochs}")
        self.data, self.out = str(self.data), str(self.out)

    def to_dict(self) -> dict:
        """The fields as saved in ``config.json`` and in checkpoints."""
        return asdict(self)

    @property
    def channels(self) -> list[int]:
        """Indices of :attr:`modalities` in the preprocessed ``(N, 5, S, S)`` images."""
        return channel_indices(self.modalities)

    @property
    def in_channels(self) -> int:
        return len(self.modalities) + (self.synthetic_map is not None)

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else self.settings.epochs

    @property
    def name(self) -> str:
        kind = (
            "base"
            if not (self.attention or self.multilevel)
            else "+".join(k for k, on in (("MR", self.multilevel), ("ATT", self.attention)) if on)
        )
        return f"{kind} {'+'.join(self.modalities)}"

    def build_model(self) -> CrossAttentionAutoencoder:
        return CrossAttentionAutoencoder(self.in_channels, self.settings.widths, self.attention, self.multilevel)


def config_from_dict(values: dict, source: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from saved fields; unknown or bad fields are a :class:`RunError`."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known) if isinstance(values, dict) else ["(not a mapping)"]
    if unknown:
        raise RunError(f"{source}: not a run configuration (unknown fields {', '.join(unknown)})")
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise RunError(f"{source}: bad run configuration ({exc})") from None


# --- files -------------------------------------------------------------------------------------


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: str | Path, what: str = "checkpoint") -> dict:
    """A ``.pt`` file as a plain dict, loaded with ``weights_only=True`` (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such {what}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = re.search(r"GLOBAL (\S+)", str(exc))
        if code:
            raise RunError(
                f"{path}: refused: not a plain {what} (it holds the pickled object {code.group(1)}, which could run code)"
            ) from None
        raise RunError(f"{path}: not a readable {what} (truncated or corrupt: not a PyTorch file)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: not a readable {what} (truncated or corrupt: {reason})") from None
    if not isinstance(state, dict):
        raise RunError(f"{path}: not a {what} (a {type(state).__name__}, not a dict)")
    return state


def write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def metrics_path(run_dir: str | Path, split: str = "val") -> Path:
    """Where a run's evaluation lives: ``metrics.json`` (validation) or ``metrics_{split}.json``."""
    return Path(run_dir) / ("metrics.json" if split == "val" else f"metrics_{split}.json")


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
    return config_from_dict(read_json(path, "run configuration"), path)


def read_split(run_dir: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` study names of a run."""
    return read_json(Path(run_dir) / "split.json", "the run's split")


def write_run_files(config: TrainConfig, train: list[str], val: list[str]) -> None:
    out = Path(config.out)
    write_json(config.to_dict(), out / "config.json")
    write_json({"train": train, "val": val}, out / "split.json")


def save_checkpoints(model, optimiser, config: TrainConfig, history: list[dict], best: float, is_best: bool) -> None:
    """``last.pt`` after every epoch, ``best.pt`` when validation Dice improved."""
    out, epoch = Path(config.out), history[-1]["epoch"]
    if is_best:
        state = {"model": model.state_dict(), "epoch": epoch, "val_dice": best, "config": config.to_dict()}
        atomic_save(state, out / "best.pt")
    last = {
        "model": model.state_dict(),
        "optimizer": optimiser.state_dict(),
        "epoch": epoch,
        "history": history,
        "best_dice": best,
        "config": config.to_dict(),
    }
    atomic_save(last, out / "last.pt")
    write_history(history, out / "history.csv")


def resume_state(config: TrainConfig, resume: bool) -> dict | None:
    """The ``last.pt`` state to resume from, or None for a fresh start; refuses to overwrite a
    run or to resume one with other settings."""
    out = Path(config.out)
    last = out / "last.pt"
    if not last.exists():
        if resume and not (out / "config.json").exists():
            print(f"{out}: nothing to resume, starting a new run")
        return None
    if not resume:
        raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    state = load_state(last)
    saved, now = state.get("config", {}), config.to_dict()
    changed = [k for k in IDENTITY if json.dumps(saved.get(k)) != json.dumps(now[k], default=list)]
    if changed:
        raise RunError(
            f"{out}: cannot resume with different {', '.join(changed)} (the run has {[saved.get(k) for k in changed]})"
        )
    return state


def load_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """``(model in eval mode, config)`` from a run's ``best.pt`` (or ``last.pt``)."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if not path.exists():
        raise RunError(f"{run_dir}: no {which}.pt checkpoint (has the run finished an epoch?)")
    config = load_config(run_dir)
    model, state = config.build_model(), load_state(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise RunError(f"{path}: does not fit the model of {run_dir / 'config.json'} ({reason})") from None
    return model.to(device).eval(), config


def has_weights(run_dir: str | Path) -> bool:
    """Whether a run folder can predict: a model's ``best.pt``, or a cascade's stage 2."""
    run_dir = Path(run_dir)
    return (run_dir / "best.pt").is_file() or (run_dir / "stage2" / "best.pt").is_file()


#: The description file of the shipped checkpoint (:mod:`stroke_helpers.shipped`).
SHIPPED_MANIFEST = "shipped.json"


def in_shipped_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` lies in a shipped checkpoint, which is read and never written."""
    return any((p / SHIPPED_MANIFEST).is_file() for p in [Path(path).resolve(), *Path(path).resolve().parents])


def is_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether a run folder holds a run that completed ``epochs`` (default: its own) epochs."""
    last = Path(run_dir) / "last.pt"
    if not last.exists():
        return False
    state = load_state(last)
    want = epochs if epochs is not None else config_from_dict(state.get("config", {}), last).n_epochs
    return int(state.get("epoch", 0)) >= want


# --- which studies -----------------------------------------------------------------------------


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
    n_val = min(config.settings.n_val, max(1, len(arrays.studies) // 5))
    train_idx, val_idx = split_studies(arrays.studies, arrays.patients, n_val, config.split_seed)
    train = [arrays.studies[i] for i in train_idx]
    if config.train_studies is not None:
        train = [s for s in train if s in set(config.train_studies)]
    return train, [arrays.studies[i] for i in val_idx]


def study_indices(arrays: SliceArrays, names: list[str]) -> list[int]:
    lookup = {s: i for i, s in enumerate(arrays.studies)}
    missing = [n for n in names if n not in lookup]
    if missing:
        raise RunError(f"studies not in the dataset: {', '.join(missing[:5])}")
    return [lookup[n] for n in names]


def slices_of(arrays: SliceArrays, names: list[str]) -> np.ndarray:
    """Indices of every slice of the studies ``names``."""
    return np.flatnonzero(np.isin(arrays.study_index, study_indices(arrays, names)))


# --- the cascade's synthetic maps --------------------------------------------------------------


def save_synthetic_maps(path: Path, ms: torch.Tensor, arrays: SliceArrays, mode: str, folds: int) -> None:
    atomic_save({"ms": ms.half(), "studies": list(arrays.studies), "mode": mode, "folds": folds}, path)


def load_synthetic_maps(path: str | Path, arrays: SliceArrays) -> torch.Tensor:
    """The cascade's ``Ms (N, 1, S, S)`` for every slice of ``arrays``, checked against them."""
    saved = load_state(path, "synthetic-map file")
    ms = saved.get("ms")
    if not isinstance(ms, torch.Tensor) or ms.ndim != 4:
        raise RunError(f"{path}: not a synthetic-map file (no (N, 1, S, S) 'ms' tensor)")
    if saved.get("studies") != arrays.studies or tuple(ms.shape[-2:]) != tuple(arrays.images.shape[-2:]):
        raise RunError(
            f"{path}: synthetic maps were computed for other slices than {len(arrays.studies)} studies at this size"
        )
    return ms.float()
