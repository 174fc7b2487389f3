"""The experiment grid behind the paper's Tables 1 and 2, the cascades, and ``reproduce``.

Rows are the paper's three configurations: ``base`` (plain skips, full-resolution loss),
``MR`` (multilevel refinement) and ``MR+ATT`` (refinement and cross-attention). Table 1's
columns are single modalities, Table 2's combinations (SPEC §1). Every run lives in
``OUT/runs/{row}_{modalities}``; a run that has finished and been evaluated is skipped, so a
rerun only does what is missing, and an interrupted one resumes.

``python -m stroke_helpers reproduce`` = generate the synthetic dataset if absent, run the
grid and the cascades, execute every notebook with papermill into ``OUT/notebooks``, and
write ``OUT/report.md``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cascade import run_cascade
from .inference import evaluate
from .presets import get_preset
from .train import TrainConfig, is_finished, train

ROWS = {"base": (False, False), "MR": (False, True), "MR+ATT": (True, True)}  # (attention, multilevel)
TABLE1 = ("CT", "CBV", "CBF", "Tmax", "MTT")
TABLE2 = ("Tmax,CBV", "Tmax,CBF", "CBV,CBF", "Tmax,CBV,CBF", "CT,CBV,CBF,MTT,Tmax")
COLUMN_NAMES = {"CT": "NCCT", "CT,CBV,CBF,MTT,Tmax": "All"}

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
CASCADES = {"cascade": 0, "cascade_oof": 2}  # folder -> folds (0: in-sample Ms)


def column_name(modalities: str) -> str:
    return COLUMN_NAMES.get(modalities, modalities.replace(",", "+"))


def run_name(row: str, modalities: str) -> str:
    return f"{row}_{column_name(modalities)}"


@dataclass
class Grid:
    data: Path
    out: Path
    preset: str = "cpu"
    seed: int = 0
    progress: bool = True

    def config(self, row: str, modalities: str, folder: Path | None = None) -> TrainConfig:
        attention, multilevel = ROWS[row]
        return TrainConfig(
            data=str(self.data),
            out=str(folder or self.out / "runs" / run_name(row, modalities)),
            preset=self.preset,
            modalities=modalities,
            attention=attention,
            multilevel=multilevel,
            seed=self.seed,
            progress=self.progress,
        )

    def runs(self):
        for table in (TABLE1, TABLE2):
            for row in ROWS:
                for mods in table:
                    yield row, mods

    def run_all(self) -> None:
        """Train and evaluate every missing run of both tables, then both cascades."""
        todo = [(r, m) for r, m in self.runs() if not (self.out / "runs" / run_name(r, m) / "metrics.json").exists()]
        for k, (row, mods) in enumerate(todo):
            cfg = self.config(row, mods)
            print(f"[{k + 1}/{len(todo)}] {run_name(row, mods)}", flush=True)
            if not is_finished(cfg.out, cfg.n_epochs):
                train(cfg, resume=(Path(cfg.out) / "last.pt").exists())
            evaluate(cfg.out, progress=self.progress)
        all_mods = TABLE2[-1]
        for folder, folds in CASCADES.items():
            run = self.out / "runs" / folder
            if (run / "metrics.json").exists():
                continue
            print(f"cascade {folder} ({'out-of-fold' if folds else 'in-sample'} Ms)", flush=True)
            stage1 = run / "stage1"
            source = self.out / "runs" / run_name("MR+ATT", all_mods)
            if not stage1.exists():  # stage 1 is exactly the MR+ATT All run: reuse it
                shutil.copytree(source, stage1, ignore=shutil.ignore_patterns("metrics*.json"))
            run_cascade(self.config("MR+ATT", all_mods, folder=run), folds=folds, resume=True)
            evaluate(run, progress=self.progress)


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


def table_markdown(out: Path, columns, paper: dict, metric: str = "dice") -> str:
    """A markdown table: each cell ``ours (paper)`` as mean +- std."""
    ours = table(out, columns, metric)
    fmt = lambda c: "-" if c is None else f"{c[0]:.2f} ± {c[1]:.2f}"  # noqa: E731
    lines = ["| | " + " | ".join(column_name(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in ROWS:
        cells = [f"{fmt(o)} ({fmt(p)})" if metric == "dice" else fmt(o) for o, p in zip(ours[row], paper[row])]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cascade_summary(out: Path) -> dict[str, dict]:
    """``{folder: summary}`` of the evaluated cascades."""
    res = {}
    for folder in CASCADES:
        path = Path(out) / "runs" / folder / "metrics.json"
        if path.exists():
            res[folder] = json.loads(path.read_text())["summary"]
    return res


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
        "| | Dice | precision | recall | HD95 (mm) | AVD (mL) |",
        "|---|---|---|---|---|---|",
        f"| paper | {PAPER_CASCADE['dice']:.2f} | {PAPER_CASCADE['precision']:.2f} | | | |",
    ]
    for folder, s in cascade_summary(out).items():
        cells = " | ".join(
            f"{s[m]['mean']:.2f} ± {s[m]['std']:.2f}" for m in ("dice", "precision", "recall", "hd95", "avd")
        )
        lines.append(f"| {folder} | {cells} |")
    lines += ["", "## Figures", ""] + [f"- [{f.name}]({f.relative_to(out)})" for f in figures]
    lines += ["", "## Time (s)", ""] + [f"- {k}: {v:.0f}" for k, v in seconds.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


NOTEBOOKS = (
    "01_data_exploration",
    "02_cross_attention_module",
    "03_multilevel_refinement_training",
    "04_cascade_synthetic_maps",
    "05_results_and_figures",
)


def run_notebooks(notebook_dir: Path, out: Path, parameters: dict, progress: bool = True) -> list[Path]:
    """Execute every notebook with papermill into ``out/notebooks``."""
    import papermill as pm

    target = Path(out) / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    done = []
    for name in NOTEBOOKS:
        src = Path(notebook_dir) / f"{name}.ipynb"
        if not src.exists():
            raise FileNotFoundError(f"{src}: notebook missing")
        t0 = time.perf_counter()
        pm.execute_notebook(src, target / src.name, parameters=parameters, cwd=str(notebook_dir), progress_bar=False)
        print(f"notebook {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        done.append(target / src.name)
    return done


def notebook_paths(preset: str, data: str = "", results: str = "") -> tuple[str, Path, Path]:
    """What a notebook's parameters resolve to: ``(preset, DATA, RESULTS)``.

    Empty ``data`` means ``DATA_ROOT/synthetic`` (``synthetic_smoke`` for the smoke preset),
    with ``DATA_ROOT`` from ``$STROKE_DATA_DIR`` or the repository's ``data/``; empty
    ``results`` means ``$STROKE_RESULTS`` or ``results/PRESET``. ``$STROKE_PRESET`` overrides
    the preset (CI runs the committed notebooks with the smoke preset this way).
    """
    import os

    from .download import data_dir

    preset = os.environ.get("STROKE_PRESET", preset)
    get_preset(preset)
    root = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
    name = "synthetic_smoke" if preset == "smoke" else "synthetic"
    data_path = Path(data) if data else data_dir(None if "STROKE_DATA_DIR" in os.environ else root / "data") / name
    results_path = Path(results or os.environ.get("STROKE_RESULTS") or root / "results" / preset)
    if not (data_path / "TRAINING").is_dir():
        raise FileNotFoundError(
            f"{data_path}: no dataset; run `python -m stroke_helpers reproduce --preset {preset}` first"
        )
    return preset, data_path, results_path


def require_run(results: Path, folder: str) -> Path:
    """``RESULTS/runs/folder``, or a clear error saying how to make it."""
    run = Path(results) / "runs" / folder
    if not (run / "metrics.json").exists():
        raise FileNotFoundError(f"{run}: run missing; `python -m stroke_helpers reproduce` trains it")
    return run


def example_grid(results: Path, arrays, columns, study: str, z: int) -> list[list[dict]]:
    """One slice predicted by every row x column run (the paper's Figures 2 and 3)."""
    from .inference import Predictor
    from .isles import MODALITIES

    i = arrays.studies.index(study)
    images = arrays.images[arrays.study_index == i]
    truth = arrays.masks[arrays.study_index == i][z].numpy().astype(bool)
    grid = []
    for row in ROWS:
        cells = []
        for mods in columns:
            probs = Predictor(require_run(results, run_name(row, mods)), device="cpu")(images)
            shown = images[z, MODALITIES.index(mods.split(",")[0])].numpy()
            cells.append({"image": shown / max(shown.max(), 1e-6), "truth": truth, "pred": probs[z].numpy() > 0.5})
        grid.append(cells)
    return grid


def largest_lesion_slice(arrays, names: list[str]) -> tuple[str, int]:
    """The study and slice with the largest lesion among ``names`` (for example figures)."""
    best = (-1, names[0], 0)
    for name in names:
        idx = np.flatnonzero(arrays.study_index == arrays.studies.index(name))
        area = arrays.masks[idx].flatten(1).sum(1).numpy()
        best = max(best, (int(area.max()), name, int(area.argmax())))
    return best[1], best[2]
