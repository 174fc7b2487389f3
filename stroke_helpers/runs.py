"""A training run: its configuration and its folder on disk, read and written only here.

A **run folder** holds everything about one training run and nothing is overwritten without
asking. :class:`RunFolder` is the one place that knows its layout::

    RUN/config.json          the configuration (architecture, preset, modalities, switches, seed)
    RUN/split.json           the training and validation studies
    RUN/history.csv          one row per epoch: train loss, validation Dice, seconds
    RUN/last.pt              everything a bitwise resume needs (model, optimiser, epoch, history),
                             written after the first epoch, then every ``checkpoint_every``
                             epochs or ``checkpoint_minutes``, and removed when the run finishes
                             unless ``keep_last`` (a finished run is known by its history)
    RUN/best.pt              the model of the epoch with the best validation Dice
    RUN/metrics.json         per-study scores on the validation studies (metrics_{split}.json: others)

A cascade's run folder (:mod:`stroke_helpers.cascade`) holds its stages, each a run folder::

    RUN/cascade.json                          mode, folds, the Ms scale, modalities, preset
    RUN/stage1, RUN/fold_k, RUN/stage2        stage 1, its out-of-fold models, stage 2
    RUN/synthetic_maps.pt                     the synthetic map ``Ms`` of every training slice
    RUN/synthetic_maps/<study>/Ms.nii.gz      each study's ``Ms`` in its own geometry

A **results folder** is what ``reproduce`` writes (:class:`ResultsFolder`)::

    RESULTS/runs/<run name>/   one run folder per run of the grid and per cascade
    RESULTS/thresholds/<method>/metrics.json, metrics_test.json
                               a classical threshold method's per-study scores on the
                               networks' validation and test studies (no weights, no training)
    RESULTS/report.md          the report
    RESULTS/figures/           the figure files
    RESULTS/notebooks/         the executed chapters
    RESULTS/timing.json        where the time went
    RESULTS/replication.json   the single-map and All runs scored on a draw of new TESTING
                               studies from the phantom (stroke_helpers.replication)

The shipped checkpoint (:mod:`stroke_helpers.shipped`) is a results folder too.

Checkpoints hold only tensors, numbers, strings, lists and dicts, and are loaded with
``torch.load(weights_only=True)``: a crafted ``.pt`` file cannot run code here, and a file that
is not such a plain state (pickled objects, truncated, empty) is refused in one line naming it.
Every file read here is then checked for the shape and types the code uses (a checkpoint's
model is a dict of tensors, a resumed one has its optimiser state, a cascade's scale is a
number, a history's cells are numbers...): a malformed one is one line naming the file and the
field.

Nothing is lost and nothing is half-written (:mod:`stroke_helpers.files`): files are written to a
temporary name, flushed and renamed, so a killed or out-of-space run leaves the previous one
intact; one process writes a run folder at a time (:func:`writing_run`); a folder holding a
run's files is continued only with ``resume`` and replaced only with ``force``, and the
shipped checkpoint never.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import re
import shutil
import types
import typing
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import files
from .architectures import DEFAULT as DEFAULT_ARCHITECTURE
from .architectures import build, get_architecture
from .datasets import SliceArrays, split_studies
from .engine import PRECISIONS
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
    "world_size",  # the global batch and the data order depend on it
    "lr_policy",
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
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (engine.choose_precision)
    device: str = "auto"
    split_seed: int = 0  # the validation split; fixed so every run of a grid is scored on the same studies
    synthetic_map: str | None = None  # cascade stage 2: file with Ms for every TRAINING slice
    train_studies: list[str] | None = None  # default: every study not held out
    val_studies: list[str] | None = None
    progress: bool = True
    workers: int = 0  # unused: batches are gathered from tensors already on the device (train.DeviceSlices)
    deterministic: bool = False  # CUDA: deterministic algorithms (engine.configure_determinism); CPU runs always are
    compile: bool = False  # torch.compile the model
    keep_last: bool = False  # keep last.pt when the run finishes (to extend it with more epochs later)
    checkpoint_every: int = 10  # last.pt after the first epoch, then every this many epochs ...
    checkpoint_minutes: float = 10.0  # ... or this many minutes, whichever comes first, and after the last
    world_size: int = 1  # processes under torchrun (train sets it); resuming needs the same
    global_batch: int | None = None  # slices per optimiser step: the preset's batch per rank x world_size
    lr_policy: str = "keep"  # keep: the preset's lr at any world size; linear: lr x world_size

    def __post_init__(self):
        self.settings: Preset = get_preset(self.preset)
        self.modalities = canonical_modalities(self.modalities)
        self.attention, self.multilevel = get_architecture(self.architecture).switches(self.attention, self.multilevel)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {', '.join(PRECISIONS[:-1])} or fp32, not {self.precision!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, not {self.epochs}")
        if self.checkpoint_every < 1 or not self.checkpoint_minutes > 0:
            raise ValueError("checkpoint_every must be at least 1 and checkpoint_minutes above 0")
        if self.world_size < 1 or self.lr_policy not in LR_POLICIES:
            raise ValueError(f"world_size must be at least 1 and lr_policy one of {', '.join(LR_POLICIES)}")
        batch = self.settings.batch_size * self.world_size
        if self.global_batch is None:
            self.global_batch = batch
        elif self.global_batch != batch:
            raise ValueError(
                f"global_batch {self.global_batch} is not the batch per rank x world size "
                f"({self.settings.batch_size} x {self.world_size})"
            )
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
    def lr(self) -> float:
        """The peak learning rate: the preset's, times the world size under the ``linear`` policy."""
        return self.settings.lr * (self.world_size if self.lr_policy == "linear" else 1)

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


