"""What each chapter computes: the arrays, numbers and :class:`~stroke_helpers.figures.Panel`
grids its cells show, and which data and results folder a chapter reads (:func:`notebook_paths`,
through :mod:`stroke_helpers.locations`). Chapters compute; :mod:`stroke_helpers.figures` draws.
Running and publishing the chapters is :mod:`stroke_helpers.notebooks`' job."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from . import locations
from .augment import paper_augmentation
from .baseline import classical_baseline
from .cascade import ms_leak
from .datasets import SliceArrays, brain_mask, build_slices, largest_lesion_slice
from .figures import (
    FULL_LOSS,
    PREDICTED_NAME,
    Panel,
    batch_figure,
    darkening_figure,
    figure4_figure,
    maps_side_by_side,
    model_grid_figure,
    realism_figure,
    segmentation_grid,
)
from .grid import ALL_RUN, ROWS, TABLE2, column_name, run_name
from .inference import THRESHOLD, Predictor
from .isles import Study, discover_cases, load_study, read_patients
from .metrics import dice
from .modalities import MODALITIES, PERFUSION_MAPS, channel_index, modality
from .perfusion import core_rcbf, hypoperfusion_tmax, reference_hemisphere, relative_cbf, select_aif, tissue_mask
from .phantom.anatomy import SLICE_MM
from .phantom.series import FRAMES
from .presets import get_preset
from .realism import realism_panels
from .runs import (
    ResultsFolder,
    RunError,
    RunFolder,
    has_weights,
    in_shipped_checkpoint,
    load_config,
    load_model,
    metrics_path,
    read_history,
    read_split,
    study_indices,
)
from .shipped import GRID_TIME, is_shipped, recorded_leakage, results_for_chapters
from .truth import case_row, has_truth, no_truth, read_cases, read_truth


def notebook_paths(preset: str, data: str = "", results: str = "") -> tuple[str, Path, Path]:
    """What a notebook's parameters resolve to: ``(preset, DATA, RESULTS)``.

    Empty ``data`` means the preset's dataset (``DATA/synthetic``; ``DATA/synthetic_smoke`` for
    the smoke preset), empty ``results`` the preset's results folder, both as
    :mod:`stroke_helpers.locations` resolves them; ``$STROKE_PRESET`` overrides the preset (CI
    runs the committed notebooks with the smoke preset this way). When the default results
    folder has no grid run yet, the shipped checkpoint stands in for it if it fits the preset and
    data (:mod:`stroke_helpers.shipped`), and a printed line says so.
    """
    preset = locations.chapter_preset(preset)
    data_path = locations.require_dataset(
        locations.dataset(get_preset(preset).dataset, data),
        f"run `python -m stroke_helpers reproduce --preset {preset}` first",
    )
    results_path = locations.results(preset, results)
    if not locations.results_given(results):
        results_path, note = results_for_chapters(results_path, data_path, preset)
        if note:
            print(note)
    return preset, data_path, results_path


def figures_folder(results: Path) -> Path:
    """Where chapter 05 saves its figure files: ``RESULTS/figures``, or ``results/shipped/figures``
    when the results are the shipped checkpoint (which is never written to)."""
    folder = ResultsFolder(locations.work() / "results" / "shipped" if is_shipped(results) else results).figures
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_run(results: Path, folder: str) -> Path:
    """``RESULTS/runs/folder``, or a clear error saying how to make it."""
    run = ResultsFolder(results).run(folder).path
    if not metrics_path(run).exists():
        raise FileNotFoundError(f"{run}: run missing; `python -m stroke_helpers reproduce` trains it")
    return run


def example_grid(results: Path, arrays, columns, study: str, z: int) -> list[list[Panel]]:
    """One slice predicted by every row x column run (the paper's Figures 2 and 3)."""
    i = arrays.studies.index(study)
    images = arrays.images[arrays.study_index == i]
    truth = arrays.masks[arrays.study_index == i][z].numpy().astype(bool)
    grid = []
    for row in ROWS:
        cells = []
        for mods in columns:
            probs = Predictor(require_run(results, run_name(row, mods)), device="cpu")(images)
            first = mods.split(",")[0]
            shown = images[z, channel_index(first)].numpy()
            m = modality(first)
            label = f"{first} {m.normalised_as}"
            cells.append(Panel(shown, truth, probs[z].numpy() > THRESHOLD, "", m.cmap, m.normalised_window, label))
        grid.append(cells)
    return grid


def largest_lesion(arrays: SliceArrays, names: list[str]) -> tuple[str, int]:
    """The study among ``names`` with the largest lesion slice, and that slice (example figures)."""
    area = {name: int(study_slices(arrays, name)[1].sum((1, 2)).max()) for name in names}
    study = max(names, key=lambda name: (area[name], name))
    return study, largest_lesion_slice(study_slices(arrays, study)[1])


def show_source(*objects) -> None:
    """Print the source of each function or method, one after another: the code a cell explains."""
    print("\n".join(inspect.getsource(o) for o in objects))


# --- chapter 1: the data --------------------------------------------------------------------------


def load_studies(data: Path, n: int | None = None, split: str = "TRAINING") -> list[Study]:
    """The first ``n`` studies of a split (all of them by default), with patient ids."""
    cases = discover_cases(data, split)[:n]
    patients = read_patients(data)
    return [load_study(c, patient=patients.get(f"{split}/{c.name}")) for c in cases]


def lesion_slice(study: Study) -> int:
    """The slice with the most lesion (the middle one when there is no lesion)."""
    return largest_lesion_slice(study.mask, axis=-1) if study.mask is not None else study.n_slices // 2


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


def deconvolution_medians(data: Path, study: Study) -> dict[str, dict[str, tuple[float, float]]]:
    """``{map: {"healthy" | "core": (true, deconvolved)}}``: medians of the phantom's true maps
    and of the maps deconvolved from its noisy 4D series (divided by the study's unit scale), in
    healthy tissue and in the true core (NaN without a core). Needs the truth folder."""
    truth = read_truth(data, study.name)
    row = case_row(data, study.name)
    # the phantom, like RAPID, writes CBF and CBV in uncalibrated units: undo its scale
    scale = {m: float(row.get(f"{m.lower()}_scale", 1.0)) for m in PERFUSION_MAPS}
    tissue = tissue_mask(study.CT, brain_mask(study))
    healthy = tissue & ~(truth["core"] | truth["penumbra"]).astype(bool)
    core = tissue & truth["core"].astype(bool)
    out = {}
    for m in PERFUSION_MAPS:
        t, d = truth[m], study.images[m].astype(np.float32) / scale[m]
        out[m] = {
            "healthy": (float(np.median(t[healthy])), float(np.median(d[healthy]))),
            "core": (float(np.median(t[core])), float(np.median(d[core]))) if core.any() else (np.nan, np.nan),
        }
    return out


def true_vs_deconvolved(data: Path, study: Study, z: int):
    """The phantom's true maps above the maps deconvolved from its noisy 4D series (what ISLES
    provides, here divided by the study's unit scale), same window per column, and a table of
    their medians in healthy tissue and in the true core (:func:`deconvolution_medians`).
    ``(None, reason)`` for data without a truth folder (real ISLES)."""
    if not has_truth(data):
        return None, no_truth(data)
    truth = read_truth(data, study.name)
    row = case_row(data, study.name)
    scale = {m: float(row.get(f"{m.lower()}_scale", 1.0)) for m in PERFUSION_MAPS}
    deconvolved = {m: study.images[m].astype(np.float32) / scale[m] for m in scale}
    medians = deconvolution_medians(data, study)
    lines = [f"median       {'healthy: true':>14s} {'deconvolved':>12s}   {'core: true':>11s} {'deconvolved':>12s}"]
    for m in PERFUSION_MAPS:
        (t, d), (tc, dc), unit = medians[m]["healthy"], medians[m]["core"], modality(m).physical_unit
        lines.append(f"{m:4s} {unit:>12s} {t:9.2f} {d:12.2f}   {tc:11.2f} {dc:12.2f}")
    fig = maps_side_by_side({"true (phantom)": truth, "deconvolved": deconvolved}, z)
    return fig, "\n".join(lines)


def truth_numbers(data: Path, study: Study) -> dict[str, float]:
    """The expert mask against the phantom's true regions of one study: volumes (mL) of the mask,
    the true core and core + penumbra, and the shares (%) of the mask inside the core and inside
    core + penumbra. Needs the truth folder."""
    truth = read_truth(data, study.name)
    ot = study.mask.astype(bool)
    core, at_risk = truth["core"].astype(bool), (truth["core"] | truth["penumbra"]).astype(bool)
    n = max(int(ot.sum()), 1)
    return {
        "mask_ml": float(ot.sum()) * study.voxel_ml,
        "core_ml": float(core.sum()) * study.voxel_ml,
        "at_risk_ml": float(at_risk.sum()) * study.voxel_ml,
        "in_core": 100 * float((ot & core).sum()) / n,
        "in_at_risk": 100 * float((ot & at_risk).sum()) / n,
    }


def truth_regions(data: Path, study: Study, z: int):
    """The true core and core + penumbra against the expert mask (OT), on slice ``z``'s Tmax:
    how much of the answer the perfusion state at CTP time holds. ``(None, reason)`` without truth."""
    if not has_truth(data):
        return None, no_truth(data)
    truth = read_truth(data, study.name)
    ot = study.mask.astype(bool)
    core, at_risk = truth["core"].astype(bool), (truth["core"] | truth["penumbra"]).astype(bool)
    tmax = np.clip(study.Tmax[:, :, z], 0, 30)
    row = [
        Panel(tmax, ot[:, :, z], r[:, :, z], f"{name}: study Dice {dice(r, ot):.2f}", cmap=modality("Tmax").cmap,
              window=modality("Tmax").window, label="Tmax (s)")
        for name, r in (("true core", core), ("core + penumbra", at_risk))
    ]  # fmt: skip
    n = truth_numbers(data, study)
    text = (
        f"{study.name}: the expert mask covers {n['mask_ml']:.1f} mL, the true core "
        f"{n['core_ml']:.1f} mL and core + penumbra {n['at_risk_ml']:.1f} mL; "
        f"{n['in_at_risk']:.0f} % of the expert mask lies in core + penumbra"
    )
    labels = (f"true core ({PREDICTED_NAME})", f"core + penumbra ({PREDICTED_NAME})")
    return segmentation_grid([row], col_labels=labels), text


def darkening_data(data: Path, n: int | None = None) -> dict[str, np.ndarray]:
    """Per training study with a true core of 20 voxels or more: time from onset to CT (min),
    the core's darkening on NCCT (median HU of healthy tissue minus that of the true core),
    the darkening the phantom set, and the SD of healthy tissue's HU (the per-voxel spread the
    darkening must stand out from). Needs the truth folder."""
    rows = [r for r in read_cases(data) if r["split"] == "TRAINING"][:n]
    out = {"onset": [], "measured": [], "designed": [], "healthy_sd": []}
    for r in rows:
        name = f"TRAINING/{r['case']}"
        study = load_study(Path(data) / name, modalities=("CT",), require_mask=False)
        truth = read_truth(data, name)
        core = truth["core"].astype(bool) & (study.CT > 15) & (study.CT < 60)
        healthy = truth["brain"].astype(bool) & ~(truth["core"] | truth["penumbra"]).astype(bool)
        healthy &= (study.CT > 15) & (study.CT < 60)
        if core.sum() < 20:
            continue
        out["onset"].append(float(r["onset_to_ct_min"]))
        out["measured"].append(float(np.median(study.CT[healthy]) - np.median(study.CT[core])))
        out["designed"].append(float(r["ct_core_darkening_hu"]))
        out["healthy_sd"].append(float(np.std(study.CT[healthy])))
    return {k: np.array(v) for k, v in out.items()}


def ncct_darkening(data: Path, n: int | None = None):
    """The core's darkening on non-contrast CT against time since onset, over the training
    studies with a core (:func:`darkening_data`): measured and as the phantom set it.
    ``(None, reason)`` without truth."""
    if not has_truth(data):
        return None, no_truth(data)
    d = darkening_data(data, n)
    fig = darkening_figure(d["onset"], d["measured"], d["designed"])
    r = np.corrcoef(d["onset"], d["measured"])[0, 1]
    return (
        fig,
        f"{len(d['onset'])} studies with a core of 20 voxels or more; correlation of darkening with onset time r = {r:.2f}",
    )


def classical_thresholds(study: Study, z: int) -> tuple[list[list[Panel]], str]:
    """The rCBF < 30 % core and the Tmax > 6 s region against the expert mask, each outlined on
    the map it thresholds (relative CBF in %, Tmax in s) beside the CT: one row of
    :func:`~stroke_helpers.figures.segmentation_grid` panels for slice ``z``, captioned with the
    **slice** Dice, and a line with each region's **study** Dice (every slice; vessels and CSF
    excluded, as in :func:`~stroke_helpers.baseline.classical_baseline`)."""
    tissue = tissue_mask(study.CT, brain_mask(study), cbv=study.CBV)
    ot = study.mask.astype(bool)
    regions = {
        "rCBF < 30 %": core_rcbf(study.CBF, tissue, study.Tmax),
        "Tmax > 6 s": hypoperfusion_tmax(study.Tmax, tissue),
    }
    rcbf = 100 * relative_cbf(study.CBF, tissue, study.Tmax)
    ct, tmax = modality("CT"), modality("Tmax")
    slice_dice = {k: dice(r[:, :, z], ot[:, :, z]) for k, r in regions.items()}
    row = [
        Panel(study.CT[:, :, z], ot[:, :, z], None, "CT, expert outline", ct.cmap, ct.window, "CT (HU)"),
        Panel(rcbf[:, :, z], ot[:, :, z], regions["rCBF < 30 %"][:, :, z],
              f"rCBF < 30 %: slice Dice {slice_dice['rCBF < 30 %']:.2f}", modality("CBF").cmap, (0, 150),
              "CBF relative to the healthy hemisphere (%)"),
        Panel(study.Tmax[:, :, z], ot[:, :, z], regions["Tmax > 6 s"][:, :, z],
              f"Tmax > 6 s: slice Dice {slice_dice['Tmax > 6 s']:.2f}", tmax.cmap, tmax.window, "Tmax (s)"),
    ]  # fmt: skip
    text = f"{study.name}, study Dice (every slice): " + ", ".join(f"{k} {dice(r, ot):.3f}" for k, r in regions.items())
    return [row], text


def threshold_rows(data: Path) -> list[dict]:
    """Both classical thresholds scored on every training study (:func:`~stroke_helpers.baseline.classical_baseline`)."""
    return classical_baseline(data, progress=False)


def baseline_summary(data: Path, rows: list[dict] | None = None) -> str:
    """The classical rCBF < 30 % core and Tmax > 6 s region scored over every training study, in one line."""
    rows = threshold_rows(data) if rows is None else rows
    d = np.array([r["dice"] for r in rows])
    t = np.array([r["tmax_dice"] for r in rows])
    return (
        f"rCBF < 30 % over {len(d)} studies: Dice {d.mean():.3f} ± {d.std():.3f} (real ISLES 2018: 0.29); "
        f"Tmax > 6 s: Dice {t.mean():.3f} ± {t.std():.3f}"
    )


def realism(data: Path, study: Study, z: int):
    """The phantom's CT slice ``z`` beside a real ISLES CT and the real-CT template at the same
    MNI height (:func:`stroke_helpers.figures.realism_figure`), and the brain HU percentiles of
    each; ``(None, None)`` when either real file is missing (they are never part of the
    repository: :func:`stroke_helpers.locations.reference_ct` says where they are looked for)."""
    real_path, template = locations.reference_ct(), locations.ct_template()
    if real_path is None or template is None:
        return None, None
    real = np.asarray(nib.load(real_path).dataobj, dtype=np.float32)
    mni_z = float(case_row(data, study.name)["first_slice_mm"]) + SLICE_MM * z
    panels = realism_panels(study.CT, real, template, z, real.shape[2] // 2, mni_z)
    return realism_figure(panels), {k: pct for k, (_, pct) in panels.items()}


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
    brains: np.ndarray | None = None

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
    tmax = arrays.images[idx, channel_index("Tmax")].numpy()
    names = list(config.modalities)
    brains = arrays.brains[idx].numpy().astype(bool)
    return AttentionExamples(tmax, arrays.masks[idx].numpy(), maps, x.numpy(), names, similarities, brains)


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
    tmax = image[0, channel_index("Tmax")].numpy()
    return ExampleSlice(model, config, image[:, config.channels], arrays.masks[j : j + 1, None].float(), tmax)


def network_batch(data: Path, preset: str = "cpu", n: int = 4, seed: int = 0):
    """What the network sees: ``n`` training slices with lesions, preprocessed to the preset's
    size and augmented as in training (seeded), drawn as one row per slice and one column per
    input channel (:func:`~stroke_helpers.figures.batch_figure`)."""
    settings = get_preset(preset)
    arrays = build_slices(data, "TRAINING", settings.size, progress=False)
    area = arrays.masks.flatten(1).sum(1).numpy()
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(np.flatnonzero(area > 0), size=n, replace=False))
    augment = paper_augmentation(settings.augment, seed=seed)
    images, masks = augment(arrays.images[pick].float(), arrays.masks[pick][:, None].float())
    names = [f"{arrays.studies[arrays.study_index[i]]}, z={arrays.z[i]}" for i in pick]
    return batch_figure(images.numpy(), masks[:, 0].numpy(), list(MODALITIES), names)


def histories(results: Path, column: str = "All") -> dict[str, list[dict]]:
    """The learning curves of the three configurations of one column. A run without multilevel
    refinement has one loss term, so its recorded loss is its full-resolution term
    (:data:`~stroke_helpers.figures.FULL_LOSS`) even in a history that predates that column."""
    out = {}
    for row in ROWS:
        run = require_run(results, f"{row}_{column}")
        history = read_history(run)
        if not load_config(run).multilevel:
            history = [{FULL_LOSS: r["train_loss"], **r} for r in history]
        out[row] = history
    return out


# --- chapters 4 and 5: the cascade and the paper's results ----------------------------------------


def study_slices(arrays: SliceArrays, study: str) -> tuple[torch.Tensor, np.ndarray]:
    """``(images (Z, 5, S, S), truth (Z, S, S) bool)`` of one study."""
    idx = arrays.study_index == arrays.studies.index(study)
    return arrays.images[idx], arrays.masks[idx].numpy().astype(bool)


def predict_slice(predictor: Predictor, arrays: SliceArrays, study: str, z: int) -> Panel:
    """A :func:`~stroke_helpers.figures.segmentation_grid` panel: the study's Tmax at slice
    ``z``, its expert mask and the predictor's mask."""
    images, truth = study_slices(arrays, study)
    shown = images[z, channel_index("Tmax")].numpy()
    tmax = modality("Tmax")
    pred = predictor(images)[z].numpy() > THRESHOLD
    return Panel(shown, truth[z], pred, "", tmax.cmap, tmax.normalised_window, f"Tmax {tmax.normalised_as}")


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
    study, z = largest_lesion(arrays, val[example:] or val)
    images, truth = study_slices(arrays, study)
    ms = cascade.synthetic_map(images[z : z + 1])[0, 0].numpy()
    channels = {m: images[z, channel_index(m)].numpy() for m in ("CT", "CBV", "CBF", "Tmax")}
    return CascadeExample(study, z, channels, ms, truth[z])


def synthetic_map_file(run: Path, data: Path, study: str) -> str:
    """Where a study's ``Ms.nii.gz`` is, and whether it lies on the study's own CT grid."""
    path = RunFolder(run).synthetic_map_nifti(study)
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
            leak = ms_leak(ResultsFolder(results).run(folder).path, arrays)
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
        run_name(r, c) for r in ROWS for c in columns if not has_weights(ResultsFolder(results).run(run_name(r, c)))
    ]
    if missing:
        print(
            f"{title.split(' (')[0]}: needs the weights of {len(missing)} runs that {results} does not have ({', '.join(missing[:3])}, ...); "
            f"`python -m stroke_helpers reproduce --preset cpu` trains them ({GRID_TIME})"
        )
        return None
    grid = example_grid(results, arrays, columns, study, z)
    return model_grid_figure(grid, tuple(ROWS), [column_name(c) for c in columns], title)


