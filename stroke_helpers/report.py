"""Every table the report, the README and the chapters show, built once from the runs' metrics.

The paper's numbers (real ISLES 2018, 19 validation studies, docs/decisions.md §1) sit beside ours; ours are
on whatever data the grid was trained on, so they are not expected to match. Each of our cells
is the mean over studies with its 95 % bootstrap interval; the paper's claims are paired
comparisons on the same studies (:func:`comparisons`), each with its interval and a sentence
saying whether this sample resolves it.

Beside the paper's runs, the tables show what the paper has no number for: the classical
threshold methods (no learning, :data:`~stroke_helpers.baseline.THRESHOLDS`; Table 1, under
the map each thresholds, and :func:`thresholds_markdown`) and MONAI's AttentionUnet (Table 2's
All column), scored on the same studies by the same metrics code, and paired against the
networks (MR+ATT against MONAI; the best network against the best threshold).

``split``: ``"val"`` (the 19 validation studies, also used to pick each run's best epoch) or
``"test"`` (the phantom's 62 held-out TESTING studies, never used for training or selection;
real ISLES 2018 keeps those masks private, so on it the report shows validation only).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import files
from .baseline import THRESHOLDS, ncct_baseline
from .datasets import build_slices
from .grid import (
    ALL_RUN,
    ARCHITECTURE_ROWS,
    CASCADES,
    EXTRA_RUNS,
    MONAI,
    MONAI_RUN,
    ROWS,
    TABLE1,
    TABLE2,
    column_name,
    run_name,
    seed_folder,
)
from .metrics import MIN_STUDIES, bootstrap_ci, paired_difference
from .modalities import ALL, PERFUSION_MAPS
from .presets import Preset
from .runs import ResultsFolder, RunFolder, read_history, read_metrics, read_split, slices_of

# the paper's numbers (ISLES 2018, 19 validation studies): Dice (mean, std), docs/decisions.md §1
PAPER_TABLE1 = {
    "base": ((0.20, 0.26), (0.51, 0.30), (0.57, 0.26), (0.50, 0.25), (0.56, 0.30)),
    "MR": ((0.26, 0.24), (0.51, 0.27), (0.58, 0.22), (0.55, 0.26), (0.57, 0.26)),
    "MR+ATT": ((0.24, 0.19), (0.54, 0.28), (0.57, 0.23), (0.55, 0.28), (0.55, 0.21)),
}
PAPER_TABLE2 = {
    "base": ((0.58, 0.25), (0.58, 0.24), (0.53, 0.26), (0.60, 0.24), (0.62, 0.23)),
    "MR": ((0.61, 0.23), (0.62, 0.20), (0.54, 0.27), (0.63, 0.21), (0.63, 0.22)),
    "MR+ATT": ((0.60, 0.23), (0.62, 0.21), (0.55, 0.25), (0.61, 0.25), (0.63, 0.16)),
}
PAPER_CASCADE = {"dice": 0.66, "precision": 0.67}


SPLIT_NAMES = {"val": "validation studies", "test": "held-out TESTING studies"}
CASCADE_METRICS = ("dice", "precision", "recall", "hd95", "avd")
#: Table 1's row of classical thresholds: under each map, the method that thresholds it.
THRESHOLD_ROW = "threshold (no learning)"
THRESHOLD_COLUMNS = {"CT": "ncct_hypodensity", "CBF": "rcbf_below_30", "Tmax": "tmax_above_6s"}


def scores_folder(results: Path, folder: str) -> RunFolder:
    """Where the scores called ``folder`` are: a threshold method's (a name of
    :data:`~stroke_helpers.baseline.THRESHOLDS`) or a run's (``runs/<folder>``)."""
    results = ResultsFolder(results)
    return results.threshold(folder) if folder in THRESHOLDS else results.run(folder)


def load_run_metrics(results: Path, folder: str, split: str = "val") -> dict | None:
    """A run's (or a threshold method's, :func:`scores_folder`) ``metrics.json`` (``val``) or
    ``metrics_test.json`` (checked: :func:`~stroke_helpers.runs.read_metrics`), or None when absent."""
    path = scores_folder(results, folder).metrics(split)
    return read_metrics(path) if path.exists() else None


