"""The shipped checkpoint: a small trained ``cpu`` bundle that chapters 02-05 read when the grid has not run.

``checkpoints/cpu`` is a results folder in the layout ``reproduce`` writes (``runs/<name>/...``),
so every function that takes a results folder reads it unchanged. It holds:

- the **weights** (fp16, about 4 MB) of ``MR+ATT_All`` and of its in-sample ``cascade``, whose
  stage 1 is that same model (one file, twice: git stores it once);
- every other run of the grid **without weights** (MONAI's AttentionUnet among them): its
  per-study scores, learning curve, configuration and split, so the chapters' tables, paired
  comparisons and learning curves show the committed run; the classical threshold methods'
  per-study scores (``thresholds/<method>``); the grid's ``timing.json`` (where the time went,
  on which machine); the models' scores on a draw of new TESTING studies (``replication.json``,
  :mod:`stroke_helpers.replication`); and, in ``shipped.json``, the leak figures of chapter 04, which need the
  out-of-fold cascade's fold models.

README's results section is rendered from it (:mod:`stroke_helpers.readme`).

It is made by ``python -m stroke_helpers reproduce --preset cpu`` and then
``python -m stroke_helpers ship`` (:func:`ship`), which halves the weights and scores the halved
models again, so the shipped scores are those of the shipped weights. ``shipped.json`` records
the commands, the data's settings and fingerprint, the versions and precision, and those scores.
Nothing ever writes into it (``evaluate`` refuses; chapter 05 saves its figures elsewhere).

A model fits the data it was trained on: the bundle is used only when the dataset's
:func:`data_fingerprint` (the phantom's version, settings and case list) matches the one it was
made from.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
from functools import partial
from pathlib import Path

import torch

from . import files, locations
from .cascade import ms_leak
from .datasets import build_slices
from .engine import autocast_dtype
from .grid import ALL_RUN, CASCADES
from .inference import evaluate
from .runs import SHIPPED_MANIFEST as MANIFEST
from .runs import ResultsFolder, RunError, load_checkpoint, load_config, read_json, read_metrics, read_replication
from .truth import has_test_truth, has_truth, read_cases, read_config

WEIGHTS = (ALL_RUN, "cascade")  # the runs whose weights ship; the cascade's stage 1 is ALL_RUN
CHAPTER_RUNS = (ALL_RUN, *CASCADES)  # the grid is ready for the chapters with these
RECIPE = "python -m stroke_helpers reproduce --preset cpu"
GRID_TIME = "most of an hour on 2 cores"  # the measured times: README, "Results on the synthetic dataset"
FILE_SETTINGS = ("atlas", "write_pwi", "compress")  # where the atlas was, how files were written
CASE_COLUMNS = ("split", "case", "patient", "slab", "n_slices", "n_frames", "site", "territory", "side", "seed")


def data_settings(data: str | Path) -> dict[str, str] | None:
    """The phantom's settings that define its data (``truth/config.csv`` without
    :data:`FILE_SETTINGS`), or None for data without the phantom's truth (real ISLES 2018)."""
    if not has_truth(data):
        return None
    return {k: v for k, v in read_config(data).items() if k not in FILE_SETTINGS}


def data_fingerprint(data: str | Path) -> str | None:
    """A short hash of what defines a generated phantom dataset: :func:`data_settings` and its
    cases (ids, slabs, frames, sites, seeds), or None for data without the phantom's truth."""
    settings = data_settings(data)
    if settings is None:
        return None
    cases = [[row.get(c) for c in CASE_COLUMNS] for row in read_cases(data)]
    return hashlib.sha256(repr((sorted(settings.items()), cases)).encode()).hexdigest()[:16]


def is_shipped(results: str | Path) -> bool:
    """Whether ``results`` is itself a shipped checkpoint (not merely a folder inside one)."""
    return (Path(results) / MANIFEST).is_file()


def repository_bundle() -> Path | None:
    """The checkout's shipped checkpoint (:func:`stroke_helpers.locations.shipped_checkpoint`),
    or None where the package is installed without a checkout."""
    return locations.shipped_checkpoint() if locations.in_checkout() else None


def _text(v) -> bool:
    return isinstance(v, str)


def _scores(v) -> bool:
    return isinstance(v, dict) and all(
        isinstance(d, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in d.values())
        for d in v.values()
    )


#: The fields of ``shipped.json`` the code reads, and what each must be.
MANIFEST_FIELDS = {
    "preset": (_text, "a preset name"),
    "data_fingerprint": (_text, "a fingerprint string"),
    "data_settings": (lambda v: isinstance(v, dict) and all(map(_text, v.values())), "a dict of settings"),
    "commands": (lambda v: isinstance(v, list) and v and all(map(_text, v)), "a list of commands"),
    "date": (_text, "a date"),
    "leakage": (_scores, "a dict of Dice values per cascade"),
}