def lesion_ml(arrays: SliceArrays, study: str, z: int | None = None) -> float:
    """A study's lesion volume (mL) from its resized masks: every slice, or slice ``z`` (a slab of
    the study's slice thickness); each resized pixel covers the native field of view / size²."""
    i = arrays.studies.index(study)
    (nx, ny, _), (dx, dy, dz) = arrays.shapes[i], arrays.spacings[i]
    truth = study_slices(arrays, study)[1]
    size = truth.shape[-1]
    pixel_ml = nx * dx * ny * dy * dz / size**2 / 1000
    return float((truth if z is None else truth[z]).sum()) * pixel_ml


def figure4(results: Path, arrays: SliceArrays, n: int = 4):
    """The paper's Figure 4: stage 1, the cascade and the synthetic map on ``n`` validation
    studies from the smallest lesion to the largest (at quantiles of their lesion volume, in mL,
    since the paper's case is made on small lesions), each at its largest lesion slice."""
    stage1, cascade = Predictor(require_run(results, ALL_RUN), "cpu"), Predictor(require_run(results, "cascade"), "cpu")
    volumes = sorted((lesion_ml(arrays, s), s) for s in cascade.split["val"])
    volumes = [v for v in volumes if v[0] > 0]
    picks = sorted({round(q * (len(volumes) - 1)) for q in np.linspace(0, 1, n)})
    grid: list[list[Panel]] = [[], [], []]
    for ml, study in (volumes[i] for i in picks):
        images, truth = study_slices(arrays, study)
        z = largest_lesion_slice(truth)
        grid[0].append(predict_slice(stage1, arrays, study, z))
        grid[1].append(predict_slice(cascade, arrays, study, z))
        ms = cascade.synthetic_map(images[z : z + 1])[0, 0].numpy()
        caption = f"{study.split('/')[-1]}, lesion {ml:.1f} mL"
        grid[2].append(Panel(ms, truth[z], None, caption, cmap="inferno", window=(0, 1.5), label="Ms (a.u.)"))
    return figure4_figure(grid)


