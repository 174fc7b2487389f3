"""A second test set, drawn afresh by the phantom: the grid's models scored on studies no draw of the dataset held.

    python -m stroke_helpers replicate [--results RESULTS] [--draw DIR] [--seed S] [--cases N] [--force]

The TESTING split has as many studies as ISLES 2018's (62), and every model in the tables is
scored on that one draw: a draw that happens to be harder than the average lowers every model's
score together, and no interval over its studies shows it. Real data has no second test set; the
phantom can make one. :func:`replicate` generates a **draw**: TESTING studies only, from the
same generator and settings as the grid's dataset with another seed (by default the dataset's
seed + 1 and twice the TESTING split's size; no 4D series). It scores the grid's ``base``, ``MR``
and ``MR+ATT`` models of each single map and of All on the draw and writes their per-study Dice
to ``RESULTS/replication.json`` (:attr:`~stroke_helpers.runs.ResultsFolder.replication`), with a
fingerprint of each run's learning curve so that a grid trained again is not shown beside an old
draw. :func:`checks_on_test_sets` turns the TESTING split and the draw into the learned-difficulty
checks (:func:`stroke_helpers.difficulty.on_test_sets`), which README and chapter 05 show side by
side (docs/decisions.md §6, item 8).
"""

from __future__ import annotations

import hashlib
import os
import typing
from dataclasses import fields
from pathlib import Path

from tqdm.auto import tqdm

from . import files, locations
from .difficulty import COLUMNS, on_test_sets
from .grid import ROWS, run_name
from .inference import evaluate
from .phantom import PhantomConfig, generate_dataset
from .phantom.dataset import PHANTOM_VERSION, not_written_here
from .phantom.territories import find_atlas
from .report import per_study
from .runs import ResultsFolder, RunError, in_shipped_checkpoint, load_config, read_replication
from .shipped import data_settings
from .truth import CONFIG_FILE, TRUTH, read_config

#: The settings a draw may differ in from the grid's dataset: which studies, how many.
DRAW_SETTINGS = ("seed", "train_cases", "test_cases")
#: The grid's runs a replication scores: each row of each single map and of All.
GRID_RUNS = tuple(run_name(row, column) for column in COLUMNS for row in ROWS)


def _phantom_config(data: Path) -> PhantomConfig:
    """The :class:`PhantomConfig` that generated ``data`` (its ``truth/config.csv``), without the
    4D series; the atlas as the dataset's territories say (refused when they name an atlas that
    is not there)."""
    saved, path = read_config(data), data / TRUTH / CONFIG_FILE
    hints = typing.get_type_hints(PhantomConfig)
    values = {}
    for f in fields(PhantomConfig):
        text = saved.get(f.name)
        if text is None or f.name in ("write_pwi", "atlas"):
            continue
        kind = hints[f.name]
        optional = type(None) in typing.get_args(kind)
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        try:
            if optional and text in ("", "None"):
                values[f.name] = None
            elif base is bool:
                values[f.name] = {"True": True, "False": False}[text]
            else:
                values[f.name] = base(text)
        except (KeyError, ValueError):
            raise RunError(f"{path}: {f.name}={text!r} is not a {base.__name__}") from None
    atlas = None
    if saved.get("territories") == "atlas":
        atlas = saved.get("atlas") or str(locations.atlas())
        if find_atlas(atlas, warn=False) is None:
            raise RunError(
                f"{data} was made with the arterial territory atlas, which is not in {atlas}: "
                "get it with python data_download.py atlas (a draw must use the same territories)"
            )
    return PhantomConfig(**values, atlas=atlas, write_pwi=False)


def _differs(draw: Path, data: Path) -> str:
    """'' when ``draw`` was generated like ``data`` but for :data:`DRAW_SETTINGS`, else how not."""
    a, b = data_settings(draw) or {}, data_settings(data) or {}
    differ = sorted(k for k in a.keys() | b.keys() if k not in DRAW_SETTINGS and a.get(k) != b.get(k))
    return f"its {', '.join(differ)} differ from {data}'s" if differ else ""


def scored_runs(results: str | os.PathLike) -> list[str]:
    """The runs of :data:`GRID_RUNS` that ``results`` holds with weights."""
    return [n for n in GRID_RUNS if ResultsFolder(results).run(n).best.is_file()]


def run_fingerprint(results: str | os.PathLike, name: str) -> str:
    """A short hash of a run's learning curve: a run trained again on other data, or with other
    settings, has another (the training is deterministic, so the same run has the same)."""
    history = ResultsFolder(results).run(name).history
    return hashlib.sha256(history.read_bytes()).hexdigest()[:16] if history.is_file() else ""


def _grid_dataset(results: Path, runs: list[str]) -> tuple[Path, dict[str, str]]:
    """The phantom dataset the runs were trained on and its settings; refused when it is not here,
    not a phantom's, or from another phantom version than this code generates."""
    config = ResultsFolder(results).run(runs[0]).config
    data = Path(load_config(ResultsFolder(results).run(runs[0])).data)
    locations.require_dataset(data, f"the dataset {config} names")
    if data_settings(data) is None:
        raise RunError(f"{data} (named by {config}): not a generated synthetic dataset (no truth/), so no draw of it")
    settings = read_config(data)
    if settings.get("phantom_version") != str(PHANTOM_VERSION):
        raise RunError(
            f"{data}: phantom v{settings.get('phantom_version')}, this code generates v{PHANTOM_VERSION}: "
            "a draw would not be from the same phantom (regenerate the dataset and the grid)"
        )
    for key in ("seed", "test_cases"):
        if not settings.get(key, "").isdigit():
            raise RunError(f"{data / TRUTH / CONFIG_FILE}: no {key}")
    return data, settings