def per_study(results: Path, folder: str, metric: str = "dice", split: str = "val") -> dict[str, float] | None:
    """``{study: value}`` of one run (NaN where the metric is undefined), or None."""
    m = load_run_metrics(results, folder, split)
    if m is None:
        return None
    return {r["study"]: math.nan if r[metric] is None else float(r[metric]) for r in m["studies"]}


def has_split(results: Path, split: str) -> bool:
    return load_run_metrics(results, ALL_RUN, split) is not None


def cell(values: dict[str, float] | None) -> str:
    """``mean [low, high]``: the mean over studies and its 95 % bootstrap interval."""
    v = np.array(list(values.values()) if values else [], float)
    if not np.isfinite(v).any():
        return "-"
    lo, hi = bootstrap_ci(v)
    return f"{np.nanmean(v):.2f} [{lo:.2f}, {hi:.2f}]"


def _paper(c) -> str:
    return f"{c[0]:.2f} ± {c[1]:.2f}"


def cell_folder(row: str, column: str) -> str | None:
    """The scores behind one table cell: the grid's run for a row of :data:`ROWS`, another
    architecture's run (:data:`~stroke_helpers.grid.ARCHITECTURE_ROWS`, trained on its
    :data:`~stroke_helpers.grid.EXTRA_RUNS` columns only), the threshold method of a map's
    column for :data:`THRESHOLD_ROW`; None for a cell with nothing behind it."""
    if row in ROWS:
        return run_name(row, column)
    if row in ARCHITECTURE_ROWS:
        return run_name(row, column) if (row, column) in EXTRA_RUNS else None
    if row == THRESHOLD_ROW:
        return THRESHOLD_COLUMNS.get(column)
    raise ValueError(f"unknown table row {row!r}")


def row_label(row: str) -> str:
    return ARCHITECTURE_ROWS.get(row, row)


def table_rows(results: Path, columns, split: str = "val") -> tuple[str, ...]:
    """The paper's configurations, then the rows it has no number for (MONAI's AttentionUnet,
    the classical thresholds) where ``results`` scored one of ``columns``."""
    extra = [
        row
        for row in (*ARCHITECTURE_ROWS, THRESHOLD_ROW)
        if any(
            (f := cell_folder(row, c)) is not None and load_run_metrics(results, f, split) is not None for c in columns
        )
    ]
    return (*ROWS, *extra)