def validation_probabilities(predictor: Predictor, arrays: SliceArrays) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per validation study of ``predictor``'s run: probabilities and expert masks ``(Z, S, S)``."""
    pairs = [study_slices(arrays, s) for s in predictor.split["val"]]
    return [predictor(images).numpy() for images, _ in pairs], [truth for _, truth in pairs]


# --- take-aways and summaries: every number a chapter's text states, from its results ------------


def say(text: str) -> None:
    """Show ``text`` (Markdown) in a notebook, print it elsewhere. The chapters state their
    take-aways' and summaries' numbers through it, rendered from the results they describe, so no
    number in their text is typed by hand (and none drifts when the data or the runs change)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:  # pragma: no cover - IPython ships with the notebooks' dependencies
        pass
    print(text)


def where(data: Path) -> str:
    """``"on the synthetic phantom"`` for a dataset with the phantom's truth folder, else
    ``"on these studies"``: findings about the data are labelled with what they hold on."""
    return "on the synthetic phantom" if has_truth(data) else "on these studies"


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


# chapter 1


def dataset_takeaway(summaries) -> str:
    s = summaries[0]
    lo, hi = min(s.slice_counts), max(s.slice_counts)
    return (
        f"**Take-away.** {s.cases} studies of {lo} to {hi} slices each: {s.slices} slices in all, a small "
        "dataset by deep-learning standards. Every number later in the course rests on these few studies, "
        "which is why chapter 05 puts an interval on each."
    )


def slice_contrast(study: Study, z: int) -> dict[str, tuple[float, float]]:
    """``{modality: (median in the lesion, median in the rest of the brain)}`` on slice ``z``."""
    brain = brain_mask(study)[:, :, z]
    lesion = study.mask[:, :, z].astype(bool) & brain
    return {
        m: (
            float(np.median(study.images[m][:, :, z][lesion])),
            float(np.median(study.images[m][:, :, z][brain & ~lesion])),
        )
        for m in MODALITIES
        if lesion.any() and (brain & ~lesion).any()
    }


def slice_takeaway(study: Study, z: int) -> str:
    """How the lesion differs from the rest of the brain on each map of one slice, in words and medians."""
    from .figures import EXPERT_NAME

    contrast = slice_contrast(study, z)
    if not contrast:
        return "**Take-away.** This slice has no lesion: pick another `study`."
    parts = []
    for m, (inside, outside) in sorted(contrast.items(), key=lambda kv: -abs(np.log((kv[1][0] + 1) / (kv[1][1] + 1)))):
        way = "higher" if inside > outside else "lower"
        parts.append(f"{m} {way} ({inside:.3g} against {outside:.3g} {modality(m).unit})")
    return (
        f"**Take-away.** On this slice the lesion (outlined in {EXPERT_NAME}) differs from the rest of the brain "
        f"(medians, the largest ratio first): {_list(parts)}. The expert mask does not follow any single map's "
        "edge: it was drawn on a different scan (diffusion MRI), later."
    )


def modality_separation(studies: list[Study]) -> dict[str, tuple[float, bool]]:
    """``{modality: (separation, higher inside)}`` over the studies' brain voxels:
    :func:`~stroke_helpers.answers.separation` of lesion from the rest of the brain (0: the same
    distribution, 1: one threshold splits them)."""
    from .answers import separation

    out = {}
    for m in MODALITIES:
        values, lesion = [], []
        for s in studies:
            brain = brain_mask(s)
            values.append(s.images[m][brain].astype(np.float32))
            lesion.append(s.mask[brain].astype(bool))
        v, les = np.concatenate(values), np.concatenate(lesion)
        out[m] = (separation(v, les), bool(np.median(v[les]) > np.median(v[~les])))
    return out


def separation_takeaway(sep: dict[str, tuple[float, bool]], data: Path, n: int) -> str:
    ranked = sorted(sep, key=lambda m: -sep[m][0])
    items = [f"{m} {sep[m][0]:.2f} ({'higher' if sep[m][1] else 'lower'} in the lesion)" for m in ranked]
    return (
        f"**Take-away.** How well one threshold on each map separates lesion from healthy brain voxels {where(data)} "
        f"({n} studies; 0: not at all, 1: perfectly, the area under the ROC curve as |AUC − 0.5| × 2): "
        f"{_list(items)}. {ranked[0]} separates best, {ranked[-1]} least. No map reaches 1: a voxel-wise "
        "threshold on one map cannot be perfect, because part of the lesion's values sit inside the healthy range."
    )


def volume_takeaway(volumes: np.ndarray) -> str:
    v = np.asarray(volumes)
    return (
        f"**Take-away.** {100 * np.mean(v < 20):.0f} % of the lesions are under 20 mL (median {np.median(v):.1f} mL) "
        f"and {int((v < 5).sum())} of {len(v)} are under 5 mL: on those, a handful of voxels decides the Dice score, "
        "which is what makes per-study Dice so spread out (chapter 05)."
    )


def curves_takeaway(times: np.ndarray, curves: dict[str, np.ndarray]) -> str:
    """When and how high each tissue curve peaks, against the arterial input and normal tissue."""
    peak = {}
    for name, c in curves.items():
        e = c - c[:2].mean()
        peak[name.split(" (")[0]] = (float(times[int(np.argmax(e))]), float(e.max()))
    if "arterial input" not in peak or "normal" not in peak:
        return "**Take-away.** This slice lacks a normal-tissue region: pick another `study` to compare the curves."
    t0, (tn, hn) = peak["arterial input"][0], peak["normal"]
    parts = [f"normal tissue peaks {tn - t0:.0f} s after the arterial input, {hn:.0f} HU above its baseline"]
    for name in ("penumbra", "core"):
        if name in peak:
            t, h = peak[name]
            parts.append(f"the {name} {t - tn:+.0f} s from normal tissue, at {100 * h / hn:.0f} % of its height")
    return (
        f"**Take-away.** On this slice, {_list(parts)}. Delay and height are the two things the maps of the next "
        "section summarise (Tmax and CBF)."
    )


def deconvolution_takeaway(medians: dict) -> str:
    """The deconvolved maps against the phantom's truth, in words, from :func:`deconvolution_medians`."""
    healthy = ", ".join(
        f"{m} {100 * d / t:.0f} %" for m, ((t, d)) in ((m, medians[m]["healthy"]) for m in ("CBF", "CBV", "MTT"))
    )
    (tc, dc), (tm, dm) = medians["CBF"]["core"], medians["MTT"]["core"]
    (tt, dt) = medians["Tmax"]["healthy"]
    lines = [
        "**Take-away.** On the synthetic phantom (this study), the deconvolved maps' medians in healthy tissue are "
        f"{healthy} of the truth: the maps are corrected for the known underestimate of truncated SVD, measured on "
        "each study's own AIF. What remains:"
    ]
    if np.isfinite(tc):
        side = "above" if dc > tc else "below"
        more = "less" if dc > tc else "more"
        lines.append(
            f"- in the **core**, deconvolved CBF is {dc:.1f} against a true {tc:.1f} mL/100 g/min ({side} the truth), "
            f"so `rCBF < 30 %` finds {more} core than there is;"
        )
        lines.append(
            f"- **MTT in the core** comes out {dm:.1f} s against a true {tm:.1f} s: a ratio of two small, noisy numbers, "
            f"from a late, long curve that can outlast the {FRAMES[0]}–{FRAMES[1]} s acquisition (CBV then loses its "
            "tail). Measured MTT is squeezed, which is why this phantom's MTT models lag in chapter 05 "
            "(docs/decisions.md §6, item 8);"
        )
    lines.append(
        f"- **healthy Tmax** reads {dt:.1f} s against a true delay of {tt:.1f} s: truncation smooths the residue's "
        "sharp peak and moves it."
    )
    return "\n".join(lines)