def _fits(value, hint) -> bool:
    """Whether a value read from JSON has the type of a :class:`TrainConfig` field."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) in (list, tuple):  # JSON has lists only
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (list, tuple):
        return "a list of strings"
    return getattr(hint, "__name__", str(hint))


def config_from_dict(values: dict, source: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from saved fields; unknown fields, or fields of the wrong type, are
    a :class:`RunError` naming the file and the field."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known) if isinstance(values, dict) else ["(not a mapping)"]
    if unknown:
        raise RunError(f"{source}: not a run configuration (unknown fields {', '.join(unknown)})")
    hints = typing.get_type_hints(TrainConfig)
    for name, value in values.items():
        if not _fits(value, hints[name]) and not (name == "modalities" and isinstance(value, str)):
            raise RunError(
                f"{source}: bad run configuration (field {name} is {value!r}, not {_type_name(hints[name])})"
            )
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise RunError(f"{source}: bad run configuration ({exc})") from None


#: How the learning rate follows the world size under torchrun (``TrainConfig.lr_policy``).
LR_POLICIES = ("keep", "linear")


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

    def run_files(self) -> list[Path]:
        """The files of one trained run present here (configuration, split, learning curve,
        checkpoints, scores): what ``train --force`` replaces, and nothing else."""
        named = (self.config, self.split, self.history, self.last, self.best)
        return (
            [f for f in named if f.is_file()]
            + sorted(self.path.glob(self.metrics("*").name))
            + ([self.metrics("val")] if self.metrics("val").is_file() else [])
        )

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

    def threshold(self, method: str) -> RunFolder:
        """``thresholds/<method>``: a classical threshold method's scores
        (:data:`~stroke_helpers.baseline.THRESHOLDS`), in a run's files (``metrics(split)``:
        ``metrics.json`` for validation, ``metrics_test.json``); not a run folder (no
        configuration, no weights), so :meth:`runs` never lists it."""
        return RunFolder(self.path / "thresholds" / method)

    def thresholds(self) -> list[RunFolder]:
        """Every threshold method's folder under ``thresholds/`` that holds scores, in path order."""
        folders = {p.parent for p in (self.path / "thresholds").glob(f"*/{RunFolder(self.path).metrics('*').name}")}
        folders |= {p.parent for p in (self.path / "thresholds").glob(f"*/{RunFolder(self.path).metrics().name}")}
        return [RunFolder(p) for p in sorted(folders)]

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

    @property
    def replication(self) -> Path:
        """``replication.json``: the models' scores on a draw of new TESTING studies (:mod:`stroke_helpers.replication`)."""
        return self.path / "replication.json"


# --- files -------------------------------------------------------------------------------------

