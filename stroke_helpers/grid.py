"""The experiment grid behind the paper's Tables 1 and 2, and the two cascades.

Rows are the paper's three configurations: ``base`` (plain skips, full-resolution loss),
``MR`` (multilevel refinement) and ``MR+ATT`` (refinement and cross-attention). Table 1's
columns are single modalities, Table 2's combinations (SPEC §1). Every run lives in
``OUT/runs/{row}_{modalities}``; a run that has finished and been evaluated is skipped, so a
rerun only does what is missing, and an interrupted one resumes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .cascade import run_cascade
from .inference import evaluate
from .runs import TrainConfig, is_finished
from .train import train

ROWS = {"base": (False, False), "MR": (False, True), "MR+ATT": (True, True)}  # (attention, multilevel)
TABLE1 = ("CT", "CBV", "CBF", "Tmax", "MTT")
TABLE2 = ("Tmax,CBV", "Tmax,CBF", "CBV,CBF", "Tmax,CBV,CBF", "CT,CBV,CBF,MTT,Tmax")
COLUMN_NAMES = {"CT": "NCCT", "CT,CBV,CBF,MTT,Tmax": "All"}
CASCADES = {"cascade": 0, "cascade_oof": 2}  # folder -> folds (0: in-sample Ms)
#: The stage-1 model of both cascades, and the model most chapters look at.
ALL_RUN = "MR+ATT_All"


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

    def run(self, row: str, modalities: str) -> Path:
        """Train (or finish) and evaluate one run unless it has been evaluated; its folder."""
        cfg = self.config(row, modalities)
        if not (Path(cfg.out) / "metrics.json").exists():
            if not is_finished(cfg.out, cfg.n_epochs):
                train(cfg, resume=(Path(cfg.out) / "last.pt").exists())
            evaluate(cfg.out, progress=self.progress)
        return Path(cfg.out)

    def cascade(self, folder: str) -> Path:
        """One of :data:`CASCADES`; stage 1 is exactly the MR+ATT All run, so it is reused."""
        run, folds = self.out / "runs" / folder, CASCADES[folder]
        if not (run / "metrics.json").exists():
            source = self.run("MR+ATT", TABLE2[-1])
            if not (run / "stage1").exists():
                shutil.copytree(source, run / "stage1", ignore=shutil.ignore_patterns("metrics*.json"))
            run_cascade(self.config("MR+ATT", TABLE2[-1], folder=run), folds=folds, resume=True)
            evaluate(run, progress=self.progress)
        return run

    def run_all(self) -> None:
        """Train and evaluate every missing run of both tables, then both cascades."""
        runs = list(self.runs())
        for k, (row, mods) in enumerate(runs):
            print(f"[{k + 1}/{len(runs)}] {run_name(row, mods)}", flush=True)
            self.run(row, mods)
        for folder, folds in CASCADES.items():
            print(f"cascade {folder} ({'out-of-fold' if folds else 'in-sample'} Ms)", flush=True)
            self.cascade(folder)
