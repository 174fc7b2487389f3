"""The experiment grid behind the paper's Tables 1 and 2, and the two cascades.

Rows are the paper's three configurations: ``base`` (plain skips, full-resolution loss),
``MR`` (multilevel refinement) and ``MR+ATT`` (refinement and cross-attention). Table 1's
columns are single modalities, Table 2's combinations (docs/decisions.md §1). Every run lives in
the results folder's run ``{row}_{modalities}`` (:class:`~stroke_helpers.runs.ResultsFolder`); a run that has finished and been evaluated is skipped, so a
rerun only does what is missing, and an interrupted one resumes.

Beside the paper's runs, the grid trains one standard baseline network, MONAI's AttentionUnet on
All at the preset's widths (:data:`MONAI_RUN`, through the architecture registry), and scores
the classical threshold methods (:data:`~stroke_helpers.baseline.THRESHOLDS`: no training) on
the networks' own validation and test studies, once (:meth:`Grid.thresholds`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .architectures import DEFAULT as DEFAULT_ARCHITECTURE
from .architectures import get_architecture
from .baseline import THRESHOLDS, score_thresholds, threshold_result
from .cascade import patient_groups, run_cascade
from .engine import barrier, is_main_process, resolve_device, setup_distributed
from .inference import evaluate
from .isles import discover_cases, read_patients
from .modalities import ALL
from .presets import Preset, get_preset
from .runs import (
    ResultsFolder,
    RunFolder,
    TrainConfig,
    is_finished,
    metrics_path,
    read_metrics,
    read_split,
    write_json,
)
from .train import train
from .truth import has_test_truth

ROWS = {"base": (False, False), "MR": (False, True), "MR+ATT": (True, True)}  # (attention, multilevel)
# Columns in the paper's order (run folders are named after them, so they keep the paper's
# spelling); "All" is every input of the modality table, in channel order.
TABLE1 = ("CT", "CBV", "CBF", "Tmax", "MTT")
TABLE2 = ("Tmax,CBV", "Tmax,CBF", "CBV,CBF", "Tmax,CBV,CBF", ALL)
COLUMN_NAMES = {"CT": "NCCT", ALL: "All"}
CASCADES = {
    "cascade": 0,
    "cascade_oof": 5,
}  # folder -> folds (0: in-sample Ms; 5: each fold model sees 80 % of the data)
#: The stage-1 model of both cascades, and the model most chapters look at.
ALL_RUN = "MR+ATT_All"
#: The standard baseline network (architectures.py): a row named after its architecture,
#: trained on All only, with the grid's own seed.
MONAI = "monai-attention-unet"
ARCHITECTURE_ROWS = {MONAI: "MONAI AttentionUnet"}  # row -> the label the tables show
EXTRA_RUNS = ((MONAI, ALL),)


def column_name(modalities: str) -> str:
    return COLUMN_NAMES.get(modalities, modalities.replace(",", "+"))


def run_name(row: str, modalities: str) -> str:
    return f"{row}_{column_name(modalities)}"


#: MONAI's AttentionUnet on All: ``monai-attention-unet_All``.
MONAI_RUN = run_name(MONAI, ALL)


def seed_folder(name: str, seed: int, base_seed: int = 0) -> str:
    """``name`` for the grid's own seed, ``name_seedN`` for the extra seeds."""
    return name if seed == base_seed else f"{name}_seed{seed}"