_ABSENT = object()


def _a(value) -> str:
    """What a field read from a file is, in a few words: ``missing``, ``a list``, ``'3' (a str)``."""
    if value is _ABSENT:
        return "missing"
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__}"
    shown = repr(value)
    return f"{shown[:40]} (a {type(value).__name__})"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through a temporary file (:func:`stroke_helpers.files.save_torch`)."""
    files.save_torch(obj, path)


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


def check_checkpoint(state: dict, path: str | Path, resume: bool = False) -> dict:
    """``state`` when it has what a checkpoint of this project has: ``model`` a dict of
    tensors, ``epoch`` a whole number, ``config`` a dict; to resume, also ``optimizer`` (its
    ``state`` and ``param_groups``), ``history`` (a list of epochs) and ``best_dice``."""

    def bad(field: str, value, expected: str) -> RunError:
        return RunError(f"{path}: not a usable checkpoint: '{field}' is {_a(value)}, not {expected}")

    model = state.get("model", _ABSENT)
    if not isinstance(model, dict) or not model:
        raise bad("model", model, "a dict of tensors")
    odd = next((k for k, v in model.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise bad(f"model[{odd!r}]", model[odd], "a tensor")
    epoch = state.get("epoch", _ABSENT)
    if not _is_int(epoch) or epoch < 0:
        raise bad("epoch", epoch, "a whole number")
    if not isinstance(state.get("config", _ABSENT), dict):
        raise bad("config", state.get("config", _ABSENT), "a dict")
    if resume:
        optimizer = state.get("optimizer", _ABSENT)
        if optimizer is _ABSENT:
            raise RunError(f"{path}: cannot resume: it has no optimizer state (a shared or shipped checkpoint?)")
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list):
            raise bad("optimizer", optimizer, "an optimiser state (a dict with param_groups)")
        if not isinstance(optimizer.get("state"), dict):
            raise bad("optimizer['state']", optimizer.get("state", _ABSENT), "a dict")
        history = state.get("history", _ABSENT)
        if not isinstance(history, list) or len(history) != epoch:
            raise bad("history", history, f"a list of {epoch} epochs")
        for row in history:
            if not isinstance(row, dict) or not all(_is_number(v) for v in row.values()):
                raise bad("history", row, "a row of numbers")
        if not _is_number(state.get("best_dice", _ABSENT)):
            raise bad("best_dice", state.get("best_dice", _ABSENT), "a number")
    return state


def load_checkpoint(path: str | Path, resume: bool = False) -> dict:
    """:func:`load_state` and :func:`check_checkpoint`: a ``best.pt`` or ``last.pt`` fit to use."""
    return check_checkpoint(load_state(path), path, resume)


def restore(state: dict, model: torch.nn.Module, optimiser: torch.optim.Optimizer | None, path: str | Path) -> None:
    """Load a checked checkpoint's weights (and optimiser state) into ``model`` (and
    ``optimiser``); a state that does not fit them is one line naming ``path``."""
    try:
        model.load_state_dict(state["model"])
        if optimiser is not None:
            optimiser.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: does not fit the model of its configuration ({reason})") from None


def write_json(obj, path: Path) -> None:
    files.write_json(obj, path)


def read_json(path: str | Path, what: str, kind: type = dict):
    """A JSON file that must hold a ``kind`` (an object, by default); anything else is one line."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: missing ({what})")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(value, kind):
        expected = {dict: "an object", list: "a list"}.get(kind, kind.__name__)
        raise RunError(f"{path}: not a {what} (a JSON {type(value).__name__}, not {expected})")
    return value


def metrics_path(run_dir: str | Path, split: str = "val") -> Path:
    """Where a run's evaluation lives: ``metrics.json`` (validation) or ``metrics_{split}.json``."""
    return RunFolder(run_dir).metrics(split)


