"""A second, independent test set: the grid's models scored on patients drawn afresh by the phantom.

    python -m stroke_helpers replicate [--results RESULTS] [--draw DIR] [--seed S] [--cases N] [--force]

The held-out TESTING split has as many studies as ISLES 2018's (62), and every model in the
tables is scored on that one draw of patients: a draw that happens to be harder than the average
lowers every network's score together, and no interval over its studies shows it. Real data has
no second test set; the phantom can draw one. :func:`replicate` generates TESTING-only patients
from the same generator and settings as the grid's dataset with another seed (by default the
dataset's seed + 1, twice the TESTING split's size, no 4D series), scores the grid's ``base``,
``MR`` and ``MR+ATT`` models of each single map and of All on them, and writes their per-study
Dice to ``RESULTS/replication.json`` (:attr:`~stroke_helpers.runs.ResultsFolder.replication`).
:func:`stroke_helpers.difficulty.held_out` turns either test set into the learned-difficulty
checks, which README shows side by side (docs/decisions.md §6, item 8).
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from tqdm.auto import tqdm

from . import files
from .difficulty import COLUMNS, held_out
from .grid import ROWS, run_name
from .inference import evaluate
from .phantom import PhantomConfig, generate_dataset
from .phantom.dataset import PHANTOM_VERSION
from .runs import ResultsFolder, RunError, load_config, read_json, read_metrics
from .shipped import data_settings
from .truth import read_config

#: The settings a draw may differ in from the grid's dataset: which patients, how many.
DRAW_SETTINGS = ("seed", "train_cases", "test_cases")


def _phantom_config(data: Path) -> PhantomConfig:
    """The :class:`PhantomConfig` that generated ``data`` (its ``truth/config.csv``), without the 4D series."""
    saved = read_config(data)
    values = {}
    for f in fields(PhantomConfig):
        text, default = saved.get(f.name), f.default
        if text is None or f.name == "write_pwi":
            continue
        if text == "None":
            values[f.name] = None
        elif isinstance(default, bool):
            values[f.name] = text == "True"
        elif isinstance(default, int):
            values[f.name] = int(text)
        elif isinstance(default, float) or f.name == "reference_mtt":
            values[f.name] = float(text)
        else:
            values[f.name] = text
    return PhantomConfig(**values, write_pwi=False)


def _same_phantom(draw: Path, data: Path) -> str:
    """'' when ``draw`` was generated like ``data`` but for :data:`DRAW_SETTINGS`, else why not."""
    a, b = data_settings(draw) or {}, data_settings(data) or {}
    differ = sorted(k for k in a.keys() | b.keys() if k not in DRAW_SETTINGS and a.get(k) != b.get(k))
    return f"it differs from {data} in {', '.join(differ)}" if differ else ""


def scored_runs(results: str | os.PathLike) -> list[str]:
    """The grid's runs a replication scores that ``results`` holds with weights: each row of each
    single map and of All (:data:`stroke_helpers.difficulty.COLUMNS`)."""
    folders = ResultsFolder(results)
    names = [run_name(row, column) for column in COLUMNS for row in ROWS]
    return [n for n in names if folders.run(n).best.is_file()]


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
    reused when it was generated like the grid's dataset with this seed and size; ``force``
    replaces a draw this generator wrote that differs, never anything else.
    """
    folders = ResultsFolder(results)
    out = folders.replication
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to score the draw again")
    runs = scored_runs(results)
    if not runs:
        raise RunError(f"{results}: no trained single-map or All run with weights to score (run the grid first)")
    data = Path(load_config(folders.run(runs[0])).data)
    if data_settings(data) is None:
        raise RunError(f"{data}: not a generated synthetic dataset (no truth/), so the phantom cannot draw more of it")
    settings = read_config(data)
    if settings.get("phantom_version") != str(PHANTOM_VERSION):
        raise RunError(
            f"{data}: phantom v{settings.get('phantom_version')}, this code generates v{PHANTOM_VERSION}: "
            "a draw would not be from the same phantom (regenerate the dataset and the grid)"
        )
    seed = int(settings["seed"]) + 1 if seed is None else seed
    cases = 2 * int(settings["test_cases"]) if cases is None else cases
    draw = Path(draw) if draw is not None else data.parent / f"{data.name}_replication"
    wanted = {"seed": str(seed), "train_cases": "0", "test_cases": str(cases)}
    have = data_settings(draw) if draw.is_dir() else None
    if have is None or _same_phantom(draw, data) or any(have.get(k) != v for k, v in wanted.items()):
        if draw.exists() and any(draw.iterdir()) and not force:
            why = _same_phantom(draw, data) if have else "it is not a generated dataset"
            raise FileExistsError(
                f"{draw}: not a draw of seed {seed} and {cases} studies ({why or 'another seed or size'}); "
                "pass --force to replace it or choose another --draw"
            )
        print(f"drawing {cases} TESTING studies, seed {seed}, into {draw}", flush=True)
        generate_dataset(draw, 0, cases, seed, _phantom_config(data), force=force, progress=progress)
    scores = {}
    for name in tqdm(runs, desc="replicate", disable=not progress):
        m = evaluate(folders.run(name).path, "test", progress=False, data=draw, write=False)
        scores[name] = {r["study"]: r["dice"] for r in m["studies"]}
    record = {
        "draw": str(draw),
        "data": str(data),
        "seed": seed,
        "cases": cases,
        "phantom_version": PHANTOM_VERSION,
        "command": f"python -m stroke_helpers replicate --results {results} --seed {seed} --cases {cases}",
        "dice": scores,
    }
    files.write_json(record, out)
    print(f"written: {out}")
    return record


def read_replication(results: str | os.PathLike) -> dict | None:
    """What :func:`replicate` wrote in ``results`` (checked), or None when it has none."""
    path = ResultsFolder(results).replication
    if not path.is_file():
        return None
    record = read_json(path, "the replication's scores")
    dice = record.get("dice")
    ok = isinstance(dice, dict) and all(
        isinstance(per, dict) and all(isinstance(v, (int, float)) for v in per.values()) for per in dice.values()
    )
    if not ok or not isinstance(record.get("cases"), int) or not isinstance(record.get("seed"), int):
        raise RunError(f"{path}: not a replication record (needs seed, cases and dice: {{run: {{study: number}}}})")
    return record


def held_out_tables(results: str | os.PathLike) -> dict[str, list[dict]]:
    """The learned-difficulty checks (:func:`stroke_helpers.difficulty.held_out`) on the grid's
    TESTING studies and, when ``results`` holds a replication, on its draw: ``{label: rows}``
    (``{}`` when neither was scored)."""
    folders = ResultsFolder(results)
    names = [run_name(row, column) for column in COLUMNS for row in ROWS]
    testing = {
        n: {r["study"]: r["dice"] for r in read_metrics(folders.run(n).metrics("test"))["studies"]}
        for n in names
        if folders.run(n).metrics("test").is_file()
    }
    tables = {}
    rows = held_out(testing).rows()
    if rows:
        tables[f"TESTING ({len(next(iter(testing.values())))} studies)"] = rows
    record = read_replication(results)
    if record is not None:
        rows = held_out(record["dice"]).rows()
        if rows:
            tables[f"second draw ({record['cases']} studies, seed {record['seed']})"] = rows
    return tables
