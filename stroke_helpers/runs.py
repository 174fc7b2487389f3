"""A training run: its configuration and its folder on disk, read and written only here.

A **run folder** holds everything about one training run and nothing is overwritten without
asking. :class:`RunFolder` is the one place that knows its layout::

    RUN/config.json          the configuration (architecture, preset, modalities, switches, seed)
    RUN/split.json           the training and validation studies
    RUN/history.csv          one row per epoch: train loss, validation Dice, seconds
    RUN/last.pt              model, optimiser, epoch and history after the last finished epoch
    RUN/best.pt              the model of the epoch with the best validation Dice
    RUN/metrics.json         per-study scores on the validation studies (metrics_{split}.json: others)

A cascade's run folder (:mod:`stroke_helpers.cascade`) holds its stages, each a run folder::

    RUN/cascade.json                          mode, folds, the Ms scale, modalities, preset
    RUN/stage1, RUN/fold_k, RUN/stage2        stage 1, its out-of-fold models, stage 2
    RUN/synthetic_maps.pt                     the synthetic map ``Ms`` of every training slice
    RUN/synthetic_maps/<study>/Ms.nii.gz      each study's ``Ms`` in its own geometry

A **results folder** is what ``reproduce`` writes (:class:`ResultsFolder`)::

    RESULTS/runs/<run name>/   one run folder per run of the grid and per cascade
    RESULTS/report.md          the report
    RESULTS/figures/           the figure files
    RESULTS/notebooks/         the executed chapters
    RESULTS/timing.json        where the time went

The shipped checkpoint (:mod:`stroke_helpers.shipped`) is a results folder too.

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
import shutil
import zipfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .architectures import DEFAULT as DEFAULT_ARCHITECTURE
from .architectures import build, get_architecture
from .datasets import SliceArrays, split_studies
from .isles import MODALITIES, canonical_modalities, channel_indices
from .presets import Preset, get_preset

# settings that define a run: resuming with any of them changed is refused
IDENTITY = (
    "data",
    "architecture",
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
    from which :attr:`channels` gives the indices the dataset, the cascade and the predictor take.

    ``architecture`` names the model (:mod:`stroke_helpers.architectures`; a ``config.json``
    without it is the default, ``cross-attention``). ``attention`` and ``multilevel`` left at
    None take the architecture's default (on, for ``cross-attention``); an architecture without
    a switch refuses the value it cannot have (``monai-attention-unet``: attention gates always
    on, one output)."""

    data: str
    out: str
    preset: str = "cpu"
    modalities: tuple[str, ...] = MODALITIES
    architecture: str = DEFAULT_ARCHITECTURE
    attention: bool | None = None  # None: the architecture's (cross-attention: on)
    multilevel: bool | None = None  # None: the architecture's (cross-attention: on)
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
        self.attention, self.multilevel = get_architecture(self.architecture).switches(self.attention, self.multilevel)
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
        if self.architecture != DEFAULT_ARCHITECTURE:
            return f"{self.architecture} {'+'.join(self.modalities)}"
        kind = (
            "base"
            if not (self.attention or self.multilevel)
            else "+".join(k for k, on in (("MR", self.multilevel), ("ATT", self.attention)) if on)
        )
        return f"{kind} {'+'.join(self.modalities)}"

    def build_model(self) -> torch.nn.Module:
        """A fresh model of :attr:`architecture` at the preset's widths (the registry builds it)."""
        return build(self.architecture, self.in_channels, self.settings.widths, self.attention, self.multilevel)


#: Field defaults, for the fields a configuration saved before they existed lacks.
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


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


# --- the folders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """Where each file of one run folder is (the module's docstring draws the layout); it opens
    no file, at most it looks whether one is there. A cascade's stages are run folders too (:attr:`stage1`, :meth:`fold`, :attr:`stage2`).
    ``os.fspath(run)`` is its path, so a :class:`RunFolder` goes wherever a path does."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    def checkpoint(self, which: str = "best") -> Path:
        """``best.pt`` or ``last.pt``."""
        if which not in ("best", "last"):
            raise ValueError(f"checkpoint must be best or last, not {which!r}")
        return self.path / f"{which}.pt"

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    def metrics(self, split: str = "val") -> Path:
        """Where a run's evaluation lives: ``metrics.json`` (validation) or ``metrics_{split}.json``."""
        return self.path / ("metrics.json" if split == "val" else f"metrics_{split}.json")

    @property
    def cascade(self) -> Path:
        """``cascade.json``: a cascade's description, written when both stages are done."""
        return self.path / "cascade.json"

    @property
    def is_cascade(self) -> bool:
        return self.cascade.is_file()

    @property
    def stage1(self) -> RunFolder:
        return RunFolder(self.path / "stage1")

    @property
    def stage2(self) -> RunFolder:
        return RunFolder(self.path / "stage2")

    def fold(self, k: int) -> RunFolder:
        """The out-of-fold stage-1 model that did not see fold ``k``."""
        return RunFolder(self.path / f"fold_{k}")

    @property
    def synthetic_maps(self) -> Path:
        """``synthetic_maps.pt``: a cascade's ``Ms`` of every training slice."""
        return self.path / "synthetic_maps.pt"

    def synthetic_map_nifti(self, study: str) -> Path:
        """``synthetic_maps/<study>/Ms.nii.gz``: one study's ``Ms`` in its own geometry."""
        return self.path / "synthetic_maps" / study / "Ms.nii.gz"

    def exists(self) -> bool:
        """Whether this is a run folder: a trained model's (``config.json``) or a cascade's."""
        return self.config.is_file() or self.is_cascade

    def weights(self) -> list[Path]:
        """The checkpoints that predict: stage 1's and stage 2's ``best.pt`` for a cascade, else ``best.pt``."""
        return [self.stage1.best, self.stage2.best] if self.is_cascade else [self.best]

    def records(self) -> list[Path]:
        """The small files present: configuration, split, learning curve, scores (validation and
        test) and a cascade's description; no weights, no maps."""
        files = (self.config, self.split, self.history, self.metrics("val"), self.metrics("test"), self.cascade)
        return [f for f in files if f.is_file()]

    def copy(self, target: str | Path, metrics: bool = False) -> RunFolder:
        """Copy the whole run folder to ``target`` (which must not exist), its scores only when
        ``metrics`` (a copied model is scored again in its new place)."""
        target = RunFolder(target)
        skip = () if metrics else (self.metrics("val").name, self.metrics("*").name)
        shutil.copytree(self.path, target.path, ignore=shutil.ignore_patterns(*skip))
        return target