def truth_takeaway(n: dict[str, float]) -> str:
    over = n["at_risk_ml"] - n["mask_ml"]
    return (
        f"**Take-away.** On the synthetic phantom (this study), the true core holds {n['in_core']:.0f} % of the expert "
        f"mask and core plus penumbra {n['in_at_risk']:.0f} %, covering {n['at_risk_ml']:.1f} mL against the mask's "
        f"{n['mask_ml']:.1f} mL ({over:+.1f} mL): the perfusion state at scan time holds most, not all, of the answer. "
        "A model that read the *true* core perfectly would still miss the growth; one that marked the whole "
        "penumbra would overshoot. The best a map-based method can do lies in between.\n\n"
        "Non-contrast CT holds one more clue. Ischaemic tissue takes up water and darkens, a few HU over hours. "
        "Across the training studies, the core's darkening against the time from onset to CT:"
    )


def darkening_takeaway(d: dict[str, np.ndarray]) -> str:
    early, late = d["measured"][d["onset"] <= 120], d["measured"][d["onset"] >= 720]
    parts = []
    if early.size:
        parts.append(
            f"a median of {np.median(early):.1f} HU in the {early.size} studies scanned within 2 hours of onset"
        )
    if late.size:
        parts.append(f"{np.median(late):.1f} HU in the {late.size} scanned after 12 hours")
    return (
        f"**Take-away.** On the synthetic phantom the darkening grows with time since onset: {_list(parts) or 'see the figure'}, "
        f"against a spread of {np.median(d['healthy_sd']):.1f} HU (SD) between voxels of healthy tissue. Early strokes, "
        "the ones that matter most for treatment, are nearly invisible on CT: CT alone is a hard input (chapter 05 "
        "compares a learned NCCT model with a no-learning hypodensity baseline)."
    )


