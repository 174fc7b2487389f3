"""How hard each map is to learn, measured without TESTING: cross-validated single-map models.

    python -m stroke_helpers difficulty DATA --out RUNS [--folds 5] [--preset cpu] [--table FILE]

The realism scorecard (:mod:`stroke_helpers.scorecard`) measures what thresholds find in each map;
this measures what a network learns from it. Each column of Table 1, and All, gets the grid's
``base`` model (plain skips, full-resolution loss) trained once per fold of the TRAINING
patients, holding that fold out (a patient's studies stay together,
:func:`stroke_helpers.cascade.patient_groups`). The model of the last epoch scores the held-out
studies at native resolution (:func:`stroke_helpers.inference.evaluate`, as the test scores
are); the held-out studies choose nothing, not even the epoch. Every TRAINING study is scored
once, by a model that never saw it: the whole split instead of the grid's validation studies,
too few to calibrate on (their intervals are as wide as the target ranges). So the phantom's
difficulty is calibrated on TRAINING and TESTING stays for reporting (docs/decisions.md §6).

:data:`TARGETS` are ranges for the `cpu` preset, set around the paper's Table 1 on real ISLES
2018 (CBF .57-.58 >= MTT .55-.57 > CBV .51-.54 ~ Tmax .50-.55 > NCCT .20-.26); :data:`PAIRED`
the two orderings the phantom must also show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .cascade import folds_by_patient
from .datasets import build_slices
from .files import check_output, write_csv
from .grid import ROWS, TABLE1, column_name, run_name
from .inference import evaluate
from .metrics import bootstrap_ci, paired_difference
from .modalities import ALL
from .runs import RunFolder, TrainConfig, load_config, metrics_path, read_metrics, read_split
from .train import train

#: Column -> (low, high) mean Dice: of its cross-validated base model (:func:`cross_validate`), or,
#: on a test set, of the grid's base, MR and MR+ATT models averaged per study (:func:`on_test_sets`).
TARGETS = {"NCCT": (0.12, 0.30), "CBV": (0.45, 0.60), "CBF": (0.50, 0.62), "Tmax": (0.45, 0.60), "MTT": (0.48, 0.62)}
#: (a, b, bound): the mean paired difference a - b must be at most ``bound`` (Tmax not ahead
#: of CBF by more than 0.03) or, for a negative ``bound``, at least ``-bound`` (All at least
#: 0.02 above the best single map; ``best`` is the single map with the highest mean).
PAIRED = (("Tmax", "CBF", 0.03), ("All", "best", -0.02))
COLUMNS = (*TABLE1, ALL)


@dataclass
class Difficulty:
    """Per column, ``{study: Dice}`` of the model that held the study out."""

    scores: dict[str, dict[str, float]]
    folds: int

    def best_single(self) -> str | None:
        """The single map with the highest mean Dice (None when no single map was scored)."""
        singles = [c for c in self.scores if c in TARGETS]
        return max(singles, key=lambda c: _mean(self.scores[c])) if singles else None

    def rows(self) -> list[dict]:
        """One row per column and per paired condition: value, 95 % interval, target, pass."""
        rows = []
        for column, per in self.scores.items():
            lo, hi = bootstrap_ci(list(per.values()))
            target = TARGETS.get(column)
            value = _mean(per)
            rows.append(
                {
                    "quantity": f"{column} Dice",
                    "value": value,
                    "low": lo,
                    "high": hi,
                    "n": len(per),
                    "target": f"{target[0]:g} - {target[1]:g}" if target else "",
                    "passed": (target[0] <= value <= target[1]) if target else None,
                }
            )
        for a, b, bound in PAIRED:
            b = self.best_single() if b == "best" else b
            if a not in self.scores or b not in self.scores:  # b is None: no single map scored
                continue
            d = paired_difference(self.scores[a], self.scores[b])
            rows.append(
                {
                    "quantity": f"{a} - {b}",
                    "value": d["mean"],
                    "low": d["low"],
                    "high": d["high"],
                    "n": d["n"],
                    "target": f"<= {bound:+g}" if bound > 0 else f">= {-bound:+g}",
                    "passed": d["mean"] <= bound if bound > 0 else d["mean"] >= -bound,
                }
            )
        return rows


def on_test_sets(per_run: dict[str, dict[str, float]], source: str = "the scores") -> Difficulty:
    """The same checks on a test set, from the grid's models: per column whose ``base``, ``MR``
    and ``MR+ATT`` runs were all scored (``per_run``: ``{run name: {study: Dice}}``, read from
    ``source``), each study's Dice averaged over the three, as the issue that set the targets
    states them for test sets. ``folds`` is 0: nothing is cross-validated."""
    scores = {}
    for column in COLUMNS:
        runs = [per_run.get(run_name(row, column)) for row in ROWS]
        if any(r is None for r in runs):
            continue
        if any(set(r) != set(runs[0]) for r in runs):
            raise ValueError(
                f"{source}: {column_name(column)}'s base, MR and MR+ATT runs were scored on different studies"
            )
        scores[column_name(column)] = {s: sum(r[s] for r in runs) / len(runs) for s in runs[0]}
    return Difficulty(scores, 0)


def _scored(run: Path, config: TrainConfig) -> bool:
    """Whether ``run`` is this fold, finished and scored (:func:`cross_validate`)."""
    if not metrics_path(run, "val").exists() or not RunFolder(run).config.exists():
        return False
    old = load_config(run)
    same = (old.data, old.preset, old.seed, old.modalities) == (
        config.data,
        config.preset,
        config.seed,
        config.modalities,
    )
    return same and sorted(read_split(run)["val"]) == sorted(config.val_studies)


def _mean(per: dict[str, float]) -> float:
    return sum(per.values()) / len(per)


def cross_validate(
    data: str | os.PathLike,
    out: str | os.PathLike,
    columns=COLUMNS,
    folds: int = 5,
    preset: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> Difficulty:
    """Train and score ``folds`` base models per column; runs go to ``OUT/<column>/fold<k>``. A
    fold already scored is kept when it held out the same studies with the same preset, seed
    and dataset folder (so an interrupted run resumes); otherwise it is trained again."""
    arrays = build_slices(data, "TRAINING", TrainConfig(str(data), str(out), preset).settings.size, progress=progress)
    names = list(arrays.studies)
    held_out = folds_by_patient(names, dict(zip(arrays.studies, arrays.patients)), folds, seed)
    scores = {}
    jobs = [(c, k) for c in columns for k in range(folds)]
    for column, k in tqdm(jobs, desc="difficulty", disable=not progress):
        run = Path(out) / column_name(column) / f"fold{k}"
        config = TrainConfig(
            data=str(data),
            out=str(run),
            preset=preset,
            modalities=tuple(column.split(",")),
            attention=False,
            multilevel=False,
            seed=seed,
            train_studies=[s for s in names if s not in held_out[k]],
            val_studies=held_out[k],
            progress=False,
            keep_last=True,
        )
        if not _scored(run, config):
            train(config, force=True)
            evaluate(run, "val", progress=False, checkpoint="last")
        studies = read_metrics(metrics_path(run, "val"))["studies"]
        scores.setdefault(column_name(column), {}).update({s["study"]: s["dice"] for s in studies})
    return Difficulty(scores, folds)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'quantity':<16} {'value':>7}  {'95 % interval':<18} {'n':>3}  {'target':<12} result"]
    for r in rows:
        result = "" if r["passed"] is None else "pass" if r["passed"] else "FAIL"
        lines.append(
            f"{r['quantity']:<16} {r['value']:>+7.3f}  [{r['low']:+.3f}, {r['high']:+.3f}]  {r['n']:>3}  {r['target']:<12} {result}"
        )
    return "\n".join(lines)


def read_table(path: str | os.PathLike) -> list[dict]:
    """A table :func:`report_difficulty` wrote, numbers back as floats and ``passed`` as a bool
    (None where the row has no target)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("value", "low", "high"):
            r[key] = float(r[key])
        r["n"] = int(r["n"])
        r["passed"] = {"True": True, "False": False}.get(r["passed"])
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The table as Markdown: README's learned-difficulty table is this, rendered from
    ``docs/scorecard/difficulty.csv`` (a test keeps them equal)."""
    lines = ["| quantity | mean [95 % interval] | studies | target | result |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['quantity']} | {_interval(r)} | {r['n']} | {r['target']} | {_result(r)} |")
    return "\n".join(lines)


def _interval(row: dict) -> str:
    """``mean [low, high]`` of a row, signed for a paired difference."""
    sign = "+" if " - " in row["quantity"] else ""
    return f"{row['value']:{sign}.3f} [{row['low']:{sign}.3f}, {row['high']:{sign}.3f}]"


def _result(row: dict) -> str:
    return "" if row["passed"] is None else "pass" if row["passed"] else "FAIL"


def side_by_side(tables: dict[str, list[dict]]) -> str:
    """Several test sets' :meth:`Difficulty.rows` as one Markdown table: one column per test set
    (``{label: rows}``), each cell the mean [95 % interval] and pass or FAIL, then the target."""
    quantities = list(dict.fromkeys(r["quantity"] for rows in tables.values() for r in rows))
    found = {label: {r["quantity"]: r for r in rows} for label, rows in tables.items()}
    lines = ["| quantity | " + " | ".join(tables) + " | target |", "|---" * (len(tables) + 2) + "|"]
    for q in quantities:
        cells, target = [], ""
        for label in tables:
            r = found[label].get(q)
            if r is None:
                cells.append("-")
                continue
            result = {"": "", "pass": " pass", "FAIL": " **FAIL**"}[_result(r)]
            cells.append(_interval(r) + result)
            target = target or r["target"]
        lines.append(f"| {q} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def report_difficulty(
    data: str | os.PathLike,
    out: str | os.PathLike,
    table: str | os.PathLike | None = None,
    folds: int = 5,
    preset: str = "cpu",
    progress: bool = True,
    force: bool = False,
) -> list[dict]:
    """Cross-validate, print the table and write it to ``table`` (kept unless ``force``)."""
    path = check_output(table, force, "--table") if table else None
    rows = cross_validate(data, out, folds=folds, preset=preset, progress=progress).rows()
    print(f"learned difficulty of {data} TRAINING, {folds}-fold cross-validated base models ({preset} preset):")
    print(format_table(rows))
    if path is not None:
        write_csv(path, list(rows[0]), rows)
        print(f"written: {path}")
    return rows
