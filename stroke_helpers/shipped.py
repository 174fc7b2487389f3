"""The shipped checkpoint: a small trained ``cpu`` bundle that chapters 02-05 read when the grid has not run.

``checkpoints/cpu`` is a results folder in the layout ``reproduce`` writes (``runs/<name>/...``),
so every function that takes a results folder reads it unchanged. It holds:

- the **weights** (fp16, about 4 MB) of ``MR+ATT_All`` and of its in-sample ``cascade``, whose
  stage 1 is that same model (one file, twice: git stores it once);
- every other run of the grid **without weights**: its per-study scores, learning curve,
  configuration and split, so the chapters' tables, paired comparisons and learning curves show
  the committed run.

It is made by ``python -m stroke_helpers reproduce --preset cpu`` and then
``python -m stroke_helpers ship`` (:func:`ship`), which halves the weights and scores the halved
models again, so the shipped scores are those of the shipped weights. ``shipped.json`` records
the commands, the data's fingerprint, the versions and those scores.

A model fits the data it was trained on: the bundle is used only when the dataset's
:func:`data_fingerprint` (the phantom's settings and case list) matches the one it was made from.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
from pathlib import Path

import torch

from .grid import ALL_RUN, has_test_truth
from .inference import evaluate
from .runs import RunError, atomic_save, load_config, load_state, metrics_path, read_json, write_json

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu"
MANIFEST = "shipped.json"
WEIGHTS = (ALL_RUN, "cascade")  # the runs whose weights ship; the cascade's stage 1 is ALL_RUN
SMALL_FILES = ("config.json", "split.json", "history.csv", "metrics.json", "metrics_test.json", "cascade.json")
COMMANDS = ("python -m stroke_helpers reproduce --preset cpu", "python -m stroke_helpers ship")
IGNORED_SETTINGS = ("key", "atlas", "write_pwi", "compress")  # the header; where the atlas is; file format
CASE_COLUMNS = ("split", "case", "patient", "slab", "n_slices", "site", "territory", "side", "seed")


def data_fingerprint(data: str | Path) -> str | None:
    """A short hash of what defines a generated phantom dataset: its settings (``truth/config.csv``,
    without the machine's atlas path and the two that only change how files are written) and its
    cases (``truth/cases.csv``: ids, sites, seeds).
    None for data without the phantom's truth folder (real ISLES 2018)."""
    import csv

    truth = Path(data) / "truth"
    if not (truth / "config.csv").is_file() or not (truth / "cases.csv").is_file():
        return None
    h = hashlib.sha256()
    with open(truth / "config.csv", newline="") as f:
        h.update(repr(sorted((k, v) for k, v in csv.reader(f) if k not in IGNORED_SETTINGS)).encode())
    with open(truth / "cases.csv", newline="") as f:
        h.update(repr([[row.get(c) for c in CASE_COLUMNS] for row in csv.DictReader(f)]).encode())
    return h.hexdigest()[:16]


def has_weights(run: str | Path) -> bool:
    """Whether a run folder can predict (a model's ``best.pt``, or a cascade's stage 2)."""
    run = Path(run)
    return (run / "best.pt").is_file() or (run / "stage2" / "best.pt").is_file()


def is_shipped(results: str | Path) -> bool:
    return (Path(results) / MANIFEST).is_file()


def describe(results: str | Path) -> str:
    """Where a chapter's results come from, in a few words (for table headers and titles)."""
    short = "/".join(Path(results).resolve().parts[-2:])
    return f"shipped checkpoint {short}" if is_shipped(results) else f"grid run {short}"


def fits(data: str | Path, bundle: Path | None = None) -> bool:
    """Whether the shipped checkpoint was trained on ``data`` (same fingerprint)."""
    bundle = SHIPPED if bundle is None else bundle
    if not is_shipped(bundle):
        return False
    return data_fingerprint(data) == read_json(bundle / MANIFEST, "shipped checkpoint description")["data_fingerprint"]


def results_for_chapters(results: Path, data: Path, preset: str) -> tuple[Path, str]:
    """``(folder, note)``: ``results`` when it holds the grid's ``MR+ATT_All``, else the shipped
    checkpoint when it fits ``preset`` and ``data``; ``note`` says which, and why (empty when the
    grid's own results are used)."""
    if metrics_path(Path(results) / "runs" / ALL_RUN).exists() or not is_shipped(SHIPPED):
        return results, ""
    manifest = read_json(SHIPPED / MANIFEST, "shipped checkpoint description")
    train = f"`python -m stroke_helpers reproduce --preset {preset}` trains the whole grid"
    if preset != manifest["preset"]:
        return (
            results,
            f"{results}: no grid run yet ({train}); the shipped checkpoint is for the {manifest['preset']} preset only",
        )
    if not fits(data):
        return results, (
            f"{results}: no grid run yet ({train}); the shipped checkpoint {SHIPPED} was trained on the "
            f"default synthetic dataset, which {data} is not"
        )
    return SHIPPED, (
        f"{results}: no grid run yet, so this chapter shows the SHIPPED CHECKPOINT {SHIPPED}: the trained "
        f"weights of {' and '.join(WEIGHTS)}, and the other runs' scores without weights "
        f"(made by `{' && '.join(manifest['commands'])}` on {manifest['date']}). {train} (about 40 minutes on 2 cores)."
    )


def _halve(src: Path, dst: Path) -> None:
    """``best.pt`` with its floating-point weights in fp16 (they load back into fp32 models)."""
    state = load_state(src)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, dst)


