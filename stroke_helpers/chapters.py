"""Helpers behind the chapters: where a notebook's data and results are, the notebook runner,
and the computations whose results the notebooks show (each returns arrays or numbers that a
function of :mod:`stroke_helpers.figures` draws)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from .augment import paper_augmentation
from .baseline import classical_baseline
from .cascade import ms_leak
from .datasets import SliceArrays, brain_mask, build_slices
from .download import data_dir
from .figures import batch_figure, darkening_figure, maps_side_by_side, segmentation_grid
from .grid import ALL_RUN, ROWS, column_name, run_name
from .inference import THRESHOLD, Predictor
from .isles import MODALITIES, Study, discover_cases, load_study, read_patients
from .metrics import dice
from .perfusion import core_rcbf, hypoperfusion_tmax, reference_hemisphere, select_aif, tissue_mask
from .phantom import read_cases, read_truth
from .phantom.anatomy import SLICE_MM
from .phantom.realism import realism_figure
from .presets import get_preset
from .runs import (
    RunError,
    has_weights,
    in_shipped_checkpoint,
    load_model,
    metrics_path,
    read_history,
    read_split,
    study_indices,
)
from .shipped import GRID_TIME, is_shipped, recorded_leakage, results_for_chapters

REPOSITORY = Path(__file__).resolve().parents[1]
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


def publish_notebooks(executed: Path, notebook_dir: Path = REPOSITORY / "notebooks", names=NOTEBOOKS) -> list[Path]:
    """Copy executed chapters (``reproduce``'s ``OUT/notebooks``) over the repository's, with
    their outputs but without papermill's injected-parameters cell and run paths, so that the
    committed notebooks keep literal parameters that resolve on any machine."""
    import nbformat

    done = []
    for name in names:
        nb = nbformat.read(Path(executed) / f"{name}.ipynb", as_version=4)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        papermill = nb.metadata.get("papermill", {})
        for key in ("input_path", "output_path", "parameters"):
            papermill.pop(key, None)
        nbformat.write(nb, Path(notebook_dir) / f"{name}.ipynb")
        done.append(Path(notebook_dir) / f"{name}.ipynb")
    return done


def checkout_root() -> Path:
    """The folder ``data/`` and ``results/`` are looked for in: the working directory, or its
    parent when that is ``notebooks/`` (where Jupyter starts a chapter)."""
    return Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()


def notebook_paths(preset: str, data: str = "", results: str = "") -> tuple[str, Path, Path]:
    """What a notebook's parameters resolve to: ``(preset, DATA, RESULTS)``.

    Empty ``data`` means ``DATA_ROOT/<the preset's dataset>`` (``synthetic``; ``synthetic_smoke``
    for the smoke preset), with ``DATA_ROOT`` from ``$STROKE_DATA_DIR`` or the repository's
    ``data/``; empty ``results`` means ``$STROKE_RESULTS`` or ``results/PRESET``.
    ``$STROKE_PRESET`` overrides the preset (CI runs the committed notebooks with the smoke
    preset this way). When the default results folder has no grid run yet, the shipped checkpoint
    stands in for it if it fits the preset and data (:mod:`stroke_helpers.shipped`), and a printed
    line says so.
    """
    preset = os.environ.get("STROKE_PRESET", preset)
    settings = get_preset(preset)
    root = checkout_root()
    default_root = data_dir(None if "STROKE_DATA_DIR" in os.environ else root / "data")
    data_path = Path(data) if data else default_root / settings.dataset
    results_path = Path(results or os.environ.get("STROKE_RESULTS") or root / "results" / preset)
    if not (data_path / "TRAINING").is_dir():
        raise FileNotFoundError(
            f"{data_path}: no dataset; run `python -m stroke_helpers reproduce --preset {preset}` first"
        )
    if not (results or os.environ.get("STROKE_RESULTS")):
        results_path, note = results_for_chapters(results_path, data_path, preset)
        if note:
            print(note)
    return preset, data_path, results_path


def figures_folder(results: Path) -> Path:
    """Where chapter 05 saves its figure files: ``RESULTS/figures``, or ``results/shipped/figures``
    when the results are the shipped checkpoint (which is never written to)."""
    folder = (checkout_root() / "results" / "shipped" if is_shipped(results) else Path(results)) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_run(results: Path, folder: str) -> Path:
    """``RESULTS/runs/folder``, or a clear error saying how to make it."""
    run = Path(results) / "runs" / folder
    if not metrics_path(run).exists():
        raise FileNotFoundError(f"{run}: run missing; `python -m stroke_helpers reproduce` trains it")
    return run


def example_grid(results: Path, arrays, columns, study: str, z: int) -> list[list[dict]]:
    """One slice predicted by every row x column run (the paper's Figures 2 and 3)."""
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


# --- chapter 1: the data --------------------------------------------------------------------------


def load_studies(data: Path, n: int | None = None, split: str = "TRAINING") -> list[Study]:
    """The first ``n`` studies of a split (all of them by default), with patient ids."""
    cases = discover_cases(data, split)[:n]
    patients = read_patients(data)
    return [load_study(c, patient=patients.get(f"{split}/{c.name}")) for c in cases]


def lesion_slice(study: Study) -> int:
    """The slice with the most lesion (the middle one when there is no lesion)."""
    if study.mask is None or not study.mask.any():
        return study.n_slices // 2
    return int(np.argmax(study.mask.sum(axis=(0, 1))))


def lesion_volumes(data: Path) -> np.ndarray:
    """Every training study's lesion volume (mL)."""
    return np.array([load_study(c, modalities=(), require_mask=True).lesion_ml for c in discover_cases(data)])


def perfusion_curves(study: Study, z: int) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """``(times, curves, summary)``: the automatic arterial input and the mean time-attenuation
    curves (HU) of normal tissue, penumbra (Tmax > 6 s, not core) and core (rCBF < 30 %) in slice ``z``."""
    series = study.pwi.astype(np.float32)
    brain = brain_mask(study)
    tissue = tissue_mask(study.CT, brain)
    aif, arteries = select_aif(series, brain)
    core = core_rcbf(study.CBF, tissue, study.Tmax)
    penumbra = hypoperfusion_tmax(study.Tmax, tissue) & ~core
    # healthy tissue: the contralateral hemisphere's parenchyma, outside the expert lesion and
    # not hypoperfused (a region, not a Tmax cut that only the earliest voxels pass)
    normal = reference_hemisphere(study.CBF, tissue, study.Tmax) & ~hypoperfusion_tmax(study.Tmax, tissue)
    if study.mask is not None:
        normal &= ~study.mask.astype(bool)
    curves = {"arterial input": aif + series[..., :2].mean()}
    for name, region in (("normal", normal), ("penumbra", penumbra), ("core", core)):
        r = region[:, :, z]
        if r.any():
            curves[f"{name} ({r.sum()} voxels)"] = series[:, :, z][r].mean(axis=0)
    times = np.arange(series.shape[-1]) * study.pwi_time_step
    summary = (
        f"{series.shape[-1]} frames every {study.pwi_time_step:.2f} s; "
        f"AIF from {arteries.sum()} voxels, peak {aif.max():.0f} HU"
    )
    return times, curves, summary


# --- chapter 1: the phantom's truth as the answer key ----------------------------------------------


def has_truth(data: Path) -> bool:
    """Whether ``data`` is a synthetic dataset with the phantom's ``truth/`` folder."""
    return (Path(data) / "truth" / "cases.csv").exists()


def no_truth(data: Path) -> str:
    """Why an answer key is missing: real data has no truth folder."""
    return f"{data}: no truth folder (only the synthetic dataset has one)"


def true_vs_deconvolved(data: Path, study: Study, z: int):
    """The phantom's true maps above the maps deconvolved from its noisy 4D series (what ISLES
    provides, here divided by the study's unit scale), same window per column, and a table of
    their medians in healthy tissue and in the true core. ``(None, reason)`` for data without a
    truth folder (real ISLES)."""
    if not has_truth(data):
        return None, no_truth(data)
    truth = read_truth(data, study.name)
    row = next(r for r in read_cases(data) if f"{r['split']}/{r['case']}" == study.name)
    # the phantom, like RAPID, writes CBF and CBV in uncalibrated units: undo its scale
    scale = {"CBF": float(row["cbf_scale"]), "CBV": float(row["cbv_scale"]), "MTT": 1.0, "Tmax": 1.0}
    deconvolved = {m: study.images[m].astype(np.float32) / scale[m] for m in scale}
    tissue = tissue_mask(study.CT, brain_mask(study))
    healthy = tissue & ~(truth["core"] | truth["penumbra"]).astype(bool)
    core = tissue & truth["core"].astype(bool)
    lines = [f"median      {'healthy: true':>14s} {'deconvolved':>12s}   {'core: true':>11s} {'deconvolved':>12s}"]
    for m, unit in (("CBF", "mL/100g/min"), ("CBV", "mL/100g"), ("MTT", "s"), ("Tmax", "s")):
        t, d = truth[m], deconvolved[m]
        tc, dc = (np.median(t[core]), np.median(d[core])) if core.any() else (np.nan, np.nan)
        lines.append(
            f"{m:4s} {unit:>11s} {np.median(t[healthy]):9.2f} {np.median(d[healthy]):12.2f}   {tc:11.2f} {dc:12.2f}"
        )
    fig = maps_side_by_side({"true (phantom)": truth, "deconvolved": deconvolved}, z)
    return fig, "\n".join(lines)


def truth_regions(data: Path, study: Study, z: int):
    """The true core and core + penumbra against the expert mask (OT), on slice ``z``'s Tmax:
    how much of the answer the perfusion state at CTP time holds. ``(None, reason)`` without truth."""
    if not has_truth(data):
        return None, no_truth(data)
    truth = read_truth(data, study.name)
    ot = study.mask.astype(bool)
    core, at_risk = truth["core"].astype(bool), (truth["core"] | truth["penumbra"]).astype(bool)
    tmax = np.clip(study.Tmax[:, :, z] / 20, 0, 1.5)
    row = [
        {
            "image": tmax,
            "truth": ot[:, :, z],
            "pred": r[:, :, z],
            "caption": f"{name}: Dice {dice(r, ot):.2f}",
            "window": (0, 1.5),
            "label": "Tmax / 20 s",
        }
        for name, r in (("true core", core), ("core + penumbra", at_risk))
    ]
    inside = (ot & at_risk).sum() / max(ot.sum(), 1)
    text = (
        f"{study.name}: the expert mask covers {ot.sum() * study.voxel_ml:.1f} mL, the true core "
        f"{core.sum() * study.voxel_ml:.1f} mL and core + penumbra {at_risk.sum() * study.voxel_ml:.1f} mL; "
        f"{100 * inside:.0f} % of the expert mask lies in core + penumbra"
    )
    return segmentation_grid([row], col_labels=("true core (blue)", "core + penumbra (blue)")), text


def ncct_darkening(data: Path, n: int | None = None):
    """The core's darkening on non-contrast CT against time since onset, over the training
    studies with a core: measured (median HU of healthy tissue minus median HU of the true core)
    and as the phantom set it. ``(None, reason)`` without truth."""
    if not has_truth(data):
        return None, no_truth(data)
    rows = [r for r in read_cases(data) if r["split"] == "TRAINING"][:n]
    onset, measured, designed = [], [], []
    for r in rows:
        name = f"TRAINING/{r['case']}"
        study = load_study(Path(data) / name, modalities=("CT",), require_mask=False)
        truth = read_truth(data, name)
        core = truth["core"].astype(bool) & (study.CT > 15) & (study.CT < 60)
        healthy = truth["brain"].astype(bool) & ~(truth["core"] | truth["penumbra"]).astype(bool)
        healthy &= (study.CT > 15) & (study.CT < 60)
        if core.sum() < 20:
            continue
        onset.append(float(r["onset_to_ct_min"]))
        measured.append(float(np.median(study.CT[healthy]) - np.median(study.CT[core])))
        designed.append(float(r["ct_core_darkening_hu"]))
    onset, measured, designed = map(np.array, (onset, measured, designed))
    fig = darkening_figure(onset, measured, designed)
    r = np.corrcoef(onset, measured)[0, 1]
    return (
        fig,
        f"{len(onset)} studies with a core of 20 voxels or more; correlation of darkening with onset time r = {r:.2f}",
    )


def classical_thresholds(study: Study, z: int) -> tuple[list[list[dict]], str]:
    """The rCBF < 30 % core and the Tmax > 6 s region against the expert mask: one row of
    :func:`~stroke_helpers.figures.segmentation_grid` panels for slice ``z``, and their Dice
    (vessels and CSF excluded, as in :func:`~stroke_helpers.baseline.classical_baseline`)."""
    tissue = tissue_mask(study.CT, brain_mask(study), cbv=study.CBV)
    ot = study.mask.astype(bool)
    regions = {
        "rCBF < 30 %": core_rcbf(study.CBF, tissue, study.Tmax),
        "Tmax > 6 s": hypoperfusion_tmax(study.Tmax, tissue),
    }
    ct = np.clip(study.CT[:, :, z] / 100, 0, 1)
    row = [{"image": ct, "truth": ot[:, :, z], "pred": r[:, :, z]} for r in regions.values()]
    text = f"{study.name}: " + ", ".join(f"{k} Dice {dice(r, ot):.3f}" for k, r in regions.items())
    return [row], text


def baseline_summary(data: Path) -> str:
    """The classical rCBF < 30 % core scored over every training study, in one line."""
    d = np.array([r["dice"] for r in classical_baseline(data, progress=False)])
    return f"rCBF < 30 % over {len(d)} studies: Dice {d.mean():.3f} ± {d.std():.3f} (real ISLES 2018: 0.29)"


def real_ct() -> np.ndarray | None:
    """The one real ISLES 2018 CT (training case 1) from ``../shared/real`` beside the
    repository, when it is there (it is never part of the repository)."""
    path = REPOSITORY.parent / "shared" / "real" / "SMIR.Brain.XX.O.CT.345562.nii"
    return np.asarray(nib.load(path).dataobj, dtype=np.float32) if path.exists() else None


def realism(data: Path, study: Study, z: int):
    """The phantom's CT slice ``z`` beside the real ISLES CT and the real-CT template at the
    same MNI height (:func:`stroke_helpers.phantom.realism.realism_figure`); ``(None, None)``
    when ``../shared`` (never part of the repository) is not beside it."""
    real, template = real_ct(), REPOSITORY.parent / "shared" / "ct-template" / "scct_stripped_hu.nii.gz"
    if real is None or not template.exists():
        return None, None
    row = next(r for r in read_cases(data) if f"{r['split']}/{r['case']}" == study.name)
    mni_z = float(row["first_slice_mm"]) + SLICE_MM * z
    return realism_figure(study.CT, real, template, z, real.shape[2] // 2, mni_z)


def attention_shapes(module, x_e, x_d) -> str:
    """Every tensor of one additive cross-attention step with its shape, and whether the
    refined skip equals ``X_e`` times the gate (chapter 02's walk through the equation)."""
    out = module(x_e, x_d)
    steps = {
        "X_e": x_e,
        "X_d": x_d,
        "W_e X_e + W_d X_d": module.w_e(x_e) + module.w_d(x_d),
        "q = relu(...)": out.similarities,
        "a = sigmoid(W_phi q)": out.attention,
        "X'_e = X_e * a": out.refined,
    }
    lines = [f"{name:22s} {tuple(t.shape)}" for name, t in steps.items()]
    return "\n".join([*lines, f"X'_e == X_e * a: {torch.allclose(out.refined, x_e * out.attention)}"])


# --- chapters 2 and 3: one model looked at closely -----------------------------------------------


def validation_slices(arrays: SliceArrays, run: Path, n: int) -> np.ndarray:
    """Indices of the ``n`` validation slices of ``run`` with the largest lesions, largest first."""
    in_val = np.isin(arrays.study_index, study_indices(arrays, read_split(run)["val"]))
    area = arrays.masks.flatten(1).sum(1).numpy() * in_val
    return np.argsort(-area, kind="stable")[:n]


@dataclass
class AttentionExamples:
    """Validation slices and the attention maps of an untrained and the trained model.

    ``images (N, S, S)``: the Tmax channel (what the figures show); ``masks (N, S, S)``;
    ``maps``: ``{"untrained" | "trained": {level: (N, h, w)}}``; for
    :class:`~stroke_helpers.widgets.AttentionExplorer`, ``inputs (N, C, S, S)``: the model's input
    channels, named in ``channels``, and ``similarities``: like ``maps``, the positive
    similarities averaged over their features."""

    images: np.ndarray
    masks: np.ndarray
    maps: dict[str, dict[int, np.ndarray]]
    inputs: np.ndarray | None = None
    channels: list[str] = field(default_factory=list)
    similarities: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def means(self) -> str:
        return "\n".join(
            f"{name}: " + ", ".join(f"level {lvl} mean {a.mean():.2f}" for lvl, a in sorted(m.items()))
            for name, m in self.maps.items()
        )

    def slice_maps(self, i: int, model: str = "trained") -> dict[int, np.ndarray]:
        return {lvl: a[i] for lvl, a in self.maps[model].items()}


def attention_examples(run: Path, data: Path, n: int) -> AttentionExamples:
    """The attention maps of ``run``'s model and of the same architecture untrained, on the
    ``n`` validation slices with the largest lesions."""
    trained, config = load_model(run)
    torch.manual_seed(config.seed)
    untrained = config.build_model().eval()
    arrays = build_slices(data, "TRAINING", config.settings.size, progress=False)
    idx = validation_slices(arrays, run, n)
    x = arrays.images[idx][:, config.channels]
    maps, similarities = {}, {}
    with torch.no_grad():
        for name, m in (("untrained", untrained), ("trained", trained)):
            gates = m(x, attention=True).attention
            maps[name] = {lvl: g.attention[:, 0].numpy() for lvl, g in gates.items()}
            similarities[name] = {lvl: g.similarities.mean(1).numpy() for lvl, g in gates.items()}
    tmax = arrays.images[idx, MODALITIES.index("Tmax")].numpy()
    names = [MODALITIES[c] for c in config.channels]
    return AttentionExamples(tmax, arrays.masks[idx].numpy(), maps, x.numpy(), names, similarities)


@dataclass
class ExampleSlice:
    """One validation slice through a trained run: ``image (1, C, S, S)`` (the run's channels),
    ``mask (1, 1, S, S)``, and ``tmax (S, S)`` to show."""

    model: torch.nn.Module
    config: object
    image: torch.Tensor
    mask: torch.Tensor
    tmax: np.ndarray


def example_slice(run: Path, data: Path, example: int = 0) -> ExampleSlice:
    """The ``example``-th largest validation lesion slice of ``run``, with its model."""
    model, config = load_model(run)
    arrays = build_slices(data, "TRAINING", config.settings.size, progress=False)
    j = int(validation_slices(arrays, run, example + 1)[-1])
    image = arrays.images[j : j + 1]
    tmax = image[0, MODALITIES.index("Tmax")].numpy()
    return ExampleSlice(model, config, image[:, config.channels], arrays.masks[j : j + 1, None].float(), tmax)


def network_batch(data: Path, preset: str = "cpu", n: int = 4, seed: int = 0):
    """What the network sees: ``n`` training slices with lesions, preprocessed to the preset's
    size and augmented as in training (seeded), drawn as one row per slice and one column per
    input channel (:func:`~stroke_helpers.figures.batch_figure`)."""
    arrays = build_slices(data, "TRAINING", get_preset(preset).size, progress=False)
    area = arrays.masks.flatten(1).sum(1).numpy()
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(np.flatnonzero(area > 0), size=n, replace=False))
    augment = paper_augmentation(get_preset(preset).augment, seed=seed)
    images, masks = augment(arrays.images[pick].float(), arrays.masks[pick][:, None].float())
    names = [f"{arrays.studies[arrays.study_index[i]]}, z={arrays.z[i]}" for i in pick]
    return batch_figure(images.numpy(), masks[:, 0].numpy(), list(MODALITIES), names)


def histories(results: Path, column: str = "All") -> dict[str, list[dict]]:
    """The learning curves of the three configurations of one column."""
    return {row: read_history(require_run(results, f"{row}_{column}")) for row in ROWS}


# --- chapters 4 and 5: the cascade and the paper's results ----------------------------------------


def study_slices(arrays: SliceArrays, study: str) -> tuple[torch.Tensor, np.ndarray]:
    """``(images (Z, 5, S, S), truth (Z, S, S) bool)`` of one study."""
    idx = arrays.study_index == arrays.studies.index(study)
    return arrays.images[idx], arrays.masks[idx].numpy().astype(bool)


def predict_slice(predictor: Predictor, arrays: SliceArrays, study: str, z: int) -> dict:
    """A :func:`~stroke_helpers.figures.segmentation_grid` panel: the study's Tmax at slice
    ``z``, its expert mask and the predictor's mask."""
    images, truth = study_slices(arrays, study)
    shown = images[z, MODALITIES.index("Tmax")].numpy()
    return {"image": shown, "truth": truth[z], "pred": predictor(images)[z].numpy() > THRESHOLD}


@dataclass
class CascadeExample:
    """One validation slice through a cascade: input channels, the synthetic map and the truth."""

    study: str
    z: int
    channels: dict[str, np.ndarray]
    ms: np.ndarray
    truth: np.ndarray

    def summary(self) -> str:
        inside = self.ms[self.truth].mean() if self.truth.any() else float("nan")
        return (
            f"{self.study}, slice {self.z}: Ms range {self.ms.min():.2f}-{self.ms.max():.2f}; "
            f"mean inside the lesion {inside:.2f}, outside {self.ms[~self.truth].mean():.2f}"
        )


def cascade_example(cascade: Predictor, arrays: SliceArrays, example: int = 0) -> CascadeExample:
    """The largest lesion slice among the cascade's validation studies (from the ``example``-th on)."""
    val = cascade.split["val"]
    study, z = largest_lesion_slice(arrays, val[example:] or val)
    images, truth = study_slices(arrays, study)
    ms = cascade.synthetic_map(images[z : z + 1])[0, 0].numpy()
    channels = {m: images[z, MODALITIES.index(m)].numpy() for m in ("CT", "CBF", "CBV", "Tmax")}
    return CascadeExample(study, z, channels, ms, truth[z])


def synthetic_map_file(run: Path, data: Path, study: str) -> str:
    """Where a study's ``Ms.nii.gz`` is, and whether it lies on the study's own CT grid."""
    path = run / "synthetic_maps" / study / "Ms.nii.gz"
    if not path.exists():
        why = " (the shipped checkpoint leaves these files out)" if in_shipped_checkpoint(run) else ""
        return (
            f"{path}: not here{why}; the cascade writes them when it trains: "
            "`python -m stroke_helpers cascade --data DATA --out runs/cascade`, about 2 minutes"
        )
    ct = load_study(data / study, modalities=("CT",), require_mask=False)
    img = nib.load(path)
    same = img.shape == ct.shape and np.allclose(img.affine, ct.header.get_best_affine())
    return f"{path} {img.shape} same grid as the CT: {same}"


def leakage(results: Path, arrays: SliceArrays) -> dict[str, float]:
    """Dice of ``Ms > 0.5`` against the lesions: on the training slices of the in-sample and of
    the out-of-fold cascade (what each hands stage 2 in training), and on the validation slices
    (the reference: a map from a model that never saw them, as every new study gets). A training
    map far above the reference is a leak (:func:`~stroke_helpers.cascade.ms_leak`). A cascade
    without its maps (the shipped checkpoint's out-of-fold one) gives the figures recorded when
    it was shipped, or is left out; a printed line says which."""
    out = {}
    for name, folder in (("in-sample", "cascade"), ("out-of-fold", "cascade_oof")):
        try:
            leak = ms_leak(Path(results) / "runs" / folder, arrays)
        except RunError as exc:
            leak = recorded_leakage(results).get(folder)
            if leak is None:
                print(f"{name}: {exc}; `python -m stroke_helpers reproduce` trains that cascade")
                continue
            print(f"{name}: recorded from the grid's own maps when the checkpoint was shipped (its maps do not ship)")
        out[name], out["validation"] = leak["training"], leak["validation"]
    return out


def paper_figure(results: Path, arrays: SliceArrays, columns, study: str, z: int, title: str):
    """The paper's Figure 2 (``columns`` = Table 1) or 3 (Table 2) for one slice; None, with a
    printed line, when some of its runs have no weights (the shipped checkpoint has two)."""
    missing = [
        run_name(r, c) for r in ROWS for c in columns if not has_weights(Path(results) / "runs" / run_name(r, c))
    ]
    if missing:
        print(
            f"{title.split(' (')[0]}: needs the weights of {len(missing)} runs that {results} does not have ({', '.join(missing[:3])}, ...); "
            f"`python -m stroke_helpers reproduce --preset cpu` trains them ({GRID_TIME})"
        )
        return None
    grid = example_grid(results, arrays, columns, study, z)
    fig = segmentation_grid(grid, row_labels=tuple(ROWS), col_labels=[column_name(c) for c in columns])
    fig.suptitle(title, fontsize=9)
    return fig


def figure4(results: Path, arrays: SliceArrays, n: int = 4):
    """The paper's Figure 4: stage 1, the cascade and the synthetic map on ``n`` validation
    studies from the smallest lesion to the largest (at quantiles of their largest lesion slice,
    since the paper's case is made on small lesions), each at its largest lesion slice."""
    stage1, cascade = Predictor(require_run(results, ALL_RUN), "cpu"), Predictor(require_run(results, "cascade"), "cpu")
    areas = sorted((int(study_slices(arrays, s)[1].sum((1, 2)).max()), s) for s in cascade.split["val"])
    areas = [a for a in areas if a[0] > 0]
    picks = sorted({round(q * (len(areas) - 1)) for q in np.linspace(0, 1, n)})
    grid: list[list[dict]] = [[], [], []]
    for _, study in (areas[i] for i in picks):
        images, truth = study_slices(arrays, study)
        z = int(truth.reshape(len(truth), -1).sum(1).argmax())
        grid[0].append(predict_slice(stage1, arrays, study, z))
        grid[1].append(predict_slice(cascade, arrays, study, z))
        ms = cascade.synthetic_map(images[z : z + 1])[0, 0].numpy()
        caption = f"{study.split('/')[-1]}, {int(truth[z].sum())} px lesion"
        grid[2].append(
            {
                "image": ms,
                "truth": truth[z],
                "pred": np.zeros_like(truth[z]),
                "caption": caption,
                "cmap": "inferno",
                "window": (0, 1.5),
                "label": "Ms (a.u.)",
            }
        )
    return segmentation_grid(grid, row_labels=("stage 1", "cascade", "synthetic map Ms"))


def validation_probabilities(predictor: Predictor, arrays: SliceArrays) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per validation study of ``predictor``'s run: probabilities and expert masks ``(Z, S, S)``."""
    pairs = [study_slices(arrays, s) for s in predictor.split["val"]]
    return [predictor(images).numpy() for images, _ in pairs], [truth for _, truth in pairs]