def threshold_takeaway(rows: list[dict], data: Path) -> str:
    rcbf = np.array([r["dice"] for r in rows])
    tmax = np.array([r["tmax_dice"] for r in rows])
    tprec = np.array([r["tmax_precision"] for r in rows])
    best = "Tmax > 6 s" if tmax.mean() > rcbf.mean() else "rCBF < 30 %"
    return (
        f"**Take-away.** Over the {len(rows)} training studies {where(data)}, rCBF < 30 % scores a mean Dice of "
        f"{rcbf.mean():.2f} (real ISLES 2018: 0.29, docs/decisions.md §5) and Tmax > 6 s {tmax.mean():.2f} (its "
        f"precision {tprec.mean():.2f}: it also marks penumbra that did not become lesion). rCBF < 30 % finds the core, "
        f"not the grown lesion. Here {best} is the stronger threshold: the bar a learned model has to clear is the "
        "best of them, and neither is a segmentation of the expert mask."
    )


def realism_takeaway(percentiles: dict | None) -> str:
    if not percentiles:
        return (
            "**Take-away.** No real CT here to compare with. The phantom is a teaching tool with the right physics and "
            "difficulty, not a replacement for the real data."
        )
    spread = ", ".join(f"{k} {float(v[-1] - v[0]):.0f} HU" for k, v in percentiles.items())
    return (
        f"**Take-away.** The brains' HU spread (5th to 95th percentile): {spread}. The phantom has no beam hardening "
        "or streak artefacts. It is a teaching tool with the right physics and difficulty, not a replacement for the "
        "real data."
    )


def realism_scorecard(data: Path, progress: bool = True) -> tuple[str, list[dict]]:
    """The realism scorecard of ``data``'s TRAINING split as a Markdown table, and its rows: read
    from ``truth/scorecard.csv`` when ``python -m stroke_helpers realism`` has written it there,
    else measured now (about a minute for the default dataset) and written there."""
    from .scorecard import default_output, markdown_table, read_table, report_realism

    path = default_output(data)
    if path is not None and path.is_file():
        rows = read_table(path)
    else:
        rows = report_realism(data, progress=progress)
    return markdown_table({"this dataset (TRAINING)": rows}), rows