def read_metrics(path: str | Path) -> dict:
    """A ``metrics*.json`` (what :func:`stroke_helpers.inference.evaluate` writes), checked:
    ``studies`` a list of rows with a ``study`` name and numbers (or null), ``summary`` a dict of
    ``{mean, std, n}`` per metric."""
    result = read_json(path, "run's scores")
    studies, summary = result.get("studies", _ABSENT), result.get("summary", _ABSENT)
    if not isinstance(studies, list):
        raise RunError(f"{path}: not a run's scores: 'studies' is {_a(studies)}, not a list")
    for k, row in enumerate(studies):
        if not isinstance(row, dict) or not isinstance(row.get("study"), str):
            raise RunError(f"{path}: not a run's scores: studies[{k}] is {_a(row)}, not a row with a study name")
        odd = next((m for m, v in row.items() if m != "study" and v is not None and not _is_number(v)), None)
        if odd is not None:
            raise RunError(f"{path}: not a run's scores: studies[{k}].{odd} is {_a(row[odd])}, not a number")
    if not isinstance(summary, dict):
        raise RunError(f"{path}: not a run's scores: 'summary' is {_a(summary)}, not a dict")
    for metric, values in summary.items():
        mean = values.get("mean", _ABSENT) if isinstance(values, dict) else _ABSENT
        if not (mean is None or _is_number(mean)):
            raise RunError(f"{path}: not a run's scores: summary.{metric}.mean is {_a(mean)}, not a number")
    return result


def write_history(history: list[dict], path: Path) -> None:
    """``history.csv``: one row per epoch; a column that earlier rows lack (a run resumed from a
    checkpoint written before the column existed) is left empty in them."""
    files.write_csv(path, list(dict.fromkeys(k for row in history for k in row)), history)


#: The columns of ``history.csv`` that the report and the chapters read.
HISTORY_COLUMNS = ("epoch", "train_loss", "val_dice")


def read_history(run_dir: str | Path) -> list[dict]:
    """``history.csv`` of a run as a list of dicts of floats (what notebooks plot); a missing
    column or a cell that is not a number is one line naming the file, line and column."""
    path = RunFolder(run_dir).history
    if not path.is_file():
        raise RunError(f"{path}: missing (the run's learning curve)")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise RunError(f"{path}: not a learning curve (no column {', '.join(missing)})")
            rows = []
            for row in reader:
                parsed = {}
                for k, v in row.items():
                    if v == "" and k not in HISTORY_COLUMNS:
                        continue  # a column added after this epoch was recorded
                    try:
                        parsed[k] = float(v)
                    except (TypeError, ValueError):
                        raise RunError(f"{path}: line {reader.line_num}, column {k}: {v!r} is not a number") from None
                rows.append(parsed)
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: not a CSV learning curve ({exc})") from None


def load_config(run_dir: str | Path) -> TrainConfig:
    path = RunFolder(run_dir).config
    if not path.exists():
        raise RunError(f"{run_dir}: not a run folder (no {path.name})")
    return config_from_dict(read_json(path, "run configuration"), path)


