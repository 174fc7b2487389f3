"""What each chapter computes: the arrays, numbers and :class:`~stroke_helpers.figures.Panel`
grids its cells show, and which data and results folder a chapter reads (:func:`notebook_paths`,
through :mod:`stroke_helpers.locations`). Chapters compute; :mod:`stroke_helpers.figures` draws.
Running and publishing the chapters is :mod:`stroke_helpers.notebooks`' job."""

from __future__ import annotations

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
    Panel,
    batch_figure,
    darkening_figure,
    figure4_figure,
    maps_side_by_side,
    model_grid_figure,
    realism_figure,
    segmentation_grid,
)
from .grid import ALL_RUN, ROWS, column_name, run_name
from .inference import THRESHOLD, Predictor
from .isles import Study, discover_cases, load_study, read_patients
from .metrics import dice
from .modalities import MODALITIES, PERFUSION_MAPS, channel_index, modality
from .perfusion import core_rcbf, hypoperfusion_tmax, reference_hemisphere, select_aif, tissue_mask
from .phantom.anatomy import SLICE_MM
from .presets import get_preset
from .realism import realism_panels
from .runs import (
    ResultsFolder,
    RunError,
    RunFolder,
    has_weights,
    in_shipped_checkpoint,
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
            shown = images[z, channel_index(mods.split(",")[0])].numpy()
            cells.append(Panel(shown / max(shown.max(), 1e-6), truth, probs[z].numpy() > THRESHOLD))
        grid.append(cells)
    return grid


def largest_lesion(arrays: SliceArrays, names: list[str]) -> tuple[str, int]:
    """The study among ``names`` with the largest lesion slice, and that slice (example figures)."""
    area = {name: int(study_slices(arrays, name)[1].sum((1, 2)).max()) for name in names}
    study = max(names, key=lambda name: (area[name], name))
    return study, largest_lesion_slice(study_slices(arrays, study)[1])


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


def true_vs_deconvolved(data: Path, study: Study, z: int):
    """The phantom's true maps above the maps deconvolved from its noisy 4D series (what ISLES
    provides, here divided by the study's unit scale), same window per column, and a table of
    their medians in healthy tissue and in the true core. ``(None, reason)`` for data without a
    truth folder (real ISLES)."""
    if not has_truth(data):
        return None, no_truth(data)
    truth = read_truth(data, study.name)
    row = case_row(data, study.name)
    # the phantom, like RAPID, writes CBF and CBV in uncalibrated units: undo its scale
    scale = {m: float(row.get(f"{m.lower()}_scale", 1.0)) for m in PERFUSION_MAPS}
    deconvolved = {m: study.images[m].astype(np.float32) / scale[m] for m in scale}
    tissue = tissue_mask(study.CT, brain_mask(study))
    healthy = tissue & ~(truth["core"] | truth["penumbra"]).astype(bool)
    core = tissue & truth["core"].astype(bool)
    lines = [f"median       {'healthy: true':>14s} {'deconvolved':>12s}   {'core: true':>11s} {'deconvolved':>12s}"]
    for m in PERFUSION_MAPS:
        t, d, unit = truth[m], deconvolved[m], modality(m).physical_unit
        tc, dc = (np.median(t[core]), np.median(d[core])) if core.any() else (np.nan, np.nan)
        lines.append(
            f"{m:4s} {unit:>12s} {np.median(t[healthy]):9.2f} {np.median(d[healthy]):12.2f}   {tc:11.2f} {dc:12.2f}"
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
        Panel(tmax, ot[:, :, z], r[:, :, z], f"{name}: Dice {dice(r, ot):.2f}", window=(0, 1.5), label="Tmax / 20 s")
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


def classical_thresholds(study: Study, z: int) -> tuple[list[list[Panel]], str]:
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
    row = [Panel(ct, ot[:, :, z], r[:, :, z]) for r in regions.values()]
    text = f"{study.name}: " + ", ".join(f"{k} Dice {dice(r, ot):.3f}" for k, r in regions.items())
    return [row], text


def baseline_summary(data: Path) -> str:
    """The classical rCBF < 30 % core scored over every training study, in one line."""
    d = np.array([r["dice"] for r in classical_baseline(data, progress=False)])
    return f"rCBF < 30 % over {len(d)} studies: Dice {d.mean():.3f} ± {d.std():.3f} (real ISLES 2018: 0.29)"


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
    """The learning curves of the three configurations of one column."""
    return {row: read_history(require_run(results, f"{row}_{column}")) for row in ROWS}


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
    return Panel(shown, truth[z], predictor(images)[z].numpy() > THRESHOLD)


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


def figure4(results: Path, arrays: SliceArrays, n: int = 4):
    """The paper's Figure 4: stage 1, the cascade and the synthetic map on ``n`` validation
    studies from the smallest lesion to the largest (at quantiles of their largest lesion slice,
    since the paper's case is made on small lesions), each at its largest lesion slice."""
    stage1, cascade = Predictor(require_run(results, ALL_RUN), "cpu"), Predictor(require_run(results, "cascade"), "cpu")
    areas = sorted((int(study_slices(arrays, s)[1].sum((1, 2)).max()), s) for s in cascade.split["val"])
    areas = [a for a in areas if a[0] > 0]
    picks = sorted({round(q * (len(areas) - 1)) for q in np.linspace(0, 1, n)})
    grid: list[list[Panel]] = [[], [], []]
    for _, study in (areas[i] for i in picks):
        images, truth = study_slices(arrays, study)
        z = largest_lesion_slice(truth)
        grid[0].append(predict_slice(stage1, arrays, study, z))
        grid[1].append(predict_slice(cascade, arrays, study, z))
        ms = cascade.synthetic_map(images[z : z + 1])[0, 0].numpy()
        caption = f"{study.split('/')[-1]}, {int(truth[z].sum())} px lesion"
        grid[2].append(Panel(ms, truth[z], None, caption, cmap="inferno", window=(0, 1.5), label="Ms (a.u.)"))
    return figure4_figure(grid)


def validation_probabilities(predictor: Predictor, arrays: SliceArrays) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per validation study of ``predictor``'s run: probabilities and expert masks ``(Z, S, S)``."""
    pairs = [study_slices(arrays, s) for s in predictor.split["val"]]
    return [predictor(images).numpy() for images, _ in pairs], [truth for _, truth in pairs]