def scorecard_takeaway(rows: list[dict]) -> str:
    passed = [r["quantity"] for r in rows if r["result"] == "pass"]
    failed = [r["quantity"] for r in rows if r["result"] == "FAIL"]
    miss = f" Out of range: {', '.join(failed)}." if failed else ""
    value = {r["quantity"]: float(r["value"]) for r in rows}
    return (
        f"**Take-away.** {len(passed)} of the {len(rows)} quantities fall in their real-data range here.{miss} "
        f"The Tmax > 6 s region is {value['tmax6_over_lesion']:.1f} times the lesion (median), and rCBF < 30 % "
        f"covers {value['core30_over_lesion']:.2f} of its volume with a mean Dice of {value['core30_dice']:.2f}: "
        "each threshold answers a different question than the expert mask does. What the scorecard cannot check "
        "is whether real lesions have the phantom's shapes, textures and timing: results on the phantom are "
        "lessons about the method, not clinical findings."
    )


def summary_01(summaries, volumes, sep, rows, data: Path) -> str:
    s = summaries[0]
    ranked = sorted(sep, key=lambda m: -sep[m][0])
    rcbf = np.mean([r["dice"] for r in rows])
    tmax = np.mean([r["tmax_dice"] for r in rows])
    return "\n".join(
        [
            f"- The dataset is small ({s.cases} studies, {s.slices} slices) and its lesions are small (median "
            f"{np.median(volumes):.1f} mL): expect wide uncertainty in every result. `StudyBrowser` shows any study, "
            "slice and window.",
            f"- {where(data).capitalize()}, {ranked[0]} separates lesion from healthy brain best, then "
            f"{_list(ranked[1:3])}; {ranked[-1]} least.",
            "- The perfusion maps come from deconvolving the 4D series; against the phantom's truth they land near it "
            "in healthy tissue and are biased in the core (section 6 says how, for this study).",
            "- The expert mask is the core grown into the penumbra: the maps hold most of the answer, CT only a faint, "
            "time-dependent hint.",
            f"- The classical thresholds score a mean Dice of {rcbf:.2f} (rCBF < 30 %) and {tmax:.2f} (Tmax > 6 s) "
            f"{where(data)}: the better one is the bar for chapter 02 on.",
        ]
    )


# chapter 2


def parameter_share(widths, in_channels: int = 5) -> tuple[int, int, float]:
    """``(with attention, without, added %)``: parameters of a network of ``widths``."""
    from .model import CrossAttentionAutoencoder, count_parameters

    with_att = count_parameters(CrossAttentionAutoencoder(in_channels, widths, attention=True))
    without = count_parameters(CrossAttentionAutoencoder(in_channels, widths, attention=False))
    return with_att, without, 100 * (with_att / without - 1)


#: A gate whose mean over the brain is at least this is "open": it passes its skip almost unchanged.
OPEN_GATE = 0.9


def attention_summary(examples: AttentionExamples, model: str = "trained") -> dict[int, dict[str, float]]:
    """Per decoder level of ``model``'s gates: the mean over the brain of the example slices,
    and the means inside and outside the lesion (:func:`~stroke_helpers.answers.level_separation`)."""
    from .answers import level_separation

    sep = level_separation(examples.masks, examples.maps[model], examples.brains)
    out = {}
    for level, a in examples.maps[model].items():
        brains = examples.brains if examples.brains is not None else np.ones_like(examples.masks, dtype=bool)
        up = torch.nn.functional.interpolate(
            torch.as_tensor(a)[:, None].float(), size=brains.shape[-2:], mode="bilinear"
        )
        out[level] = {"mean": float(up[:, 0].numpy()[brains.astype(bool)].mean()), **sep[level]}
    return out


def attention_takeaway(examples: AttentionExamples) -> str:
    s = attention_summary(examples)
    open_ = [lvl for lvl, v in sorted(s.items()) if v["mean"] >= OPEN_GATE]
    lines = [
        "**Take-away.** Read the trained gates (means over the brain of these slices): a level whose gate averages "
        "near 1 lets its skip through unchanged, so there attention is a plain skip connection. In this run "
        + (
            f"level{'s' if len(open_) > 1 else ''} {_list([str(v) for v in open_])} "
            f"{'are' if len(open_) > 1 else 'is'} open almost everywhere (mean {OPEN_GATE} or more)."
            if open_
            else f"no level is open everywhere (none averages {OPEN_GATE} or more)."
        )
    ]
    for lvl, v in sorted(s.items()):
        if lvl in open_:
            continue
        way = "higher" if v["inside"] > v["outside"] else "lower"
        lines.append(
            f"Level {lvl} averages {v['mean']:.2f}, {v['inside']:.2f} inside the lesion against {v['outside']:.2f} "
            f"in the rest of the brain: {way} inside."
        )
    lines.append(
        "A gate lower inside the lesion damps the lesion's skip features rather than spotlighting them. Whether "
        "any of this improves the segmentation is section 4's question."
    )
    return " ".join(lines)


def paired(results: Path, split: str, claim: str) -> dict | None:
    """The paired comparison whose claim starts with ``claim`` (:func:`~stroke_helpers.report.comparisons`)."""
    from .report import comparisons

    return next((c for c in comparisons(results, split) if c["claim"].startswith(claim)), None)


def paired_sentence(c: dict | None, better: str, worse: str) -> str:
    """One sentence on a paired comparison: its difference, interval, and what it resolves."""
    from .report import resolution

    if c is None:
        return "the runs of this comparison are missing here"
    diff = f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] on {c['n']} studies"
    if c["resolved"]:
        return f"{diff}: the interval excludes 0, so this sample resolves it: {better if c['mean'] > 0 else worse}"
    return f"{diff}: the interval includes 0, so this sample cannot tell them apart, and {resolution(c)}"


def attention_paired_takeaway(results: Path, split: str) -> str:
    c = paired(results, split, "MR+ATT vs MR")
    return (
        '**Take-away.** The paired difference is the answer to "does attention help?", and its interval says '
        f"whether this sample can tell. In this run MR+ATT minus MR is "
        f"{paired_sentence(c, 'attention helps here', 'attention hurts here')}."
    )