def read_split(run_dir: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` study names of a run."""
    path = RunFolder(run_dir).split
    split = read_json(path, "the run's split")
    for key in ("train", "val"):
        names = split.get(key, _ABSENT)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RunError(f"{path}: not a run's split: '{key}' is {_a(names)}, not a list of study names")
    return split


#: What a cascade's ``cascade.json`` says: the field, and its test.
CASCADE_MODES = ("in-sample", "out-of-fold")


def read_cascade(run_dir: str | Path) -> dict:
    """A cascade's ``cascade.json``, checked: ``mode`` one of :data:`CASCADE_MODES`, ``folds`` a
    whole number, ``scale`` a positive number, ``modalities`` a list of names, ``preset`` a name."""
    path = RunFolder(run_dir).cascade
    info = read_json(path, "cascade description")
    checks = {
        "mode": (lambda v: v in CASCADE_MODES, " or ".join(CASCADE_MODES)),
        "folds": (lambda v: _is_int(v) and v >= 0, "a whole number"),
        "scale": (lambda v: _is_number(v) and math.isfinite(v) and v > 0, "a positive number"),
        "modalities": (lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v), "a list of names"),
        "preset": (lambda v: isinstance(v, str), "a preset name"),
    }
    for field, (ok, expected) in checks.items():
        value = info.get(field, _ABSENT)
        if value is _ABSENT or not ok(value):
            raise RunError(f"{path}: not a cascade description: '{field}' is {_a(value)}, not {expected}")
    return info


def write_run_files(config: TrainConfig, train: list[str], val: list[str]) -> None:
    run = RunFolder(config.out)
    write_json(config.to_dict(), run.config)
    write_json({"train": train, "val": val}, run.split)


def save_checkpoints(
    model,
    optimiser,
    config: TrainConfig,
    history: list[dict],
    best: float,
    is_best: bool,
    last: bool = True,
    extra: dict | None = None,
) -> None:
    """After an epoch: ``best.pt`` when validation Dice improved (the scores of the previous
    ``best.pt`` are removed first: they no longer describe the run's weights), ``last.pt`` when
    ``last`` (the trainer's cadence; ``extra`` joins it, e.g. an fp16 run's gradient scaler),
    and ``history.csv``."""
    run, epoch = RunFolder(config.out), history[-1]["epoch"]
    if is_best:
        for scores in (run.metrics("val"), *run.path.glob(run.metrics("*").name)):
            scores.unlink(missing_ok=True)
        state = {"model": model.state_dict(), "epoch": epoch, "val_dice": best, "config": config.to_dict()}
        atomic_save(state, run.best)
    if last:
        state = {
            "model": model.state_dict(),
            "optimizer": optimiser.state_dict(),
            "epoch": epoch,
            "history": history,
            "best_dice": best,
            "config": config.to_dict(),
            **(extra or {}),
        }
        atomic_save(state, run.last)
    write_history(history, run.history)


def finish_run(config: TrainConfig) -> None:
    """A finished run drops ``last.pt`` (model and optimiser: three times ``best.pt``) unless
    ``keep_last``; :func:`is_finished` knows it by its learning curve."""
    if not config.keep_last:
        RunFolder(config.out).last.unlink(missing_ok=True)


def _changed(saved: dict, config: TrainConfig) -> list[str]:
    """The :data:`IDENTITY` settings in which ``saved`` (a configuration dict) differs from ``config``."""
    saved, now = {**_DEFAULTS, **saved}, config.to_dict()  # older runs lack newer fields
    return [k for k in IDENTITY if json.dumps(saved.get(k)) != json.dumps(now[k], default=list)]


def _refuse_changed(out: RunFolder, saved: dict, config: TrainConfig) -> None:
    changed = _changed(saved, config)
    if changed:
        raise RunError(
            f"{out}: cannot resume with different {', '.join(changed)} "
            f"(the run has {[{**_DEFAULTS, **saved}.get(k) for k in changed]})"
        )


def resume_state(config: TrainConfig, resume: bool) -> dict | None:
    """The ``last.pt`` state to resume from, or None for a fresh start. Refused: any write into
    the shipped checkpoint; a folder holding a run without ``--resume``; a run without
    ``last.pt`` that has finished files (a shared or shipped run: its ``best.pt``, learning curve
    or scores would be replaced); resuming with other settings."""
    out = RunFolder(config.out)
    if in_shipped_checkpoint(out.path):
        raise RunError(f"{out}: part of the shipped checkpoint, which is never written; choose another --out")
    if out.is_cascade:
        raise RunError(f"{out} holds a cascade (cascade.json); train a model into another --out")
    if not out.last.exists():
        finished = [p.name for p in out.run_files() if p not in (out.config, out.split)]
        if finished:
            what = (
                "a finished run: last.pt is removed when a run finishes unless --keep-last"
                if out.config.is_file() and out.history.is_file() and out.best.is_file() and is_finished(out)
                else "a shared or shipped run"
            )
            raise RunError(
                f"{out} holds a run without last.pt ({', '.join(finished)}: {what}), "
                "which cannot be resumed; pass --force to replace it or choose another --out"
            )
        if out.config.exists():  # killed before its first epoch: nothing but its settings
            if not resume:
                raise RunError(
                    f"{out} already holds a run (config.json); pass --resume to continue it, "
                    "--force to replace it, or choose another --out"
                )
            _refuse_changed(out, read_json(out.config, "run configuration"), config)
            print(f"{out}: no epoch finished yet, starting the run again")
        elif resume:
            print(f"{out}: nothing to resume, starting a new run")
        return None
    if not resume:
        raise RunError(
            f"{out} already holds a run; pass --resume to continue it, --force to replace it, or choose another --out"
        )
    state = load_checkpoint(out.last, resume=True)
    _refuse_changed(out, state["config"], config)
    return state


@contextmanager
def writing_run(config: TrainConfig, force: bool = False, writer: bool = True) -> Iterator[None]:
    """Hold the run folder's lock (:func:`stroke_helpers.files.lock`) while a run writes it, so
    a second process into the same folder is refused in one line naming the first. Under the
    lock, temporary files a killed run left are removed and, with ``force``, the previous run's
    files (:meth:`RunFolder.run_files`; nothing else) too. ``writer`` False (the other ranks of
    a distributed run): nothing is locked or removed."""
    out = RunFolder(config.out)
    if not writer:
        yield
        return
    with files.lock(out.path, f"train --out {out}"):
        files.remove_temporaries(out.path)
        if force:
            if in_shipped_checkpoint(out.path):
                raise RunError(f"{out}: part of the shipped checkpoint, which is never written; choose another --out")
            if out.is_cascade:
                raise RunError(f"{out} holds a cascade (cascade.json); --force replaces a trained run only")
            replaced = out.run_files()
            for f in replaced:
                f.unlink()
            if replaced:
                print(f"{out}: replacing the previous run ({', '.join(p.name for p in replaced)})")
        yield


def check_results_folder(path: str | Path) -> Path:
    """``path`` as a results folder to write into: new, empty, or one that ``reproduce`` wrote
    (it has ``runs/`` or ``timing.json``); never the shipped checkpoint."""
    path = Path(path)
    results = ResultsFolder(path)
    if in_shipped_checkpoint(path):
        raise RunError(f"{path}: part of the shipped checkpoint, which is never written; choose another --out")
    if path.exists() and not path.is_dir():
        raise files.WriteError(f"{path}: a file; a results folder is a folder")
    if path.is_dir() and any(path.iterdir()) and not (results.path / "runs").is_dir() and not results.timing.is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise FileExistsError(
            f"{path}: not a results folder (it holds {found}, and no runs/); choose another --out or $STROKE_RESULTS"
        )
    return path


def load_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """``(model in eval mode, config)`` from a run's ``best.pt`` (or ``last.pt``)."""
    run = RunFolder(run_dir)
    path = run.checkpoint(which)
    if not path.exists():
        raise RunError(f"{run_dir}: no {path.name} checkpoint (has the run finished an epoch?)")
    config = load_config(run_dir)
    model, state = config.build_model(), load_checkpoint(path)
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


def read_replication(results: str | os.PathLike) -> dict | None:
    """What ``replicate`` (:mod:`stroke_helpers.replication`) wrote in ``results`` (checked), or None when it has none."""
    path = ResultsFolder(results).replication
    if not path.is_file():
        return None
    record = read_json(path, "the replication's scores")
    dice, runs = record.get("dice"), record.get("runs")
    ok = isinstance(dice, dict) and all(
        isinstance(per, dict) and all(isinstance(v, (int, float)) for v in per.values()) for per in dice.values()
    )
    ok = ok and isinstance(runs, dict) and set(runs) == set(dice)
    if not ok or not isinstance(record.get("cases"), int) or not isinstance(record.get("seed"), int):
        raise RunError(
            f"{path}: not a replication record (needs seed, cases, runs and dice: {{run: {{study: number}}}})"
        )
    return record


def in_shipped_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` lies in a shipped checkpoint, which is read and never written."""
    return any((p / SHIPPED_MANIFEST).is_file() for p in [Path(path).resolve(), *Path(path).resolve().parents])


def is_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether a run folder holds a run that completed ``epochs`` (default: its own) epochs:
    its ``last.pt`` says so, or, without one (dropped when the run finished, or a copied run),
    its ``history.csv`` has that many epochs beside its ``best.pt``."""
    run = RunFolder(run_dir)
    last = run.last
    if not last.exists():
        if not (run.config.is_file() and run.history.is_file() and run.best.is_file()):
            return False
        want = epochs if epochs is not None else load_config(run).n_epochs
        return len(read_history(run)) >= want
    state = load_checkpoint(last)
    want = epochs if epochs is not None else config_from_dict(state["config"], last).n_epochs
    return state["epoch"] >= want


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
