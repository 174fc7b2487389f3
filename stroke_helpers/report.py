"""Every table the report, the README and the chapters show, built once from the runs' metrics.

The paper's numbers (real ISLES 2018, 19 validation studies, SPEC §1) sit beside ours; ours are
on whatever data the grid was trained on, so they are not expected to match.
"""

from __future__ import annotations

import json
from pathlib import Path

from .grid import ALL_RUN, CASCADES, ROWS, TABLE1, TABLE2, column_name, run_name
from .presets import get_preset

# the paper's numbers (ISLES 2018, 19 validation studies): Dice (mean, std), SPEC §1
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


def load_metrics(out: Path, row: str, modalities: str) -> dict | None:
    path = Path(out) / "runs" / run_name(row, modalities) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(out: Path, columns=TABLE1, metric: str = "dice") -> dict[str, list[tuple[float, float] | None]]:
    """``{row: [(mean, std) or None per column]}`` from the runs' ``metrics.json``."""
    result = {}
    for row in ROWS:
        cells = []
        for mods in columns:
            m = load_metrics(out, row, mods)
            cells.append((m["summary"][metric]["mean"], m["summary"][metric]["std"]) if m else None)
        result[row] = cells
    return result


def _cell(c) -> str:
    return "-" if c is None else f"{c[0]:.2f} ± {c[1]:.2f}"


def table_markdown(out: Path, columns, paper: dict, metric: str = "dice", rows=tuple(ROWS)) -> str:
    """A markdown table of Table 1 or 2: each cell ``ours (paper)`` as mean ± std (Dice), or
    ours alone for other metrics; ``rows`` picks the configurations shown."""
    ours = table(out, columns, metric)
    lines = ["| | " + " | ".join(column_name(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = [f"{_cell(o)} ({_cell(p)})" if metric == "dice" else _cell(o) for o, p in zip(ours[row], paper[row])]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cascade_summary(out: Path) -> dict[str, dict]:
    """``{name: summary}`` of stage 1 (the MR+ATT All run) and the evaluated cascades."""
    res = {}
    for folder, name in ((ALL_RUN, "stage 1 (MR+ATT, All)"), *((f, _cascade_name(f)) for f in CASCADES)):
        path = Path(out) / "runs" / folder / "metrics.json"
        if path.exists():
            res[name] = json.loads(path.read_text())["summary"]
    return res


def _cascade_name(folder: str) -> str:
    return f"{folder} ({'out-of-fold' if CASCADES[folder] else 'in-sample'} Ms)"


CASCADE_METRICS = ("dice", "precision", "recall", "hd95", "avd")


def cascade_markdown(out: Path) -> str:
    """Stage 1 against both cascades (mean ± std of every metric), the paper's cascade first."""
    lines = [
        "| | Dice | precision | recall | HD95 (mm) | AVD (mL) |",
        "|---|---|---|---|---|---|",
        f"| paper (real ISLES 2018) | {PAPER_CASCADE['dice']:.2f} | {PAPER_CASCADE['precision']:.2f} | | | |",
    ]
    for name, s in cascade_summary(out).items():
        lines.append(f"| {name} | " + " | ".join(_cell((s[m]["mean"], s[m]["std"])) for m in CASCADE_METRICS) + " |")
    return "\n".join(lines)


def write_report(out: Path, data: Path, preset: str, seconds: dict[str, float], figures: list[Path]) -> Path:
    """``OUT/report.md``: both tables beside the paper's, the cascades and the figure files."""
    out = Path(out)
    p = get_preset(preset)
    lines = [
        "# Results report",
        "",
        f"Computed on **{data}** with the `{preset}` preset (widths {p.widths}, {p.size} px, {p.epochs} epochs).",
        "Each cell: **ours (paper)**, Dice mean ± std over the validation studies. The paper's numbers are on",
        "real ISLES 2018; ours are on the data named above, so they are not expected to match.",
        "",
        "## Table 1: one modality",
        "",
        table_markdown(out, TABLE1, PAPER_TABLE1),
        "",
        "## Table 2: combinations",
        "",
        table_markdown(out, TABLE2, PAPER_TABLE2),
        "",
        "## Precision (Table 2 columns)",
        "",
        table_markdown(out, TABLE2, PAPER_TABLE2, metric="precision"),
        "",
        "## Cascade (MR+ATT, All + synthetic map)",
        "",
        cascade_markdown(out),
    ]
    lines += ["", "## Figures", ""] + [f"- [{f.name}]({f.relative_to(out)})" for f in figures]
    lines += ["", "## Time (s)", ""] + [f"- {k}: {v:.0f}" for k, v in seconds.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