def summary_02(share: float, examples: AttentionExamples, results: Path, split: str) -> str:
    s = attention_summary(examples)
    open_ = [str(lvl) for lvl, v in sorted(s.items()) if v["mean"] >= OPEN_GATE]
    c = paired(results, split, "MR+ATT vs MR")
    verdict = (
        "the runs are missing"
        if c is None
        else "it resolves a difference" + (" in attention's favour" if c["mean"] > 0 else " against attention")
        if c["resolved"]
        else "it does not resolve a difference: attention is not shown to help (or hurt) here"
    )
    return "\n".join(
        [
            "- Cross-attention is a learned, per-pixel gate on each skip connection, computed from the encoder and the "
            f"decoder together; it costs {share:.1f} % more parameters.",
            f"- Trained gates: level{'s' if len(open_) != 1 else ''} {_list(open_) or 'none'} open almost everywhere "
            "(plain skips there); "
            + "; ".join(
                f"level {lvl} {'higher' if v['inside'] > v['outside'] else 'lower'} inside the lesion"
                for lvl, v in sorted(s.items())
                if str(lvl) not in open_
            )
            + ".",
            f"- On this sample, the paired comparison with plain skips: {verdict}.",
        ]
    )


# chapter 3


def convergence_takeaway(results: Path) -> str:
    from .report import PLATEAU, convergence

    rows = convergence(results)
    if not rows:
        return "**Take-away.** No trained runs to read."
    grid = [r for r in rows if "/" not in r["run"] and "seed" not in r["run"]]
    maps = [r for r in grid if not r["run"].endswith("_NCCT")]
    low = min(maps or grid, key=lambda r: r["final"])
    off = [r for r in rows if not r["plateau"]]
    n_val = len(read_split(require_run(results, ALL_RUN))["val"])
    text = (
        f"**Take-away.** The lowest final validation Dice of a run on perfusion maps is {low['final']:.2f} "
        f"({low['run']}). {len(off)} of {len(rows)} runs are off their plateau"
    )
    if off:
        gaps = [r["best"] - r["last3"] for r in off]
        text += f" ({_list([r['run'] for r in off])}), short of their best by {min(gaps):.2f}-{max(gaps):.2f}"
    return text + (
        f". With {n_val} validation studies, one study found or missed moves the mean by up to {1 / n_val:.2f}, "
        f"{'more' if 1 / n_val > PLATEAU else 'less'} than the {PLATEAU} the criterion allows, so such curves step up "
        "and down by a study at a time. Their best epoch is then partly luck, one more reason to judge them on "
        "held-out studies (next cell, and chapter 05)."
    )


def row_spread(results: Path, columns, split: str) -> dict[str, float]:
    """Per column: the largest difference between the three configurations' mean Dice."""
    from .report import per_study

    out = {}
    for c in columns:
        means = [per_study(results, run_name(row, c), split=split) for row in ROWS]
        means = [float(np.nanmean(list(m.values()))) for m in means if m]
        if len(means) > 1:
            out[column_name(c)] = max(means) - min(means)
    return out


def rows_takeaway(results: Path, columns, split: str) -> str:
    spread = row_spread(results, columns, split)
    if not spread:
        return "**Take-away.** The runs of this table are missing."
    return (
        "**Take-away.** Within each column, base, MR and MR+ATT differ by at most "
        f"{max(spread.values()):.3f} in mean Dice (by column: "
        + ", ".join(f"{k} {v:.3f}" for k, v in spread.items())
        + "); compare that with the width of each cell's interval. Chapter 05 pairs them to see which of these "
        "differences the sample resolves."
    )


def summary_03(results: Path, split: str) -> str:
    spread = row_spread(results, (TABLE2[-1],), split)
    c = paired(results, split, "MR vs base")
    return "\n".join(
        [
            "- The class-weight map and the multilevel loss are a few lines (`loss.py`); the heads convolve before they "
            "interpolate, which is the same result for far less work; one training step is augment, forward, loss, "
            "backward, update.",
            "- Every level of an MR model points at the lesion, coarse ones as a blob.",
            "- On `All`, base, MR and MR+ATT end "
            + (f"within {max(spread.values()):.3f} of each other in mean Dice" if spread else "close")
            + f"; MR minus base, paired: {paired_sentence(c, 'MR helps here', 'MR hurts here')}.",
            "- `train(TrainConfig(...))` in Python and `python -m stroke_helpers train` on the command line are the "
            "same code; a run resumes where it stopped.",
        ]
    )


# chapter 4


def cascade_takeaway(results: Path, split: str) -> str:
    from .report import PAPER_CASCADE, PAPER_TABLE2

    c = paired(results, split, "cascade vs stage 1")
    paper_stage1 = PAPER_TABLE2["MR+ATT"][-1]
    paper_stage1 = paper_stage1[0] if isinstance(paper_stage1, tuple) else paper_stage1
    return (
        "**Take-away.** Look at the paired line, not the two cells: it says whether the cascade beats its own stage 1 "
        f"on the same studies. In this run the cascade minus stage 1 is "
        f"{paired_sentence(c, 'the cascade adds something here', 'the cascade loses something here')}. "
        f"The paper reports Dice {PAPER_CASCADE['dice']:.2f} for the cascade against {paper_stage1:.2f} for MR+ATT on "
        "`All`, without an interval."
    )


def leak_takeaway(leak: dict[str, float]) -> str:
    if "validation" not in leak:
        return "**Take-away.** No cascade's maps to compare here."
    ref = leak["validation"]
    parts = [f"{k} {v:.2f} ({v - ref:+.2f})" for k, v in leak.items() if k != "validation"]
    return (
        f"**Take-away.** Compare each training figure with the validation reference ({ref:.2f}): {_list(parts)}. "
        "A training figure above the reference is the part of `Ms` that stage 2 will not find on new studies; "
        'out-of-fold maps come from fold models that each saw 80 % of the data. The paired "in-sample vs '
        "out-of-fold\" line of section 2 says whether the two cascades' Dice differ. The longer stage 1 trains "
        "(the paper's 600 epochs at full width), the more closely it fits its training slices and the larger the "
        "leak can grow."
    )


def summary_04(results: Path, split: str, leak: dict[str, float]) -> str:
    c = paired(results, split, "cascade vs stage 1")
    ref = leak.get("validation")
    leak_line = (
        f"in-sample maps score {leak['in-sample']:.2f} against the validation reference's {ref:.2f}"
        if ref is not None and "in-sample" in leak
        else "the in-sample maps were not available here"
    )
    return "\n".join(
        [
            "- `Ms` is stage 1's full-resolution attention evidence, normalised and fed to a second network.",
            f"- The cascade against its own stage 1, paired: {paired_sentence(c, 'it helps here', 'it hurts here')}.",
            f"- In-sample maps can leak: {leak_line}. Out-of-fold maps with K = 5 are the honest comparison, at the "
            "cost of five extra stage-1 trainings (each on 80 % of the data).",
        ]
    )


# chapter 5


def column_means(results: Path, columns, split: str) -> dict[str, float]:
    """Per column: the mean Dice of the paper's three configurations (those that were scored)."""
    from .report import per_study

    out = {}
    for c in columns:
        means = [per_study(results, run_name(row, c), split=split) for row in ROWS]
        means = [float(np.nanmean(list(m.values()))) for m in means if m]
        if means:
            out[column_name(c)] = float(np.mean(means))
    return out