@dataclass
class Grid:
    """The runs of both tables (seed ``seed``), the All row again for each extra seed, and both
    cascades for every seed; each run evaluated on its validation studies and, where the data
    has test truth, on the held-out TESTING split (never used for training or selection)."""

    data: Path
    results: Path
    preset: Preset | str = "cpu"  # a name is resolved once, here
    seed: int = 0
    progress: bool = True
    seeds: int | None = None  # None: the preset's
    precision: str = "auto"  # fp32 measures what a CPU without bf16 units runs
    options: dict = field(default_factory=dict)  # more TrainConfig fields for every run (keep_last, compile ...)
    rescore_thresholds: bool = False  # run_all scores the thresholds again even where their scores are

    def __post_init__(self):
        self.preset = get_preset(self.preset) if isinstance(self.preset, str) else self.preset

    def _join(self) -> None:
        """Under torchrun, join the process group before anything else: every rank trains each
        run, rank 0 alone writes (copies, scores) while the others wait at a barrier."""
        setup_distributed(resolve_device(self.options.get("device", "auto")))

    @property
    def all_seeds(self) -> list[int]:
        n = self.preset.seeds if self.seeds is None else self.seeds
        return [self.seed + k for k in range(n)]

    def config(self, row: str, modalities: str, folder: Path | None = None, seed: int | None = None) -> TrainConfig:
        """A run of the paper's model (``row`` one of :data:`ROWS`) or of another architecture
        (``row`` one of :data:`ARCHITECTURE_ROWS`: its own switches)."""
        if row in ROWS:
            architecture, (attention, multilevel) = DEFAULT_ARCHITECTURE, ROWS[row]
        else:
            architecture, attention, multilevel = get_architecture(row).name, None, None
        seed = self.seed if seed is None else seed
        return TrainConfig(
            data=str(self.data),
            out=str(folder or ResultsFolder(self.results).run(seed_folder(run_name(row, modalities), seed, self.seed))),
            preset=self.preset.name,
            modalities=modalities,
            architecture=architecture,
            attention=attention,
            multilevel=multilevel,
            seed=seed,
            precision=self.precision,
            progress=self.progress,
            **self.options,
        )

    def runs(self):
        for table in (TABLE1, TABLE2):
            for row in ROWS:
                for mods in table:
                    yield row, mods

    def evaluate(self, run: Path) -> None:
        """``metrics.json`` (validation) and, when the data allows, ``metrics_test.json`` (rank 0
        only under torchrun; the others wait)."""
        if is_main_process():
            device = self.options.get("device", "auto")
            if not metrics_path(run).exists():
                evaluate(run, device=device, progress=self.progress)
            if has_test_truth(self.data) and not metrics_path(run, "test").exists():
                evaluate(run, split="test", device=device, progress=self.progress)
        barrier()

    def run(self, row: str, modalities: str, seed: int | None = None) -> Path:
        """Train (or finish) and evaluate one run unless it has been evaluated; its folder."""
        self._join()
        cfg = self.config(row, modalities, seed=seed)
        if not is_finished(cfg.out, cfg.n_epochs):
            train(cfg, resume=RunFolder(cfg.out).config.exists())  # a killed run: its settings, perhaps last.pt
        self.evaluate(Path(cfg.out))
        return Path(cfg.out)

    def cascade(self, folder: str, seed: int | None = None) -> Path:
        """One of :data:`CASCADES`; stage 1 is exactly the MR+ATT All run of that seed, so it is reused."""
        self._join()
        seed = self.seed if seed is None else seed
        run, folds = ResultsFolder(self.results).run(seed_folder(folder, seed, self.seed)), CASCADES[folder]
        if not run.is_cascade:
            source = RunFolder(self.run("MR+ATT", TABLE2[-1], seed))
            if not run.stage1.path.exists() and is_main_process():
                source.copy(run.stage1)  # without its scores: the cascade is scored as a whole
            barrier()
            folds = self.fold_count(folds, source)
            run_cascade(self.config("MR+ATT", TABLE2[-1], folder=run.path, seed=seed), folds=folds, resume=True)
        self.evaluate(run.path)
        return run.path

    def fold_count(self, folds: int, stage1: RunFolder) -> int:
        """``folds``, or fewer (said in a line) when stage 1's training split has fewer patients:
        a fold must hold out at least one patient (small datasets, e.g. the tests' phantom)."""
        if not folds:
            return folds
        patients = read_patients(self.data)
        train = read_split(stage1.path)["train"]
        groups = len(patient_groups(train, patients))
        if groups < folds:
            print(f"{folds} folds need {folds} training patients; this split has {groups}: using {groups} folds")
        return min(folds, groups)

    def threshold_studies(self) -> dict[str, list[str]]:
        """``{split: studies}`` the networks are scored on: the validation studies of
        :data:`ALL_RUN` (every run of the grid has the same split) and, where the data has test
        truth, every TESTING study."""
        studies = {"val": read_split(ResultsFolder(self.results).run(ALL_RUN).path)["val"]}
        if has_test_truth(self.data):
            studies["test"] = [f"TESTING/{case.name}" for case in discover_cases(self.data, "TESTING")]
        return studies

    def thresholds(self, force: bool = False) -> list[Path]:
        """Score the classical threshold methods on the networks' studies
        (:meth:`threshold_studies`) with the networks' metrics and write their scores
        (``RESULTS/thresholds/<method>/metrics*.json``); the files written. Scores already
        there for the same studies are kept unless ``force`` (no training: seconds, once)."""
        self._join()
        written = []
        if is_main_process():
            results = ResultsFolder(self.results)
            for split, studies in self.threshold_studies().items():
                paths = {m: results.threshold(m).metrics(split) for m in THRESHOLDS}
                scored = [sorted(r["study"] for r in read_metrics(p)["studies"]) for p in paths.values() if p.is_file()]
                if not force and len(scored) == len(paths) and all(s == sorted(studies) for s in scored):
                    continue
                if scored and not force:
                    print(f"threshold scores ({split}) are not on the networks' {len(studies)} studies: scoring again")
                rows = score_thresholds(self.data, studies, self.progress)
                for method, path in paths.items():
                    write_json(threshold_result(method, split, rows[method]), path)
                    written.append(path)
        barrier()
        return written

    def todo(self) -> list[tuple[str, tuple]]:
        """Every step of the grid in order: ``("run", (row, modalities, seed))``,
        ``("thresholds", ("thresholds", seed))`` (after :data:`ALL_RUN`, whose studies they are
        scored on) or ``("cascade", (folder, seed))``."""
        steps = [("run", (row, mods, self.seed)) for row, mods in self.runs()]
        steps += [("run", (row, mods, self.seed)) for row, mods in EXTRA_RUNS]
        steps += [("thresholds", ("thresholds", self.seed))]
        steps += [("run", (row, TABLE2[-1], s)) for s in self.all_seeds[1:] for row in ROWS]
        steps += [("cascade", (folder, s)) for s in self.all_seeds for folder in CASCADES]
        return steps

    def run_all(self) -> dict[str, float]:
        """Train and evaluate every missing step; returns the wall seconds of each step."""
        seconds = {}
        steps = self.todo()
        for k, (kind, args) in enumerate(steps):
            name = seed_folder(run_name(*args[:2]) if kind == "run" else args[0], args[-1], self.seed)
            print(f"[{k + 1}/{len(steps)}] {name}", flush=True)
            t0 = time.perf_counter()
            if kind == "run":
                self.run(*args)
            elif kind == "thresholds":
                self.thresholds(force=self.rescore_thresholds)
            else:
                self.cascade(*args)
            seconds[name] = time.perf_counter() - t0
        return seconds