def _prepare_draw(draw: Path, data: Path, seed: int, cases: int, force: bool, progress: bool) -> None:
    """Reuse ``draw`` when it is this draw; otherwise generate it, replacing (with ``force``) only
    a folder that is itself a draw (a generated dataset without TRAINING studies), never the grid's
    dataset or anything else."""
    if draw.exists() and not draw.is_dir():
        raise FileExistsError(f"{draw}: a file; --draw names a folder")
    have = data_settings(draw) if draw.is_dir() else None
    wanted = {"seed": str(seed), "train_cases": "0", "test_cases": str(cases)}
    if have is not None and not _differs(draw, data) and all(have.get(k) == v for k, v in wanted.items()):
        return
    if draw.is_dir() and any(draw.iterdir()):
        is_draw = have is not None and have.get("train_cases") == "0" and draw.resolve() != data.resolve()
        why = (_differs(draw, data) or "another seed or size") if is_draw else "it is not a draw"
        if not (is_draw and force):
            hint = "pass --force to replace it or " if is_draw else ""
            raise FileExistsError(
                f"{draw}: not a draw of seed {seed} and {cases} studies ({why}); {hint}choose another --draw"
            )
        foreign = not_written_here(draw)
        if foreign:
            raise FileExistsError(
                f"{draw}: a draw, but {foreign}; --force replaces only what the phantom wrote: "
                "move them or choose another --draw"
            )
    print(f"drawing {cases} TESTING studies, seed {seed}, into {draw}", flush=True)
    generate_dataset(draw, 0, cases, seed, _phantom_config(data), force=force, progress=progress)
    differs = _differs(draw, data)
    if differs:
        raise RunError(f"{draw}: {differs}; it is not scored")


def replicate(
    results: str | os.PathLike,
    draw: str | os.PathLike | None = None,
    seed: int | None = None,
    cases: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Generate (or reuse) the draw, score the runs of :func:`scored_runs` on it, write
    ``RESULTS/replication.json`` (kept unless ``force``) and return what it holds.

    ``draw``: the draw's folder (default: beside the grid's dataset, ``<dataset>_replication``),
    reused when it is a draw of this seed and size from the same phantom; ``force`` also replaces
    a draw of another seed or size, never another folder. ``seed`` may not be the dataset's own
    (its TESTING studies would come back).
    """
    results = Path(results)
    if in_shipped_checkpoint(results):
        raise RunError(
            f"{results}: part of the shipped checkpoint, which is never rewritten (replicate a grid's results)"
        )
    out = ResultsFolder(results).replication
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to score the draw again")
    runs = scored_runs(results)
    if not runs:
        raise RunError(f"{results}: no trained single-map or All run with weights to score (run the grid first)")
    data, settings = _grid_dataset(results, runs)
    seed = int(settings["seed"]) + 1 if seed is None else seed
    if seed == int(settings["seed"]):
        raise ValueError(f"--seed {seed} is {data}'s own seed: its TESTING studies would come back; choose another")
    cases = 2 * int(settings["test_cases"]) if cases is None else cases
    draw = Path(draw) if draw is not None else data.parent / f"{data.name}_replication"
    _prepare_draw(draw, data, seed, cases, force, progress)
    scores = {}
    for name in tqdm(runs, desc="replicate", disable=not progress):
        m = evaluate(ResultsFolder(results).run(name).path, "test", progress=False, data=draw, write=False)
        scores[name] = {r["study"]: r["dice"] for r in m["studies"]}
    record = {
        "draw": str(draw),
        "data": str(data),
        "seed": seed,
        "cases": cases,
        "phantom_version": PHANTOM_VERSION,
        "command": f"python -m stroke_helpers replicate --results {results} --draw {draw} --seed {seed} --cases {cases}",
        "runs": {name: run_fingerprint(results, name) for name in runs},
        "dice": scores,
    }
    files.write_json(record, out)
    print(f"written: {out}")
    return record


def checks_on_test_sets(results: str | os.PathLike) -> dict[str, dict]:
    """The learned-difficulty checks on the grid's test sets: ``{"TESTING": ..., "draw": ...}``,
    each ``{"label", "rows"}`` (:meth:`~stroke_helpers.difficulty.Difficulty.rows`), the draw's
    with its ``seed`` and ``cases`` too, when ``results`` holds a replication. A replication of
    runs trained again since is refused in one line (its models are not these)."""
    folders = ResultsFolder(results)
    scored = {n: per_study(folders.path, n, split="test") for n in GRID_RUNS}
    testing = {n: per for n, per in scored.items() if per is not None}
    tables = {}
    rows = on_test_sets(testing, f"{folders.path}/runs/*/metrics_test.json").rows()
    if rows:
        n = len(next(iter(testing.values())))
        tables["TESTING"] = {"label": f"TESTING ({n} studies)", "rows": rows}
    record = read_replication(results)
    if record is not None:
        stale = [name for name, fp in record["runs"].items() if fp != run_fingerprint(results, name)]
        if stale:
            raise RunError(
                f"{folders.replication}: {', '.join(stale)} trained again since; "
                "score the draw again: python -m stroke_helpers replicate --force"
            )
        rows = on_test_sets(record["dice"], str(folders.replication)).rows()
        if rows:
            label = f"draw ({record['cases']} studies, seed {record['seed']})"
            tables["draw"] = {"label": label, "rows": rows, "seed": record["seed"], "cases": record["cases"]}
    return tables


def labelled(tables: dict[str, dict]) -> dict[str, list[dict]]:
    """``{label: rows}`` of :func:`checks_on_test_sets`, what the table and the figure take."""
    return {t["label"]: t["rows"] for t in tables.values()}