def _mean_dice(metrics: dict) -> float:
    return round(float(metrics["summary"]["dice"]["mean"]), 4)


def ship(
    results: str | Path,
    out: str | Path = SHIPPED,
    data: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the shipped checkpoint from a ``reproduce`` output folder and return it.

    ``data`` is the dataset the runs were trained on (default: the one their configuration
    names). An existing ``out`` is kept (error) unless ``force``; the bundle is built in
    ``OUT.partial`` and moved into place at the end.
    """
    results, out = Path(results), Path(out)
    for name in WEIGHTS:
        if not metrics_path(results / "runs" / name).exists():
            raise RunError(f"{results / 'runs' / name}: no evaluated run; `{COMMANDS[0]}` makes it first")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    data = Path(data or load_config(results / "runs" / ALL_RUN).data)
    fingerprint = data_fingerprint(data)
    if fingerprint is None:
        raise RunError(
            f"{data}: not a generated synthetic dataset (no truth/); the shipped checkpoint is trained on one"
        )
    preset = load_config(results / "runs" / ALL_RUN).preset  # the repository ships the cpu preset's
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for source in sorted((results / "runs").rglob("*")):  # every run's small files, weights left out
        if source.name in SMALL_FILES and source.is_file():
            (tmp / source.relative_to(results)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp / source.relative_to(results))
    for weights in (f"{ALL_RUN}/best.pt", "cascade/stage1/best.pt", "cascade/stage2/best.pt"):
        _halve(results / "runs" / weights, tmp / "runs" / weights)  # stage 1 is ALL_RUN: the same bytes
    scores = {}
    splits = ("val", "test") if has_test_truth(data) else ("val",)
    for name in WEIGHTS:
        for split in splits:
            grid = read_json(metrics_path(results / "runs" / name, split), "metrics")
            shipped = evaluate(tmp / "runs" / name, split, "cpu", progress, data=data)
            write_json(shipped | {"run": f"runs/{name}"}, metrics_path(tmp / "runs" / name, split))
            scores[f"{name} {split}"] = {"grid (fp32 weights)": _mean_dice(grid), "shipped (fp16)": _mean_dice(shipped)}
    manifest = {
        "preset": preset,
        "data": str(data),
        "data_fingerprint": fingerprint,
        "commands": list(COMMANDS),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "weights": {name: "fp16" for name in WEIGHTS},
        "mean_dice": scores,
    }
    write_json(manifest, tmp / MANIFEST)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out