def manifest(bundle: str | Path | None = None) -> dict | None:
    """``shipped.json`` of ``bundle`` (default: the checkout's), or None without one; a field
    the code reads that is missing or of another type (:data:`MANIFEST_FIELDS`) is one
    :class:`~stroke_helpers.runs.RunError` line naming the file and the field."""
    bundle = bundle or repository_bundle()
    if bundle is None or not is_shipped(bundle):
        return None
    path = Path(bundle) / MANIFEST
    described = read_json(path, "shipped checkpoint description")
    for field, (ok, expected) in MANIFEST_FIELDS.items():
        if field not in described or not ok(described[field]):
            found = "missing" if field not in described else f"a {type(described[field]).__name__}"
            raise RunError(f"{path}: not a shipped checkpoint description: '{field}' is {found}, not {expected}")
    return described


def source_label(results: str | Path) -> str:
    """Where a chapter's results come from, in a few words (for table headers and figure titles)."""
    short = "/".join(Path(results).resolve().parts[-2:])
    return f"shipped checkpoint {short}" if is_shipped(results) else f"grid run {short}"


def grid_ready(results: str | Path) -> bool:
    """Whether ``results`` holds every run the chapters load a model from (the grid trains the
    out-of-fold cascade last, after all the table runs)."""
    return all(ResultsFolder(results).run(name).metrics().exists() for name in CHAPTER_RUNS)


def mismatch(data: str | Path, described: dict) -> str:
    """Why ``data`` is not the dataset a shipped checkpoint was trained on ('' when it is)."""
    settings = data_settings(data)
    if settings is None:
        return "it is not a generated synthetic dataset (no truth/ folder)"
    if data_fingerprint(data) == described["data_fingerprint"]:
        return ""
    trained = described["data_settings"]
    differ = [
        f"{k} {settings.get(k, 'unset')} (trained: {trained.get(k, 'unset')})"
        for k in sorted(trained.keys() | settings.keys())
        if settings.get(k) != trained.get(k)
    ]
    return "; ".join(differ) or "its cases differ"


def fits(data: str | Path) -> bool:
    """Whether the repository's shipped checkpoint was trained on ``data``."""
    described = manifest()
    return described is not None and not mismatch(data, described)


def results_for_chapters(results: Path, data: Path, preset: str) -> tuple[Path, str]:
    """``(folder, note)``: ``results`` when its grid is ready for the chapters
    (:func:`grid_ready`), else the shipped checkpoint when it fits ``preset`` and ``data``; the
    note says which, and why (empty when the grid's own results are used)."""
    described = manifest()
    if grid_ready(results) or described is None:
        return results, ""
    done = sum(run.metrics().exists() for run in ResultsFolder(results).runs())
    state = f"{results}: the grid is not finished ({done} runs evaluated)" if done else f"{results}: no grid run yet"
    train = f"`python -m stroke_helpers reproduce --preset {preset}` trains (or resumes) the grid"
    train += f", {GRID_TIME}" if preset == "cpu" else ""
    if preset != described["preset"]:
        return results, f"{state}; the shipped checkpoint is for the {described['preset']} preset only. {train}."
    why = mismatch(data, described)
    if why:
        return (
            results,
            f"{state}; the shipped checkpoint was trained on the default synthetic dataset, and {data} is not it: {why}. {train}.",
        )
    bundle = repository_bundle()
    return bundle, (
        f"{state}, so this chapter shows the SHIPPED CHECKPOINT {bundle}: the trained weights of "
        f"{' and '.join(WEIGHTS)}, and the other runs' scores without weights (made by "
        f"`{' && '.join(described['commands'])}` on {described['date']}). {train}."
    )


def recorded_leakage(results: str | Path) -> dict[str, dict[str, float]]:
    """``{cascade: ms_leak(...)}`` from the grid's own maps when ``results`` was shipped ({} otherwise)."""
    return (manifest(results) or {}).get("leakage", {})


def _halve(src: Path, dst: Path) -> None:
    """``best.pt`` with its floating-point weights in fp16 (they load back into fp32 models)."""
    state = load_checkpoint(src)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    files.save_torch(state, dst, durable=False)  # in OUT.partial, swapped in whole


def _copy_small_files(results: Path, out: Path) -> None:
    """Every run's configuration, split, learning curve and scores, the threshold methods'
    scores, the grid's ``timing.json`` (when ``reproduce`` wrote one) and ``replication.json``
    (when ``replicate`` wrote one); no weights, no maps."""
    folders = ResultsFolder(results)
    sources = [source for run in folders.runs() + folders.thresholds() for source in run.records()]
    extra = [f for f in (folders.timing, folders.replication) if f.is_file()]
    for source in sources + extra:
        files.save_with(out / source.relative_to(results), partial(shutil.copy2, source), durable=False)