def table_markdown(results: Path, columns, paper: dict, metric: str = "dice", rows=None, split: str = "val") -> str:
    """Table 1 or 2 as markdown: each cell ``ours mean [95 % CI]``, then the paper's mean ± std
    for Dice; ``rows`` picks the rows shown (default :func:`table_rows`: the paper's
    configurations, then MONAI's AttentionUnet and the thresholds where scored; those two have
    no paper value, and a line under the table names the threshold of each column)."""
    rows = table_rows(results, columns, split) if rows is None else rows
    lines = ["| | " + " | ".join(column_name(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        folders = [cell_folder(row, c) for c in columns]
        cells = [cell(per_study(results, f, metric, split) if f else None) for f in folders]
        if metric == "dice" and row in paper:
            cells = [f"{c} ({_paper(p)})" for c, p in zip(cells, paper[row])]
        lines.append(f"| {row_label(row)} | " + " | ".join(cells) + " |")
    if THRESHOLD_ROW in rows:
        named = [f"{column_name(c)}: {THRESHOLDS[THRESHOLD_COLUMNS[c]]}" for c in columns if c in THRESHOLD_COLUMNS]
        lines += ["", f"{THRESHOLD_ROW}: {'; '.join(named)} (baseline.py), scored on the same studies."]
    return "\n".join(lines)


def _cascade_runs() -> dict[str, str]:
    """``{label: folder}``: stage 1 and the cascades of the grid's own seed."""
    runs = {"stage 1 (MR+ATT, All)": ALL_RUN}
    runs |= {f"{f} ({'out-of-fold' if CASCADES[f] else 'in-sample'} Ms)": f for f in CASCADES}
    return runs


def cascade_markdown(results: Path, split: str = "val") -> str:
    """Stage 1 against both cascades: every metric's mean [95 % CI]; the paper's cascade first."""
    lines = [
        "| | Dice | precision | recall | HD95 (mm) | AVD (mL) |",
        "|---|---|---|---|---|---|",
        f"| paper (real ISLES 2018) | {PAPER_CASCADE['dice']:.2f} | {PAPER_CASCADE['precision']:.2f} | | | |",
    ]
    for label, folder in _cascade_runs().items():
        if load_run_metrics(results, folder, split) is not None:
            cells = [cell(per_study(results, folder, m, split)) for m in CASCADE_METRICS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def display_name(folder: str) -> str:
    """A run's or a threshold method's name as the tables show it."""
    if folder in THRESHOLDS:
        return THRESHOLDS[folder]
    if folder in CASCADES:
        return f"{'out-of-fold' if CASCADES[folder] else 'in-sample'} cascade"
    for row, shown in ARCHITECTURE_ROWS.items():
        if folder.startswith(f"{row}_"):
            return f"{shown} {folder.removeprefix(f'{row}_')}"
    return folder.replace("_", " ")


def network_runs() -> list[str]:
    """Every network of the grid's own seed: the table runs, the other architectures' runs and
    both cascades."""
    runs = [run_name(row, c) for table in (TABLE1, TABLE2) for row in ROWS for c in table]
    return runs + [run_name(row, c) for row, c in EXTRA_RUNS] + list(CASCADES)


def best_on_validation(results: Path, folders) -> str | None:
    """The folder among ``folders`` with the highest mean validation Dice (the first of them on a
    tie; None if none is scored): chosen on the validation studies, as each run's epoch is,
    never on the test studies."""
    means = {f: np.nanmean(list(v.values())) for f in folders if (v := per_study(results, f))}
    means = {f: m for f, m in means.items() if np.isfinite(m)}
    return max(means, key=means.get) if means else None


def thresholds_markdown(results: Path, split: str = "val") -> str:
    """The classical threshold methods beside the networks on the same studies: every metric's
    mean [95 % CI] for each method, MONAI's AttentionUnet, stage 1 (MR+ATT All), both cascades,
    and the best network on validation if it is none of these."""
    if not any(load_run_metrics(results, m, split) for m in THRESHOLDS):
        return "No threshold scores here: `python -m stroke_helpers reproduce` scores them in its grid step."
    lines = [
        "| method | studies | Dice | precision | recall | HD95 (mm) | AVD (mL) |",
        "|---|---|---|---|---|---|---|",
    ]
    best = {best_on_validation(results, network_runs()), best_on_validation(results, THRESHOLDS)}
    shown = dict.fromkeys([*THRESHOLDS, MONAI_RUN, ALL_RUN, *CASCADES, *sorted(best - {None})])
    for folder in shown:
        if load_run_metrics(results, folder, split) is None:
            continue
        cells = [cell(per_study(results, folder, m, split)) for m in CASCADE_METRICS]
        kind = "no learning" if folder in THRESHOLDS else "network"
        kind += ", best on validation" if folder in best else ""
        n = len(per_study(results, folder, split=split))
        lines.append(f"| {display_name(folder)} ({kind}) | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Best on validation: the highest mean validation Dice among the networks of the grid's seed (every table",
        "run, MONAI's AttentionUnet, both cascades) and among the thresholds; the paired comparison",
        "*best network vs best threshold* sets these two against each other study by study.",
    ]
    return "\n".join(lines)


def comparisons(results: Path, split: str = "val") -> list[dict]:
    """The paper's claims as paired per-study Dice differences on the same studies (``a - b``),
    each with its paired bootstrap 95 % interval; comparisons whose runs are missing are left
    out. Then the networks against the baselines: MR+ATT against MONAI's AttentionUnet (All),
    and the best network against the best threshold method (each picked by
    :func:`best_on_validation`; the difference on ``split``)."""
    all_ = ALL
    singles = [c for c in TABLE1 if c in PERFUSION_MAPS]
    best = max(
        singles, key=lambda c: np.nanmean(list((per_study(results, run_name("MR+ATT", c)) or {"": -1}).values()))
    )
    pairs = [
        ("MR vs base (All)", run_name("MR", all_), run_name("base", all_)),
        ("MR+ATT vs MR (All)", run_name("MR+ATT", all_), run_name("MR", all_)),
        *(
            (
                f"{column_name(c)} vs best single map {column_name(best)} (MR+ATT)",
                run_name("MR+ATT", c),
                run_name("MR+ATT", best),
            )
            for c in TABLE2[:-1]
        ),
        ("NCCT+maps (All) vs Tmax+CBV+CBF (MR+ATT)", ALL_RUN, run_name("MR+ATT", "Tmax,CBV,CBF")),
        ("cascade vs stage 1", "cascade", ALL_RUN),
        ("in-sample vs out-of-fold cascade", "cascade", "cascade_oof"),
        (f"MR+ATT vs {ARCHITECTURE_ROWS[MONAI]} (All)", ALL_RUN, MONAI_RUN),
    ]
    network, threshold = best_on_validation(results, network_runs()), best_on_validation(results, THRESHOLDS)
    if network and threshold:
        pairs.append(
            (
                f"best network ({display_name(network)}) vs best threshold ({display_name(threshold)})",
                network,
                threshold,
            )
        )
    result = []
    for claim, a, b in pairs:
        da, db = per_study(results, a, split=split), per_study(results, b, split=split)
        if da is not None and db is not None:
            result.append({"claim": claim, "a": a, "b": b, **paired_difference(da, db)})
    return result


def verdict(c: dict) -> str:
    """One sentence: does this sample resolve the comparison?"""
    diff = f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] over {c['n']} studies"
    if c["n"] < MIN_STUDIES:
        return f"{c['claim']}: {diff}; too few studies for an interval to mean anything."
    if c["resolved"]:
        side = "better" if c["mean"] > 0 else "worse"
        return f"{c['claim']}: {diff}; the interval excludes 0, so this sample resolves it ({side})."
    if c["low"] == c["high"] == 0:
        return f"{c['claim']}: {diff}; the two score the same on every study."
    return f"{c['claim']}: {diff}; the interval includes 0: this sample cannot tell them apart, and {resolution(c)}."


def resolution(c: dict) -> str:
    """What an unresolved paired comparison ``c`` could still have resolved: half its interval."""
    return f"would not resolve a true difference much smaller than about {(c['high'] - c['low']) / 2:.3f} Dice"


def comparisons_markdown(results: Path, split: str = "val", only: tuple[str, ...] = ()) -> str:
    """The paired comparisons as a table and one verdict sentence each (``only``: the claims
    that start with one of these, e.g. ``("MR+ATT vs MR",)``)."""
    lines = ["| claim | mean difference [95 % CI] | studies | resolved |", "|---|---|---|---|"]
    rows = [c for c in comparisons(results, split) if not only or c["claim"].startswith(only)]
    for c in rows:
        lines.append(
            f"| {c['claim']} | {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['n']} | {'yes' if c['resolved'] else 'no'} |"
        )
    return "\n".join(lines + [""] + [f"- {verdict(c)}" for c in rows])


def ncct_comparison(results: Path, data: Path | None = None, split: str = "val") -> dict | None:
    """The NCCT-only intensity baseline (:func:`~stroke_helpers.baseline.ncct_hypodensity`)
    against the learned NCCT models on the same studies: ``{"baseline": {study: Dice},
    "learned": {row: {study: Dice}}, "best": row, "paired": comparison}`` (``paired``: the
    baseline minus the best learned model, a :func:`comparisons` entry). The baseline's scores
    are the grid's (``thresholds/``) when it scored these studies, else computed from ``data``;
    None without an evaluated NCCT run, or without either."""
    learned = {row: v for row in ROWS if (v := per_study(results, run_name(row, "CT"), split=split))}
    studies = next((list(v) for v in learned.values()), None)
    if studies is None:
        return None
    stored = per_study(results, THRESHOLD_COLUMNS["CT"], split=split)  # the grid's, when it scored them
    if stored and set(studies) <= set(stored):
        base = {s: stored[s] for s in studies}
    elif data is not None:
        base = ncct_baseline(data, studies)
    else:
        return None
    best = max(learned, key=lambda r: np.nanmean(list(learned[r].values())))
    paired = {"claim": f"hypodensity baseline vs {best} NCCT", "a": THRESHOLD_COLUMNS["CT"], "b": run_name(best, "CT")}
    return {
        "baseline": base,
        "learned": learned,
        "best": best,
        "paired": paired | paired_difference(base, learned[best]),
    }


def ncct_markdown(results: Path, data: Path, split: str = "val") -> str:
    """The NCCT-only intensity baseline beside the learned NCCT models, on the same studies,
    with the paired difference (:func:`ncct_comparison`)."""
    c = ncct_comparison(results, data, split)
    if c is None:
        return "no evaluated NCCT run"
    lines = [
        "| NCCT input | Dice [95 % CI] |",
        "|---|---|",
        f"| hypodensity vs mirror (no learning) | {cell(c['baseline'])} |",
    ]
    lines += [f"| {row} (learned) | {cell(v)} |" for row, v in c["learned"].items()]
    return "\n".join(lines + ["", f"- {verdict(c['paired'])}"])


def seed_spread(results: Path, base_seed: int = 0, split: str = "val") -> dict[str, list[float]]:
    """``{run: [mean Dice per seed]}`` for the All row and both cascades, over every seed run."""
    names = {row: run_name(row, ALL) for row in ROWS} | {f: f for f in CASCADES}
    spread = {}
    for label, folder in names.items():
        means = []
        for k in range(100):
            values = per_study(results, seed_folder(folder, base_seed + k, base_seed), split=split)
            if values is None:
                break
            means.append(float(np.nanmean(list(values.values()))))
        if means:
            spread[label] = means
    return spread


def seeds_markdown(results: Path, base_seed: int = 0, split: str = "val") -> str:
    lines = ["| run | seeds | mean Dice per seed | spread (max - min) |", "|---|---|---|---|"]
    for label, means in seed_spread(results, base_seed, split).items():
        lines.append(
            f"| {label} | {len(means)} | {', '.join(f'{m:.3f}' for m in means)} | {max(means) - min(means):.3f} |"
        )
    return "\n".join(lines)


def trained_runs(results: Path) -> list[Path]:
    """Every run folder the grid trained, each once: a cascade's ``stage1`` is a copy of the
    MR+ATT All run, so it is left out."""
    runs = ResultsFolder(results).runs()
    return [r.path for r in runs if r.history.is_file() and r != RunFolder(r.path.parent).stage1]


def grid_overheads(results: Path, grid_wall: float) -> dict[str, float]:
    """Where the grid's wall time went: training steps, per-epoch validation, and everything
    else (process and model start, slice cache, synthetic maps, native-resolution evaluation
    and HD95), from every run's ``history.csv`` (seconds per epoch include validation)."""
    train = val = 0.0
    for run in trained_runs(results):
        rows = read_history(run)
        train += sum(r["seconds"] - r.get("val_seconds", 0.0) for r in rows)
        val += sum(r.get("val_seconds", 0.0) for r in rows)
    rest = grid_wall - train - val
    return {"training steps": train, "per-epoch validation": val, "everything else": rest, "grid wall": grid_wall}


PLATEAU = 0.02  # a run is on its plateau when its last three epochs' mean validation Dice is this close to its best


def convergence(results: Path) -> list[dict]:
    """Per trained run: best validation Dice, the mean of its last three epochs, whether that is
    within :data:`PLATEAU` of the best (the learning curve has flattened), and its final Dice."""
    rows = []
    for run in trained_runs(results):
        dice = [r["val_dice"] for r in read_history(run)]
        best, tail = max(dice), float(np.mean(dice[-3:]))
        name = ResultsFolder(results).name(run)
        rows.append({"run": name, "best": best, "last3": tail, "final": dice[-1], "plateau": best - tail <= PLATEAU})
    return rows


def convergence_markdown(results: Path) -> str:
    """How many runs reached their plateau, and every run that did not or that ended below 0.2."""
    rows = convergence(results)
    if not rows:
        return "No trained runs."
    flat = sum(r["plateau"] for r in rows)
    lines = [f"{flat} of {len(rows)} runs reached their plateau (last three epochs within {PLATEAU} of the best)."]
    odd = [r for r in rows if not r["plateau"] or r["final"] < 0.2]
    if odd:
        lines += ["", "| run | best | last 3 epochs | final |", "|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['best']:.3f} | {r['last3']:.3f} | {r['final']:.3f} |" for r in odd]
    return "\n".join(lines)


def end_to_end(results: Path, data: Path, size: int, grid_wall: float) -> dict:
    """Training slices per second of the grid's wall time: every epoch of every trained run
    (a cascade's copied stage 1 once) counted with its run's training slices."""
    arrays = build_slices(data, "TRAINING", size, progress=False)
    slices = 0
    for run in trained_runs(results):
        slices += len(read_history(run)) * len(slices_of(arrays, read_split(run)["train"]))
    return {
        "training_slices": slices,
        "grid_wall_s": grid_wall,
        "slices_per_s": slices / grid_wall if grid_wall else 0.0,
    }


def machine(device, precision: str = "auto") -> dict:
    """What ran the grid, for ``timing.json``: the device's name, the CPU cores and the precision
    policy's choice (:func:`~stroke_helpers.engine.choose_precision`)."""
    import os

    from .engine import choose_precision, device_name

    chosen = choose_precision(device, precision)
    return {"device": device_name(device), "cores": os.cpu_count() or 1, "precision": chosen.name, "why": chosen.reason}


def time_markdown(
    seconds: dict[str, float], results: Path | None = None, grid_seconds: dict[str, float] | None = None
) -> str:
    lines = ["| step | seconds |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in seconds.items()]
    if grid_seconds:
        wall = sum(grid_seconds.values())
        parts = grid_overheads(results, wall)
        if parts["everything else"] < 0:  # resumed: the histories hold runs trained before this session
            lines += [
                "",
                "| grid time (resumed: the runs' histories include earlier sessions) | seconds |",
                "|---|---|",
            ]
            lines += [f"| {k} | {v:.0f} |" for k, v in parts.items() if k != "everything else"]
        else:
            lines += ["", "| grid time | seconds | share |", "|---|---|---|"]
            lines += [f"| {k} | {v:.0f} | {100 * v / wall:.0f} % |" for k, v in parts.items()]
        lines += ["", "| grid step | seconds |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in grid_seconds.items()]
    return "\n".join(lines)


def write_report(
    results: Path,
    data: Path,
    preset: Preset,
    seconds: dict[str, float],
    figures: list[Path],
    grid_seconds: dict[str, float] | None = None,
) -> Path:
    """``RESULTS/report.md``: both tables beside the paper's with intervals, the cascades, the paired
    comparisons, the spread between seeds, the figure files and where the time went."""
    results, p = Path(results), preset
    splits = [s for s in ("val", "test") if has_split(results, s)] or ["val"]
    lines = [
        "# Results report",
        "",
        f"Computed on **{data}** with the `{p.name}` preset (widths {p.widths}, {p.size} px, {p.epochs} epochs).",
        "Each cell: **ours** as the mean Dice over studies with its 95 % bootstrap interval, then (the paper's",
        "mean ± std on real ISLES 2018, 19 validation studies). Ours are on the data named above: results on the",
        "synthetic phantom are synthetic and not expected to match the paper's. Rows without the paper's value are",
        f"not in the paper: MONAI's AttentionUnet (`{MONAI}`, All, the same preset and training) and the classical",
        "thresholds (no learning), scored on the same studies with the same metrics.",
    ]
    if "test" not in splits:
        lines += ["", "No test truth here (real ISLES 2018 keeps the TESTING masks private): validation only."]
    for split in splits:
        lines += [
            "",
            f"# On the {SPLIT_NAMES[split]}",
            "",
            "## Table 1: one modality",
            "",
            table_markdown(results, TABLE1, PAPER_TABLE1, split=split),
            "",
            "## Table 2: combinations",
            "",
            table_markdown(results, TABLE2, PAPER_TABLE2, split=split),
            "",
            "## Precision (Table 2 columns)",
            "",
            table_markdown(results, TABLE2, PAPER_TABLE2, metric="precision", split=split),
            "",
            "## Cascade (MR+ATT, All + synthetic map)",
            "",
            cascade_markdown(results, split),
            "",
            "## Classical thresholds beside the networks (same studies, no learning)",
            "",
            thresholds_markdown(results, split),
            "",
            "## The paper's claims, paired on the same studies",
            "",
            comparisons_markdown(results, split),
            "",
            "## Seeds (All row and cascades)",
            "",
            seeds_markdown(results, split=split),
        ]
    lines += ["", "## Convergence (validation Dice per epoch)", "", convergence_markdown(results)]
    lines += ["", "## Figures", ""] + [f"- [{f.name}]({f.relative_to(results)})" for f in figures]
    lines += ["", "## Time", "", time_markdown(seconds, results, grid_seconds)]
    return files.write_text(ResultsFolder(results).report, "\n".join(lines) + "\n")