@dataclass(frozen=True)
class ResultsFolder:
    """Where each part of a results folder is (what ``reproduce`` writes; the module's
    docstring draws the layout); it opens no file. ``os.fspath`` gives its path."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def _runs(self) -> Path:
        return self.path / "runs"

    def run(self, name: str) -> RunFolder:
        """``runs/<name>``: one run of the grid, or a cascade."""
        return RunFolder(self._runs / name)

    def runs(self) -> list[RunFolder]:
        """Every run folder under ``runs/``, in path order: each run, each cascade, and each
        cascade's stages and fold models."""
        marks = {RunFolder(self._runs).config.name, RunFolder(self._runs).cascade.name}
        found = {p.parent for mark in marks for p in self._runs.rglob(mark)}
        return [RunFolder(p) for p in sorted(found)]

    def name(self, run: RunFolder | str | Path) -> str:
        """A run's name in this results folder: its path under ``runs/`` (``cascade/stage2``)."""
        return Path(run).relative_to(self._runs).as_posix()

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def notebooks(self) -> Path:
        return self.path / "notebooks"

    @property
    def timing(self) -> Path:
        return self.path / "timing.json"


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
    return RunFolder(run_dir).metrics(split)


def write_history(history: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def read_history(run_dir: str | Path) -> list[dict]:
    """``history.csv`` of a run as a list of dicts of floats (what notebooks plot)."""
    with open(RunFolder(run_dir).history) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_config(run_dir: str | Path) -> TrainConfig:
    path = RunFolder(run_dir).config
    if not path.exists():
        raise RunError(f"{run_dir}: not a run folder (no {path.name})")
    return config_from_dict(read_json(path, "run configuration"), path)


def read_split(run_dir: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` study names of a run."""
    return read_json(RunFolder(run_dir).split, "the run's split")


def write_run_files(config: TrainConfig, train: list[str], val: list[str]) -> None:
    run = RunFolder(config.out)
    write_json(config.to_dict(), run.config)
    write_json({"train": train, "val": val}, run.split)


def save_checkpoints(model, optimiser, config: TrainConfig, history: list[dict], best: float, is_best: bool) -> None:
    """``last.pt`` after every epoch, ``best.pt`` when validation Dice improved."""
    run, epoch = RunFolder(config.out), history[-1]["epoch"]
    if is_best:
        state = {"model": model.state_dict(), "epoch": epoch, "val_dice": best, "config": config.to_dict()}
        atomic_save(state, run.best)
    last = {
        "model": model.state_dict(),
        "optimizer": optimiser.state_dict(),
        "epoch": epoch,
        "history": history,
        "best_dice": best,
        "config": config.to_dict(),
    }
    atomic_save(last, run.last)
    write_history(history, run.history)


def resume_state(config: TrainConfig, resume: bool) -> dict | None:
    """The ``last.pt`` state to resume from, or None for a fresh start; refuses to overwrite a
    run or to resume one with other settings."""
    out = RunFolder(config.out)
    if not out.last.exists():
        if resume and not out.config.exists():
            print(f"{out}: nothing to resume, starting a new run")
        return None
    if not resume:
        raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    state = load_state(out.last)
    saved, now = {**_DEFAULTS, **state.get("config", {})}, config.to_dict()  # older runs lack newer fields
    changed = [k for k in IDENTITY if json.dumps(saved.get(k)) != json.dumps(now[k], default=list)]
    if changed:
        raise RunError(
            f"{out}: cannot resume with different {', '.join(changed)} (the run has {[saved.get(k) for k in changed]})"
        )
    return state


def load_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """``(model in eval mode, config)`` from a run's ``best.pt`` (or ``last.pt``)."""
    run = RunFolder(run_dir)
    path = run.checkpoint(which)
    if not path.exists():
        raise RunError(f"{run_dir}: no {path.name} checkpoint (has the run finished an epoch?)")
    config = load_config(run_dir)
    model, state = config.build_model(), load_state(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise RunError(f"{path}: does not fit the model of {run.config} ({reason})") from None
    return model.to(device).eval(), config


def has_weights(run_dir: str | Path) -> bool:
    """Whether a run folder can predict: a model's ``best.pt``, or a cascade's stage 2."""
    run = RunFolder(run_dir)
    return run.best.is_file() or run.stage2.best.is_file()


#: The description file of the shipped checkpoint (:mod:`stroke_helpers.shipped`).
SHIPPED_MANIFEST = "shipped.json"


def in_shipped_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` lies in a shipped checkpoint, which is read and never written."""
    return any((p / SHIPPED_MANIFEST).is_file() for p in [Path(path).resolve(), *Path(path).resolve().parents])


def is_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether a run folder holds a run that completed ``epochs`` (default: its own) epochs."""
    last = RunFolder(run_dir).last
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