def _rescore(results: Path, out: Path, data: Path, progress: bool) -> dict:
    """Score the halved models again (written over the copied scores); both means, per split,
    and, where this machine evaluates them under autocast, the halved models' mean in fp32 too
    (what a CPU without bf16 units computes)."""
    autocast = autocast_dtype(torch.device("cpu"), load_config(ResultsFolder(results).run(ALL_RUN)).precision)
    scores = {}
    for name in WEIGHTS:
        for split in ("val", "test") if has_test_truth(data) else ("val",):
            source, target = ResultsFolder(results).run(name), ResultsFolder(out).run(name)
            grid = read_metrics(source.metrics(split))["summary"]["dice"]["mean"]
            halved = evaluate(target.path, split, "cpu", progress, data=data, write=False)
            files.write_json(
                halved | {"run": target.path.relative_to(out).as_posix()}, target.metrics(split), durable=False
            )
            shipped = halved["summary"]["dice"]["mean"]
            scores[f"{name} {split}"] = {"grid (fp32 weights)": round(grid, 4), "shipped (fp16)": round(shipped, 4)}
            if autocast is not None:
                fp32 = evaluate(target.path, split, "cpu", progress, data=data, write=False, precision="fp32")
                scores[f"{name} {split}"]["shipped, evaluated in fp32"] = round(fp32["summary"]["dice"]["mean"], 4)
    return scores


def _rescore_draw(out: Path, progress: bool) -> None:
    """The halved models' scores on the draw (:mod:`stroke_helpers.replication`), written over the
    copied record's, so both test sets score the same weights; the draw must still be there."""
    record = read_replication(out)
    if record is None:
        return
    for name in (n for n in WEIGHTS if n in record["dice"]):
        if not Path(record["draw"], "TESTING").is_dir():
            raise RunError(f"{record['draw']}: the draw that replication.json names is not here; run replicate again")
        halved = evaluate(ResultsFolder(out).run(name).path, "test", "cpu", progress, data=record["draw"], write=False)
        record["dice"][name] = {r["study"]: r["dice"] for r in halved["studies"]}
    files.write_json(record, ResultsFolder(out).replication, durable=False)


def ship(
    results: str | Path,
    out: str | Path | None = None,
    data: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the shipped checkpoint from a finished ``reproduce`` output folder and return it.

    ``data`` is the dataset the runs were trained on (default: the one their configuration
    names). An existing ``out`` is kept (error) unless ``force``, and ``force`` replaces only a
    shipped checkpoint (a folder with ``shipped.json``): anything else is refused. The bundle is
    built in ``OUT.partial`` and swapped into place at the end (:func:`stroke_helpers.files.swap_in`);
    one process ships into ``out`` at a time, and what a killed one left (``OUT.partial``,
    ``OUT.old``) is cleaned up first (:func:`stroke_helpers.files.recover`).
    """
    repository = locations.shipped_checkpoint()
    results, out = Path(results), Path(out or repository)
    for name in CHAPTER_RUNS:
        if not ResultsFolder(results).run(name).metrics().exists():
            raise RunError(f"{ResultsFolder(results).run(name)}: no evaluated run; `{RECIPE}` makes it first")
    with files.lock(out, f"ship --out {out}"):
        files.recover(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if not force:
                raise FileExistsError(f"{out} already exists; pass --force to replace it")
            if not is_shipped(out):
                raise FileExistsError(
                    f"{out}: not a shipped checkpoint (no {MANIFEST}); --force replaces only one: choose another --out"
                )
        tmp = files.partial(out)
        try:
            _build(results, out, tmp, repository, data, progress)
        except files.NoSpaceError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise files.NoSpaceError(f"{exc} (the partial bundle {tmp} was removed)") from None
        return files.swap_in(tmp, out)


def _build(results: Path, out: Path, tmp: Path, repository: Path, data: str | Path | None, progress: bool) -> None:
    """The bundle, in ``tmp``."""
    config = load_config(ResultsFolder(results).run(ALL_RUN))
    if out.resolve() == repository.resolve() and config.preset != "cpu":
        raise RunError(f"{results}: a {config.preset}-preset run; {repository} is the cpu preset's")
    data_path = locations.require_dataset(data or config.data, "pass --data, the dataset these runs were trained on")
    if data_settings(data_path) is None:
        raise RunError(f"{data_path}: not a generated synthetic dataset (no truth/); the shipped checkpoint needs one")
    tmp.mkdir(parents=True)
    _copy_small_files(results, tmp)
    for weights in (w for name in WEIGHTS for w in ResultsFolder(results).run(name).weights()):
        _halve(weights, tmp / weights.relative_to(results))  # stage 1 is ALL_RUN: the same bytes
    arrays = build_slices(data_path, "TRAINING", config.settings.size, progress=progress)
    ship_command = f"python -m stroke_helpers ship --results {results}" + (f" --data {data}" if data else "")
    described = {
        "preset": config.preset,
        "data": str(data_path),
        "data_fingerprint": data_fingerprint(data_path),
        "data_settings": data_settings(data_path),
        "commands": [RECIPE, ship_command + ("" if out.resolve() == repository.resolve() else f" --out {out}")],
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "weights": {name: "fp16" for name in WEIGHTS},
        "evaluated_in": "bf16 autocast" if autocast_dtype(torch.device("cpu"), config.precision) else "fp32",
        "mean_dice": _rescore(results, tmp, data_path, progress),
        "leakage": {
            c: {k: round(v, 4) for k, v in ms_leak(ResultsFolder(results).run(c).path, arrays).items()}
            for c in CASCADES
        },
    }
    _rescore_draw(tmp, progress)
    files.write_json(described, tmp / MANIFEST, durable=False)