def ranking_takeaway(results: Path, columns, paper: dict, split: str, data: Path) -> str:
    """The table's columns ranked by mean Dice, ours and the paper's, side by side."""
    ours = column_means(results, columns, split)
    theirs = {column_name(c): float(np.mean([paper[row][j][0] for row in ROWS])) for j, c in enumerate(columns)}
    rank = lambda d: sorted(d, key=lambda k: -d[k])  # noqa: E731
    same = rank(ours) == [k for k in rank(theirs) if k in ours]
    return (
        f"**Take-away.** Columns by mean Dice over base, MR and MR+ATT, ours ({where(data)}): "
        + ", ".join(f"{k} {ours[k]:.2f}" for k in rank(ours))
        + "; the paper's (real ISLES 2018, its Table's means): "
        + ", ".join(f"{k} {theirs[k]:.2f}" for k in rank(theirs))
        + f". The two orders {'agree' if same else 'differ'}. Within a column the three rows' intervals overlap; "
        "between columns, paired comparisons (chapter 05) say which differences this sample resolves. Ours describe "
        "the data they were computed on, not real strokes."
    )


ARCHITECTURE_CLAIMS = ("MR vs base", "MR+ATT vs MR", "cascade vs stage 1")


def claims_takeaway(results: Path, split: str) -> str:
    from .report import comparisons

    claims = comparisons(results, split)
    if not claims:
        return "**Take-away.** No paired comparison could be made here."
    resolved = [c["claim"] for c in claims if c["resolved"]]
    arch = [c for c in claims if c["claim"].startswith(ARCHITECTURE_CLAIMS)]
    n = max(c["n"] for c in claims)
    text = (
        "**Take-away.** Read the verdicts one by one: each says whether this sample resolves the claim and, when it "
        f"does not, the smallest difference it could have resolved. With {n} studies, this sample resolves "
        f"{len(resolved)} of {len(claims)} claims" + (f" ({_list(resolved)})" if resolved else "") + "."
    )
    if arch:
        unresolved = [c for c in arch if not c["resolved"]]
        text += (
            f" Of the paper's architectural claims (MR, attention, the cascade), {len(arch) - len(unresolved)} of "
            f"{len(arch)} are resolved"
            + (
                f"; the unresolved ones' mean differences are {max(abs(c['mean']) for c in unresolved):.3f} Dice "
                "or less"
                if unresolved
                else ""
            )
            + "."
        )
    return text


def seeds_takeaway(results: Path, split: str) -> str:
    from .report import seed_spread

    spread = {k: max(v) - min(v) for k, v in seed_spread(results, split=split).items() if len(v) > 1}
    if not spread:
        return "**Take-away.** One seed per configuration here: train more (`--seeds`) to measure the luck."
    c = paired(results, split, "MR vs base")
    text = (
        "**Take-away.** Compare the spread between seeds with the paired differences above: a difference between "
        "two configurations smaller than the spread of one configuration over seeds is not a property of the "
        "configurations. In this run the spreads are " + ", ".join(f"{k} {v:.3f}" for k, v in spread.items())
    )
    if c is not None and "base" in spread and "MR" in spread:
        smaller = abs(c["mean"]) < min(spread["base"], spread["MR"])
        text += (
            f"; MR's {c['mean']:+.3f} over base is {'smaller' if smaller else 'not smaller'} than either row's "
            "spread over seeds"
        )
    return text + "."


def draw_takeaway(tables: dict[str, dict]) -> str:
    """What the draw changed against TESTING (:func:`stroke_helpers.replication.checks_on_test_sets`)."""
    if "TESTING" not in tables:
        return "**Take-away.** These results hold no TESTING scores of the single-map models: nothing to compare."
    if "draw" not in tables:
        return (
            "**Take-away.** This results folder holds no draw: `python -m stroke_helpers replicate` draws new "
            "TESTING studies from the phantom and scores these models on them."
        )
    testing, draw = ({r["quantity"]: r for r in tables[k]["rows"]} for k in ("TESTING", "draw"))
    moves = {q.removesuffix(" Dice"): draw[q]["value"] - r["value"]
             for q, r in testing.items() if q.endswith(" Dice") and q in draw}  # fmt: skip
    change = ""
    if moves:
        largest = max(moves, key=lambda k: abs(moves[k]))
        change = f"the largest change of a mean Dice is {largest}'s, {moves[largest]:+.3f}. "
    both = [
        q.removesuffix(" Dice")
        for q, r in testing.items()
        if r["passed"] is False and draw.get(q, {}).get("passed") is False
    ]
    verdict = (
        f"{_list(both)} {'misses its target' if len(both) == 1 else 'miss their targets'} on both test sets: not "
        "because of one draw's studies (the models are one seed each; the seeds section shows what a seed moves)"
        if both
        else "No target is missed on both test sets"
    )
    return (
        f"**Take-away.** The same models on other studies: from {tables['TESTING']['label']} to the "
        f"{tables['draw']['label']}, {change}{verdict}. A difference between two test sets is a property of the "
        "studies drawn, which real data rarely lets you measure: here it is one command."
    )


def decision_threshold_takeaway(thresholds: np.ndarray, dice_curve: np.ndarray) -> str:
    best = float(thresholds[int(np.argmax(dice_curve))])
    at_half = float(dice_curve[int(np.argmin(np.abs(thresholds - 0.5)))])
    return (
        f"**Take-away.** The best mean validation Dice, {dice_curve.max():.3f}, is at threshold {best:.2f}; at 0.5 it "
        f"is {at_half:.3f} (a gain of {dice_curve.max() - at_half:.3f}). Choosing the threshold on the same studies "
        "it is scored on would overstate any gain."
    )


def summary_05(results: Path, split: str, data: Path) -> str:
    from .grid import TABLE1

    ours = column_means(results, TABLE1, split)
    rank = sorted(ours, key=lambda k: -ours[k])
    arch = [paired(results, split, claim) for claim in ARCHITECTURE_CLAIMS]
    arch = [c for c in arch if c is not None]
    shown = [c["claim"] for c in arch if c["resolved"]]
    return "\n".join(
        [
            "- **Why the spread is so large:** lesions are small and vary in size many-fold; on a small one a few "
            "voxels decide the Dice, so per-study scores spread widely (exercise 1 measures it).",
            f"- **Which inputs help** ({where(data)}): single inputs rank "
            + ", ".join(f"{k} ({ours[k]:.2f})" for k in rank)
            + "; the paired comparisons say which combinations beat the best single map.",
            "- **MR, attention, the cascade:** "
            + (
                f"this sample resolves {_list(shown)}; "
                if shown
                else "on these studies none is shown to help or hurt; "
            )
            + f"{len(arch) - len(shown)} of {len(arch)} are smaller than what the paired studies can resolve.",
            "- **The threshold:** tuning it on the scored studies overstates the gain (the last section measures it).",
        ]
    )
