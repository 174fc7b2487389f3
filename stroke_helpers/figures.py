"""Figure-making functions the notebooks show (pure: arrays in, a matplotlib Figure out).

Orientation, the one convention: every function here takes volumes ``(X, Y, Z)`` and slices
``(X, Y)`` in the loader's on-disk order (:func:`axial` cuts one out) and transposes them itself,
where it draws (``imshow(a.T, origin="lower")``, ``contour(a.T)``, ``set_data(a.T)``), so the
face is at the top. Callers never transpose. The first axis runs to the patient's right (RAS,
what the identity affine of the ISLES headers says; the phantom is built that way), so images are
shown in the neurological convention and every image panel carries L and R markers
(:func:`orientation`).

Panels of segmentation figures are :class:`Panel` objects: an image with its window, colormap
and colorbar label, the expert mask and a predicted region outlined, and a caption.

One style for the package (:data:`STYLE`, applied on import so that notebooks, widgets and
saved files agree): 100 dpi on screen, 300 dpi saved, constrained layout (:func:`subplots`),
so suptitles, titles and colorbars never overlap; every image panel has a colorbar in its
units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects

from .datasets import brain_mask, inside_skull
from .metrics import dice
from .modalities import MODALITIES, PERFUSION_MAPS, normalised_label
from .modalities import modality as row_of

#: The package's figure style.
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 9,
    "figure.titlesize": 10,
    "legend.fontsize": 8,
}
plt.rcParams.update(STYLE)


#: On-screen resolution of the many-panel grids (:func:`segmentation_grid`, Figures 2-4): noisy
#: maps compress poorly, and at the style's 100 dpi chapter 05 grew past the 2 MB a committed
#: chapter may take; :func:`save` still writes them at 300 dpi.
GRID_DPI = 80

#: Colours of outlines: the expert mask and a prediction or threshold region. A colour-blind-safe
#: pair (magenta and green stay apart under deuteranopia, protanopia and tritanopia) that stands
#: off every colormap the figures use (gray, magma, inferno, viridis; :func:`colour_contrast`),
#: each line drawn over a thin black halo so it shows on light and dark pixels alike.
EXPERT, PREDICTED = "#ff00ff", "#00ff00"
#: The colours' names, for titles and chapter text.
EXPERT_NAME, PREDICTED_NAME = "magenta", "green"


def _lab(rgb) -> np.ndarray:
    """sRGB in [0, 1] (``(..., 3)``) to CIELAB (D65)."""
    rgb = np.asarray(rgb, dtype=float)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_contrast(colour, cmap: str) -> float:
    """How far a line colour stands off a colormap: the smallest CIELAB distance (ΔE76) between
    ``colour`` and any of 256 colours of ``cmap``. About 2 is a just-noticeable difference; red
    on inferno is 33, the outline colours here are 45 or more on every colormap the figures use."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    samples = colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    return float(np.min(np.linalg.norm(_lab(samples) - _lab(to_rgb(colour)), axis=1)))


def outline(ax, mask: np.ndarray, colour: str = EXPERT, linewidth: float = 1.0, extent=None):
    """The outline of a binary ``(X, Y)`` mask (transposed here, as every image), in ``colour``
    over a black halo; nothing for an empty mask (returns None)."""
    if mask is None or not np.asarray(mask).any():
        return None
    cs = ax.contour(np.asarray(mask, dtype=float).T, levels=[0.5], colors=colour, linewidths=linewidth, extent=extent)
    cs.set_path_effects([patheffects.Stroke(linewidth=linewidth + 1.4, foreground="black"), patheffects.Normal()])
    return cs


def subplots(*args, **kwargs):
    """``plt.subplots`` with constrained layout."""
    return plt.subplots(*args, layout="constrained", **kwargs)


def orientation(ax, color: str = "white") -> None:
    """L and R at the left and right edges of an axial image panel (neurological convention)."""
    kw = {"transform": ax.transAxes, "color": color, "fontsize": 8, "fontweight": "bold", "va": "center"}
    ax.text(0.02, 0.5, "L", ha="left", **kw)
    ax.text(0.98, 0.5, "R", ha="right", **kw)


def colorbar(fig, im, ax, label: str = ""):
    """A slim colorbar beside ``ax`` (or a list of axes), labelled with its units."""
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.ax.tick_params(labelsize=7)
    cb.set_label(label, fontsize=8)
    return cb


def image_panel(
    fig, ax, image, cmap: str, window, label: str = "", title: str = "", bar: bool = True, sides: bool = True
):
    """An axial slice ``(X, Y)`` in its window, with L/R markers (unless ``sides`` is False: an
    augmented slice may be flipped) and a colorbar."""
    im = ax.imshow(image.T, cmap=cmap, vmin=window[0], vmax=window[1], origin="lower")
    if bar:
        colorbar(fig, im, ax, label)
    if sides:
        orientation(ax)
    ax.set_title(title)
    ax.axis("off")
    return im


# Units, windows and colormaps of each modality are rows of stroke_helpers.modalities.TABLE.


def display_window(modality: str, volume: np.ndarray) -> tuple[float, float]:
    """The modality's display window (docs/decisions.md §5) in its units; for an uncalibrated map
    (CBF, CBV: upper end ``None`` in the table) the upper end is the volume's own 99th percentile
    of positive voxels."""
    lo, hi = row_of(modality).window
    if hi is None:
        hi = float(np.percentile(volume[volume > 0], 99)) if (volume > 0).any() else 1.0
    return lo, hi


def axial(volume: np.ndarray, z: int) -> np.ndarray:
    """The axial slice ``z`` of a volume ``(X, Y, Z)``, as ``(X, Y)``."""
    return volume[:, :, z]


@dataclass
class Panel:
    """One image panel of :func:`segmentation_grid` or :func:`draw_overlays`.

    ``image (X, Y)`` in ``window`` with ``cmap``, its colorbar labelled ``label``; ``truth`` and
    ``pred`` ``(X, Y)`` binary masks outlined (expert, predicted), either may be None;
    ``caption`` under the panel (default in a segmentation grid: the slice Dice of ``pred``)."""

    image: np.ndarray
    truth: np.ndarray | None = None
    pred: np.ndarray | None = None
    caption: str = ""
    cmap: str = "gray"
    window: tuple[float, float] = (0.0, 1.0)
    label: str = ""


def ct_realism(ct: np.ndarray) -> dict[str, float]:
    """Numbers to compare a CT with another: background value, brain median and IQR (HU, voxels
    of 0-100 HU inside the skull), skull 99th percentile, fraction of the slab inside the head."""
    ct = np.asarray(ct)
    values, counts = np.unique(ct[[0, -1]], return_counts=True)
    background = values[np.argmax(counts)]
    inside, skull = inside_skull(ct)
    brain = ct[inside & ~skull & (ct >= 0) & (ct <= 100)]
    q1, med, q3 = np.percentile(brain, [25, 50, 75]) if brain.size else (np.nan,) * 3
    return {
        "background_hu": float(background),
        "brain_median_hu": float(med),
        "brain_iqr_hu": float(q3 - q1),
        "skull_p99_hu": float(np.percentile(ct[skull], 99)) if skull.any() else float("nan"),
        "head_fraction": float((ct != background).mean()),
    }


def ct_realism_figure(
    phantom_ct: np.ndarray, real_ct: np.ndarray, z_phantom: int | None = None, z_real: int | None = None
):
    """Phantom CT next to the real ISLES CT (brain window) and their brain-intensity histograms."""
    z_phantom = phantom_ct.shape[2] // 2 if z_phantom is None else z_phantom
    z_real = real_ct.shape[2] // 2 if z_real is None else z_real
    fig, axes = subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    for ax, vol, z, title in (
        (axes[0], phantom_ct, z_phantom, "phantom CT"),
        (axes[1], real_ct, z_real, "real ISLES CT (case 1)"),
    ):
        ct = row_of("CT")
        image_panel(fig, ax, axial(vol, z), ct.cmap, ct.window, ct.unit, f"{title}, slice {z}")
    for vol, label in ((phantom_ct, "phantom"), (real_ct, "real")):
        n = ct_realism(vol)
        head = (vol != n["background_hu"]) & (vol >= -30) & (vol <= 110)
        axes[2].hist(
            vol[head].ravel(),
            bins=70,
            range=(-30, 110),
            histtype="step",
            density=True,
            label=f"{label}: brain median {n['brain_median_hu']:.0f} HU, background {n['background_hu']:.0f}",
        )
    axes[2].set_xlabel(f"CT ({row_of('CT').unit})")
    axes[2].set_ylabel("density (1/HU)")
    axes[2].set_title("head voxels, −30…110 HU")
    axes[2].legend(fontsize=8)
    return fig


def study_figure(volumes: dict[str, np.ndarray], z: int, mask: np.ndarray | None = None, title: str = ""):
    """One slice of every modality in its display window, the lesion outline in :data:`EXPERT`."""
    names = [m for m in MODALITIES if m in volumes]
    fig, axes = subplots(1, len(names), figsize=(2.9 * len(names), 2.9))
    for ax, m in zip(np.atleast_1d(axes), names):
        image_panel(fig, ax, axial(volumes[m], z), cmap_of(m), display_window(m, volumes[m]), row_of(m).unit, m)
        if mask is not None:
            outline(ax, axial(mask, z), EXPERT, 0.8)
    fig.suptitle(title)
    return fig


def modality_histograms(studies, modalities=MODALITIES, bins: int = 60):
    """Intensity histograms of brain voxels per modality (lesion vs the rest of the brain), in
    each modality's units as provided. The x range is the modality's display window; for the
    uncalibrated maps (CBF, CBV) it ends at the 97th percentile of healthy brain or the 99th of
    the lesion, whichever is higher, so that the few vessel voxels (ten times brighter) do not
    squeeze both curves into a corner. Integer-valued maps get whole-unit bins. Densities are per unit
    of x: the curves compare shapes."""
    fig, axes = subplots(1, len(modalities), figsize=(3.2 * len(modalities), 2.8))
    for ax, m in zip(np.atleast_1d(axes), modalities):
        inside, lesion = [], []
        for s in studies:
            brain = brain_mask(s)
            les = s.mask.astype(bool) if s.mask is not None else np.zeros_like(brain)
            inside.append(s.images[m][brain & ~les])
            lesion.append(s.images[m][brain & les])
        inside, lesion = np.concatenate(inside), np.concatenate(lesion)
        lo, hi = row_of(m).window
        if hi is None:
            hi = max(np.percentile(inside, 97), np.percentile(lesion, 99) if lesion.size else 0.0)
        edges = np.linspace(lo, hi, bins + 1)
        if np.all(np.mod(inside[:10_000], 1) == 0) and hi - lo > 1:  # integer-valued (the ISLES uint16 maps):
            step = max(1.0, np.ceil((hi - lo) / bins))  # whole-unit bins, or every other bin is empty (a comb)
            edges = np.arange(np.floor(lo) - 0.5, hi + step, step)
        kw = {"bins": edges, "density": True, "histtype": "step"}
        ax.hist(inside, label="brain", color="C0", **kw)
        ax.hist(lesion, label="lesion", color=EXPERT, **kw)
        ax.set_title(m)
        unit = row_of(m).unit
        ax.set_xlabel(f"{m} ({unit})")
        ax.set_ylabel(f"density (1/{unit})" if unit else "density")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    np.atleast_1d(axes)[0].legend(fontsize=8)
    return fig


def lesion_volume_histogram(volumes_ml, reference_median: float | None = 15.2):
    """Distribution of lesion volumes (mL), with ISLES 2018's median marked."""
    fig, ax = subplots(figsize=(5, 3))
    ax.hist(volumes_ml, bins=20, color="gray")
    ax.axvline(np.median(volumes_ml), color="k", label=f"median {np.median(volumes_ml):.1f} mL")
    if reference_median is not None:
        ax.axvline(reference_median, color="red", ls="--", label=f"ISLES 2018 median {reference_median} mL")
    ax.set_xlabel("lesion volume (mL)")
    ax.set_ylabel("studies")
    ax.legend(fontsize=8)
    return fig


def time_curves(times: np.ndarray, curves: dict[str, np.ndarray]):
    """Time-attenuation curves (HU above baseline) of tissue regions, with the arterial input on
    the same time axis (its own HU scale on the right: it peaks tens of times higher)."""
    fig, ax = subplots(figsize=(7.5, 3.6))
    aif_ax = ax.twinx()
    for name, c in curves.items():
        if name.lower().startswith("arter"):
            aif_ax.plot(times, c - c[:2].mean(), color="gray", ls="--", label=name)
        else:
            ax.plot(times, c - c[:2].mean(), label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("tissue enhancement (HU)")
    aif_ax.set_ylabel("arterial input (HU)", color="gray")
    lines = ax.get_legend_handles_labels(), aif_ax.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="upper right")
    return fig


def maps_side_by_side(rows: dict[str, dict[str, np.ndarray]], z: int, windows: dict | None = None):
    """One row per set of maps in physical units (e.g. the phantom's true maps, then the
    deconvolved ones brought back to them), the same window down every column (the first row's,
    unless ``windows`` gives one)."""
    labels = list(rows)
    names = [m for m in PERFUSION_MAPS if all(m in rows[k] for k in labels)]
    fig, axes = subplots(len(labels), len(names), figsize=(2.9 * len(names), 2.7 * len(labels)), squeeze=False)
    for j, m in enumerate(names):
        window = (windows or {}).get(m) or display_window(m, rows[labels[0]][m])
        for i, label in enumerate(labels):
            unit = row_of(m).physical_unit
            image_panel(fig, axes[i, j], axial(rows[label][m], z), row_of(m).cmap, window, unit, f"{m}, {label}")
    return fig


def batch_figure(images: np.ndarray, masks: np.ndarray, channels: list[str], names: list[str]):
    """A training batch as the network sees it: ``images (B, C, S, S)`` after normalisation and
    augmentation, one row per slice, one column per channel, the (augmented) mask outlined. No L/R
    markers: augmentation flips slices."""
    b, c = images.shape[:2]
    fig, axes = subplots(b, c, figsize=(2.3 * c + 0.8, 2.3 * b), squeeze=False)
    for j, name in enumerate(channels):
        for i in range(b):
            ax = axes[i, j]
            im = image_panel(
                fig, ax, images[i, j], cmap_of(name), (0, 1.5), bar=False, title=name if i == 0 else "", sides=False
            )
            outline(ax, masks[i], EXPERT, 0.8)
            if j == 0:
                ax.text(-0.06, 0.5, names[i], transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=7)
    colorbar(fig, im, list(axes.ravel()), f"normalised input ({normalised_label(channels)})")
    return fig


def darkening_figure(onset_min: np.ndarray, measured_hu: np.ndarray, designed_hu: np.ndarray):
    """The core's NCCT darkening (HU) against time since onset (min), measured on the CT and as
    the phantom set it."""
    fig, ax = subplots(figsize=(5.5, 3.4))
    ax.scatter(onset_min, measured_hu, s=14, label="measured on the CT (healthy - core median)")
    ax.scatter(onset_min, designed_hu, s=14, marker="x", color="gray", label="set by the phantom")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("time since onset (min)")
    ax.set_ylabel("core darkening (HU)")
    ax.legend()
    return fig


#: The history column of the full-resolution (level 1) loss term, the one loss every configuration has.
FULL_LOSS = "train_loss_full"


def learning_curves(histories: dict[str, list[dict]]):
    """Training loss and validation Dice per epoch for several runs.

    The loss drawn is the **full-resolution term** (``mean(C * BCE)`` of the level-1 output,
    history column :data:`FULL_LOSS`), the one term every configuration has: a multilevel run's
    recorded total adds five more weighted terms, so totals of MR and base runs are not
    comparable. A history without that column (recorded before it existed) gets no loss curve
    and the panel says so."""
    fig, axes = subplots(1, 2, figsize=(10, 3.4))
    missing = [name for name, h in histories.items() if not h or any(FULL_LOSS not in r for r in h)]
    for name, h in histories.items():
        epochs = [r["epoch"] for r in h]
        if name not in missing:
            axes[0].plot(epochs, [r[FULL_LOSS] for r in h], marker=".", label=name)
        axes[1].plot(epochs, [r["val_dice"] for r in h], marker=".", label=name)
    if missing:
        axes[0].text(
            0.5,
            0.5,
            f"no full-resolution loss recorded for {', '.join(missing)}:\n"
            "their histories predate it, and totals of\nsingle- and multi-term losses do not compare",
            transform=axes[0].transAxes,
            ha="center",
            va="center",
            fontsize=8,
        )
    axes[0].set_title("training loss, full-resolution term")
    axes[0].set_ylabel("weighted BCE, level 1 (per pixel)")
    axes[1].set_title("validation Dice (per study, training resolution)")
    axes[1].set_ylabel("mean Dice over studies")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def _outline(ax, image, truth, pred=None, title="", cmap="gray", window=(0, 1)):
    im = ax.imshow(image.T, cmap=cmap, origin="lower", vmin=window[0], vmax=window[1])
    orientation(ax)
    outline(ax, truth, EXPERT)
    outline(ax, pred, PREDICTED)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return im


def level_outputs(image: np.ndarray, truth: np.ndarray, levels: np.ndarray, weights=None):
    """The six deep-supervision outputs (probabilities), bottleneck (level 6) to level 1."""
    fig, axes = subplots(1, len(levels) + 1, figsize=(2.6 * (len(levels) + 1), 2.8))
    colorbar(
        fig,
        _outline(axes[0], image, truth, title=f"input + expert ({EXPERT_NAME})"),
        axes[0],
        normalised_label(["Tmax"]),
    )
    for k, (ax, p) in enumerate(zip(axes[1:], levels)):
        im = ax.imshow(p.T, cmap="viridis", vmin=0, vmax=1, origin="lower")
        orientation(ax)
        level = len(levels) - k
        ax.set_title(f"level {level}" + (f" (W={weights[k]})" if weights is not None else ""), fontsize=9)
        ax.axis("off")
    colorbar(fig, im, list(axes[1:]), "probability")
    return fig


def save(fig, path: Path, dpi: int = STYLE["savefig.dpi"]) -> Path | None:
    """Write ``fig`` to ``path`` (tight bounding box); nothing for a figure that was not drawn (None)."""
    if fig is None:
        return None
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return Path(path)


def segmentation_grid(grid: list[list[Panel | None]], row_labels=(), col_labels=(), image_label: str = ""):
    """Panels like the paper's Figures 2-4: expert outline :data:`EXPERT`, prediction
    :data:`PREDICTED`, and each :class:`Panel`'s caption (default: the **slice** Dice of its
    prediction); ``None`` leaves a panel empty. Colorbars name the map they belong to (a panel's
    ``label``, else ``image_label``): in a grid of several rows whose columns each show one kind of
    image (one label, colormap and window; Figures 2 and 3: one input per column), one per column
    under the grid, unless every row is alike too; else one per row when each row's panels show
    one kind of image; else one per panel."""
    rows, cols = len(grid), max(len(r) for r in grid)
    fig, axes = subplots(rows, cols, figsize=(2.6 * cols + 0.6, 2.6 * rows + (0.4 if rows > 1 else 0)), squeeze=False)
    fig.set_dpi(GRID_DPI)
    cell = {(r, c): p for r, row in enumerate(grid) for c, p in enumerate(row[:cols]) if p is not None}

    def key(p):
        return p.label or image_label, p.cmap, tuple(p.window)

    by_col = rows > 1 and all(len({key(p) for (_, c), p in cell.items() if c == j}) <= 1 for j in range(cols))
    by_row = not by_col and all(len({key(p) for (r, _), p in cell.items() if r == i}) <= 1 for i in range(rows))
    if by_col and cols > 1 and all(len({key(p) for (r, _), p in cell.items() if r == i}) <= 1 for i in range(rows)):
        by_col, by_row = False, True  # every row alike too: one colorbar per row, as before
    images = {}
    for r in range(rows):
        for c in range(cols):
            ax, p = axes[r, c], cell.get((r, c))
            if p is None:
                ax.axis("off")
                continue
            caption = p.caption or (f"slice Dice {dice(p.pred, p.truth):.2f}" if p.pred is not None else "")
            images[r, c] = _outline(ax, p.image, p.truth, p.pred, caption, p.cmap, p.window)
            if r == 0 and c < len(col_labels):
                ax.set_title(f"{col_labels[c]}\n{caption}", fontsize=9)
            if c == 0 and r < len(row_labels):
                ax.text(
                    -0.08, 0.5, row_labels[r], transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=9
                )
            if not (by_row or by_col):
                colorbar(fig, images[r, c], ax, p.label or image_label)
    groups = range(rows) if by_row else range(cols) if by_col else ()
    for g in groups:
        members = sorted(rc for rc in images if rc[0 if by_row else 1] == g)
        if not members:
            continue
        label = cell[members[0]].label or image_label
        if by_row:
            colorbar(fig, images[members[0]], [axes[rc] for rc in members], label)
        else:
            cb = fig.colorbar(
                images[members[0]], ax=[axes[rc] for rc in members], location="bottom", fraction=0.05, pad=0.02
            )
            cb.ax.tick_params(labelsize=7)
            cb.set_label(label, fontsize=8)
    return fig


def model_grid_figure(grid: list[list[Panel]], rows, columns, title: str):
    """The paper's Figures 2 and 3: one slice predicted by every configuration (``rows``) and
    input (``columns``)."""
    fig = segmentation_grid(grid, row_labels=rows, col_labels=columns)
    fig.suptitle(title, fontsize=9)
    return fig


def figure4_figure(grid: list[list[Panel]]):
    """The paper's Figure 4: stage 1, the cascade and the synthetic map ``Ms``, one column per study."""
    return segmentation_grid(grid, row_labels=("stage 1", "cascade", "synthetic map Ms"))


def synthetic_map_figure(channels: dict[str, np.ndarray], ms: np.ndarray, truth: np.ndarray):
    """The synthetic map ``Ms`` beside CT and the perfusion maps (the paper's Figure 4)."""
    names = list(channels)
    fig, axes = subplots(1, len(names) + 1, figsize=(2.6 * (len(names) + 1), 2.9))
    for ax, name in zip(axes, names):
        image_panel(
            fig, ax, channels[name], cmap_of(name), row_of(name).normalised_window, normalised_label([name]), name
        )
    image_panel(fig, axes[-1], ms, "inferno", (0, 1.5), "Ms (a.u.)", "synthetic map Ms")
    for ax in axes:
        outline(ax, truth, EXPERT, 0.7)
    return fig


def class_weight_figure(image: np.ndarray, truth: np.ndarray, weights: np.ndarray):
    """A slice, its mask and its class-weight map ``C``."""
    fig, axes = subplots(1, 3, figsize=(10, 3.0))
    image_panel(fig, axes[0], image, "gray", (0, 1.5), normalised_label(["Tmax"]), "input")
    image_panel(fig, axes[1], truth, "gray", (0, 1), "lesion (1) or not (0)", "expert mask Y")
    image_panel(fig, axes[2], weights, "coolwarm", (0, 1), "weight", "class weights C")
    return fig


def draw_attention(image: np.ndarray, mask: np.ndarray, attention: dict[int, np.ndarray], level: int, title: str = ""):
    """An input slice with the lesion outline, and the attention map of one decoder level.

    ``image``, ``mask``: ``(S, S)``; ``attention``: ``{level: (h, w)}`` maps in [0, 1].
    """
    fig, axes = subplots(1, 2, figsize=(7, 3.6))
    image_panel(
        fig, axes[0], image, "gray", (float(image.min()), float(image.max()) or 1.0), "normalised", title or "input"
    )
    a = attention[level]
    im = axes[1].imshow(
        a.T, cmap="viridis", vmin=0, vmax=1, origin="lower", extent=(0, image.shape[0], 0, image.shape[1])
    )
    axes[1].set_title(f"attention, level {level} ({a.shape[0]}x{a.shape[1]})")
    orientation(axes[1])
    for ax in axes:
        outline(ax, mask, EXPERT, 0.8)
        ax.axis("off")
    colorbar(fig, im, axes[1], "attention (0-1)")
    return fig


def attention_levels(images: np.ndarray, masks: np.ndarray, maps: dict[str, dict[int, np.ndarray]], i: int = 0):
    """One row per model (e.g. untrained, trained): slice ``i`` of ``images (N, S, S)`` with its
    lesion outline, then that slice's attention map at every decoder level, 1 (full resolution) first.

    ``maps``: ``{model name: {level: (N, h, w)}}``."""
    names = list(maps)
    levels = sorted(maps[names[0]])
    fig, axes = subplots(
        len(names), len(levels) + 1, figsize=(2.5 * (len(levels) + 1), 2.7 * len(names)), squeeze=False
    )
    for r, name in enumerate(names):
        image_panel(fig, axes[r, 0], images[i], "magma", (0, 1.5), normalised_label(["Tmax"]), f"input ({name})")
        outline(axes[r, 0], masks[i], EXPERT, 0.8)
        for c, lvl in enumerate(levels, start=1):
            im = axes[r, c].imshow(maps[name][lvl][i].T, cmap="viridis", vmin=0, vmax=1, origin="lower")
            axes[r, c].set_title(f"level {lvl}", fontsize=9)
            orientation(axes[r, c])
        colorbar(fig, im, list(axes[r, 1:]), "attention")
    for ax in axes.ravel():
        ax.axis("off")
    return fig


def draw_threshold_curve(thresholds: np.ndarray, dice_curve: np.ndarray, precision_curve: np.ndarray, current: float):
    """Dice and precision against the threshold, the current threshold marked."""
    fig, ax = subplots(figsize=(5.5, 3.5))
    ax.plot(thresholds, dice_curve, label="Dice")
    ax.plot(thresholds, precision_curve, label="precision")
    i = int(np.argmin(np.abs(thresholds - current)))
    ax.axvline(current, color="gray", ls="--")
    ax.set_title(f"threshold {current:.2f}: Dice {dice_curve[i]:.3f}, precision {precision_curve[i]:.3f}")
    ax.set_xlabel("decision threshold on the predicted probability")
    ax.set_ylabel("mean over studies")
    ax.set_ylim(0, 1)
    ax.legend()
    return fig


def forest_plot(comparisons: list[dict], title: str = ""):
    """Paired comparisons as a forest plot: each claim's mean per-study Dice difference and its
    95 % interval; the line at 0 is "no difference" (resolved claims drawn solid)."""
    n = len(comparisons)
    fig, ax = subplots(figsize=(7.5, 0.45 * n + 1.2))
    for i, c in enumerate(comparisons):
        y = n - 1 - i
        style = {"color": "C0" if c["resolved"] else "gray", "lw": 2}
        ax.plot([c["low"], c["high"]], [y, y], **style)
        ax.plot(c["mean"], y, "o", color=style["color"])
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(range(n), [c["claim"] for c in reversed(comparisons)], fontsize=8)
    ax.set_xlabel("mean per-study Dice difference (a - b), 95 % paired bootstrap interval")
    ax.set_title(title, fontsize=9)
    return fig


def test_sets_plot(tables: dict[str, list[dict]], title: str = ""):
    """The learned-difficulty checks on several test sets (``{label: rows}``,
    :func:`stroke_helpers.difficulty.on_test_sets`): per input, each set's mean Dice with its 95 %
    interval, side by side, over the map's target range (shaded)."""
    quantities = [
        q for q in dict.fromkeys(r["quantity"] for rows in tables.values() for r in rows) if q.endswith(" Dice")
    ]
    found = {label: {r["quantity"]: r for r in rows} for label, rows in tables.items()}
    fig, ax = subplots(figsize=(7.5, 3.2))
    width = 0.7 / max(len(tables), 1)
    for i, q in enumerate(quantities):
        target = next((found[label][q]["target"] for label in tables if q in found[label]), "")
        if target:
            lo, hi = (float(v) for v in target.split(" - "))
            ax.fill_between([i - 0.42, i + 0.42], lo, hi, color="0.9", lw=0)
        for j, label in enumerate(tables):
            r = found[label].get(q)
            if r is None:
                continue
            x = i - 0.35 + width * (j + 0.5)
            ax.plot([x, x], [r["low"], r["high"]], color=f"C{j}", lw=2)
            shown = label in ax.get_legend_handles_labels()[1]
            ax.plot(x, r["value"], "o", color=f"C{j}", label=None if shown else label)
    ax.set_xticks(range(len(quantities)), [q.removesuffix(" Dice") for q in quantities])
    ax.set_ylabel("mean Dice, 95 % bootstrap interval")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title + ("; " if title else "") + "grey: the target range", fontsize=9)
    return fig


# --- live views: a figure drawn once, then updated in place (widgets and the explorer app) --------


def cmap_of(name: str) -> str:
    """The modality's colormap (an unknown name is refused in one line)."""
    return row_of(name).cmap


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (Agg, whatever the notebook's backend)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    return buf.getvalue()


def _set_outlines(ax, masks: list[tuple[np.ndarray | None, str]], extent=None) -> None:
    """Replace the contour lines of ``ax`` with one per ``(mask (X, Y), colour)`` (empty masks: none)."""
    for artist in getattr(ax, "_live_outlines", []):
        artist.remove()
    ax._live_outlines = []
    for mask, colour in masks:
        cs = outline(ax, mask, colour, extent=extent)
        if cs is not None:
            ax._live_outlines.append(cs)


def draw_maps(
    slices: dict[str, np.ndarray],
    windows: dict[str, tuple[float, float]],
    outline: np.ndarray | None = None,
    title: str = "",
):
    """One panel per map (axial slices ``(X, Y)``, :func:`axial`), each in its own window with a colorbar in
    its units (the modality table's), the lesion ``outline`` in :data:`EXPERT`. :func:`update_maps` redraws it."""
    names = list(slices)
    if not names:
        raise ValueError("draw_maps needs at least one map")
    fig, axes = subplots(1, len(names), figsize=(2.9 * len(names), 3.0), squeeze=False)
    for ax, m in zip(axes[0], names):
        im = ax.imshow(slices[m].T, cmap=cmap_of(m), vmin=windows[m][0], vmax=windows[m][1], origin="lower")
        colorbar(fig, im, ax, row_of(m).unit)
        orientation(ax)
        ax.set_title(m, fontsize=9)
        ax.axis("off")
    update_maps(fig, slices, windows, outline, title)
    return fig


def update_maps(fig, slices, windows, outline=None, title: str = "") -> None:
    """Show other slices, windows or outline in a :func:`draw_maps` figure, in place."""
    for ax, m in zip([a for a in fig.axes if a.images and a.get_title()], slices):
        im = ax.images[0]
        im.set_data(slices[m].T)
        im.set_clim(*windows[m])
        _set_outlines(ax, [(outline, EXPERT)])
    fig.suptitle(title, fontsize=9)


def draw_series(
    frame: np.ndarray,
    window: tuple[float, float],
    point: tuple[int, int],
    times: np.ndarray,
    curves: dict[str, np.ndarray],
    t: int,
    title: str = "",
):
    """One frame of the 4D series (axial) with the chosen voxel marked, and time-attenuation
    curves (HU above the first two frames) with the frame's time marked. :func:`update_series`."""
    fig, (a0, a1) = subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 1.4]})
    pwi = row_of("4DPWI")
    colorbar(fig, a0.imshow(frame.T, cmap=pwi.cmap, vmin=window[0], vmax=window[1], origin="lower"), a0, pwi.unit)
    orientation(a0)
    a0.plot([point[0]], [point[1]], "+", color="cyan", ms=12, mew=2)
    a0.axis("off")
    a1.axvline(times[t], color="gray", ls="--")
    for name in curves:
        a1.plot([], [], label=name)
    a1.set_xlabel("time (s)")
    a1.set_ylabel("enhancement (HU)")
    update_series(fig, frame, window, point, times, curves, t, title)
    return fig


def update_series(fig, frame, window, point, times, curves, t, title="") -> None:
    """Show another frame, voxel or curves in a :func:`draw_series` figure, in place."""
    a0, a1 = fig.axes[:2]
    a0.images[0].set_data(frame.T)
    a0.images[0].set_clim(*window)
    a0.lines[0].set_data([point[0]], [point[1]])
    a0.set_title(title or f"t = {times[t]:.1f} s", fontsize=9)
    a1.lines[0].set_xdata([times[t], times[t]])
    for line, (name, c) in zip(a1.lines[1:], curves.items()):
        line.set_data(times, c - c[:2].mean())
        line.set_label(name)
    a1.relim()
    a1.autoscale_view()
    a1.legend(fontsize=7, loc="upper right")
    a1.set_title(f"frame {t}: {times[t]:.1f} s", fontsize=9)


def draw_overlays(panels: list[Panel], curves: dict | None = None, title: str = ""):
    """Slices with the expert outline (:data:`EXPERT`) and a predicted or thresholded region (:data:`PREDICTED`).

    ``panels``: :class:`Panel` objects, the caption as each panel's title. Optionally, beside them,
    ``curves = {"x": thresholds, "Dice": ..., "precision": ..., "current": t}`` with the current
    threshold marked. :func:`update_overlays` redraws it in place."""
    n = len(panels) + (1 if curves else 0)
    fig, axes = subplots(1, n, figsize=(4.0 * n + 0.6, 3.7), squeeze=False)
    for ax, p in zip(axes[0], panels):
        im = ax.imshow(p.image.T, cmap=p.cmap, vmin=p.window[0], vmax=p.window[1], origin="lower")
        colorbar(fig, im, ax, p.label)
        orientation(ax)
        ax.axis("off")
    if curves:
        c = axes[0, -1]
        for name in ("Dice", "precision", "recall"):
            if name in curves:
                c.plot(curves["x"], curves[name], label=name)
        c.axvline(curves["current"], color="gray", ls="--")
        c.set_xlabel(curves.get("x_label", "decision threshold on the predicted probability"))
        c.set_ylabel("mean over studies")
        c.set_ylim(0, 1)
        c.legend(fontsize=7)
        c.set_title("mean over the studies", fontsize=9)
    update_overlays(fig, panels, curves, title)
    return fig


def update_overlays(fig, panels: list[Panel], curves: dict | None = None, title: str = "") -> None:
    """Show other slices, regions or thresholds in a :func:`draw_overlays` figure, in place."""
    for ax, p in zip([a for a in fig.axes if a.images], panels):
        ax.images[0].set_data(p.image.T)
        ax.images[0].set_clim(*p.window)
        _set_outlines(ax, [(p.truth, EXPERT), (p.pred, PREDICTED)])
        ax.set_title(p.caption, fontsize=9)
    if curves:
        marker = [a for a in fig.axes if a.get_xlabel()][0].lines[-1]
        marker.set_xdata([curves["current"], curves["current"]])
    if title:
        fig.suptitle(title, fontsize=9)


def draw_levels(
    image: np.ndarray,
    mask: np.ndarray,
    maps: dict[str, np.ndarray],
    windows: dict[str, tuple[float, float]] | None = None,
    title: str = "",
):
    """An input slice with the lesion outline, then maps of any size over the same field of view
    (attention, similarities, the synthetic map ``Ms``), each with a colorbar. :func:`update_levels`."""
    fig, axes = subplots(1, len(maps) + 1, figsize=(3.2 * (len(maps) + 1), 3.3), squeeze=False)
    extent = (0, image.shape[0], 0, image.shape[1])
    axes[0, 0].imshow(image.T, cmap="gray", origin="lower", extent=extent)
    for ax, name in zip(axes[0, 1:], maps):
        colorbar(fig, ax.imshow(maps[name].T, cmap="viridis", origin="lower", extent=extent), ax, "a.u.")
    for ax in axes[0]:
        orientation(ax)
        ax.axis("off")
    update_levels(fig, image, mask, maps, windows, title)
    return fig


def update_levels(fig, image, mask, maps, windows=None, title="") -> None:
    """Show another slice, level or channel in a :func:`draw_levels` figure, in place."""
    panels = [a for a in fig.axes if a.images]
    extent = (0, image.shape[0], 0, image.shape[1])
    panels[0].images[0].set_data(image.T)
    panels[0].images[0].set_clim(float(image.min()), float(image.max()) or 1.0)
    panels[0].set_title(title or "input", fontsize=9)
    for ax, (name, a) in zip(panels[1:], maps.items()):
        lo, hi = (windows or {}).get(name, (float(a.min()), float(a.max())))
        ax.images[0].set_data(a.T)
        ax.images[0].set_clim(lo, hi if hi > lo else lo + 1)
        ax.set_title(f"{name} ({a.shape[0]}x{a.shape[1]})", fontsize=9)
    for ax in panels:
        _set_outlines(ax, [(mask, EXPERT)], extent=extent)


def realism_figure(panels: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Axial CT slices side by side in one brain window (0-80 HU), each titled with its brain HU
    percentiles: ``panels`` = ``{title: (slice (X, Y), percentiles)}`` as
    :func:`stroke_helpers.realism.realism_panels` gives them."""
    fig, axes = subplots(1, len(panels), figsize=(11, 4.0))
    for ax, (title, (img, pct)) in zip(axes, panels.items(), strict=True):
        pct_text = "/".join(f"{v:.0f}" for v in pct)
        im = image_panel(
            fig, ax, img, "gray", (0, 80), bar=False, title=f"{title}\nbrain HU p5/25/50/75/95: {pct_text}"
        )
    colorbar(fig, im, list(axes), "HU")
    return fig


# --- the architecture, drawn from a model ---------------------------------------------------------


def _conv_channels(block) -> tuple[int, int]:
    """``(in, out)`` channels of a :class:`~stroke_helpers.model.ConvBlock` (its first and last conv)."""
    convs = [m for m in block.modules() if isinstance(m, __import__("torch").nn.Conv2d)]
    return convs[0].in_channels, convs[-1].out_channels


def architecture_figure(model, size: int = 224, title: str = ""):
    """The block diagram of a :class:`~stroke_helpers.model.CrossAttentionAutoencoder` (the
    paper's Figure 1), read from the model itself, not from a description of it: each encoder
    and decoder level's channels (its convolutions' widths) and resolution (``size`` halved per
    level), an additive cross-attention gate on every skip that has one (``ATT``, with the
    channels of ``X_e``, ``X_d`` and ``F_int`` read from its 1x1 convolutions; a plain arrow
    where the skip is copied), and an output head on every level that has one, with its weight in
    the multilevel loss. Level 1 is full resolution, as in the paper and :mod:`stroke_helpers.model`."""
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    from .loss import LEVEL_WEIGHTS
    from .model import AdditiveCrossAttention

    enc = [_conv_channels(b) for b in model.encoder]
    dec = [_conv_channels(b) for b in model.decoder]  # dec[i] produces level i + 1
    gates = [g if isinstance(g, AdditiveCrossAttention) else None for g in model.attention]
    heads = list(model.heads)
    depth = len(enc)
    sides = [size // 2**i for i in range(depth)]
    fig, ax = subplots(figsize=(10, 0.95 * depth + 1.6))
    ax.set_xlim(-1.6, 11.6)
    ax.set_ylim(-depth + 0.35, 1.3)
    ax.axis("off")
    x_enc, x_gate, x_dec, x_head, w, h = 0.0, 4.2, 6.4, 9.4, 2.2, 0.62

    def box(x, y, text, colour):
        ax.add_patch(
            FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.03", fc=colour, ec="black", lw=0.8)
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=7.5)

    def arrow(a, b, text="", **kw):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, lw=0.9, color="black", **kw))
        if text:
            ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, text, fontsize=6.5, ha="left", va="center", color="0.25")

    def y(level):
        return -(level - 1)

    ax.text(x_enc, 1.0, f"input: {enc[0][0]} channels, {size}x{size} px", ha="center", fontsize=8)
    arrow((x_enc, 0.85), (x_enc, y(1) + h / 2))
    for i, (_, c) in enumerate(enc):
        level = i + 1
        bottleneck = level == depth
        x = (x_enc + x_dec) / 2 if bottleneck else x_enc
        name = "bottleneck" if bottleneck else "encoder"
        box(
            x,
            y(level),
            f"{name} level {level}\n{c} ch, {sides[i]}x{sides[i]}",
            "#cfe3f7" if not bottleneck else "#e6e6e6",
        )
        if i:
            src = (x_enc, y(level - 1) - h / 2)
            dst = (x + (0 if not bottleneck else -w / 2), y(level) + (h / 2 if not bottleneck else 0))
            arrow(src, dst, " max-pool 2x2" if level == 2 else "")
    for i in reversed(range(depth - 1)):
        level = i + 1
        c_in, c = dec[i]
        box(x_dec, y(level), f"decoder level {level}\n{c} ch, {sides[i]}x{sides[i]}", "#fde2c8")
        below = (x_dec, y(level + 1) + h / 2) if level + 1 < depth else ((x_enc + x_dec) / 2 + w / 2, y(depth))
        arrow(below, (x_dec, y(level) - h / 2), " bilinear x2" if level == depth - 1 else "")
        g = gates[i]
        start, end = (x_enc + w / 2, y(level)), (x_dec - w / 2, y(level))
        if g is None:
            arrow(start, end)
            ax.text(x_gate, y(level) + 0.12, "skip (copy)", ha="center", fontsize=6.5, color="0.25")
        else:
            r = 0.3
            ax.add_patch(Circle((x_gate, y(level)), r, fc="#f7c6e9", ec="black", lw=0.8))
            ax.text(x_gate, y(level), "ATT", ha="center", va="center", fontsize=6.5, fontweight="bold")
            arrow(start, (x_gate - r, y(level)))
            arrow((x_gate + r, y(level)), end)
            ax.text(
                x_gate,
                y(level) + r + 0.05,
                f"X_e {g.w_e.in_channels} ch, X_d {g.w_d.in_channels} ch, F_int {g.w_e.out_channels}",
                ha="center",
                va="bottom",
                fontsize=6,
                color="0.25",
            )
            # X_d, the decoder features of the level below upsampled, also enters the gate
            ax.add_patch(
                FancyArrowPatch(
                    (x_dec, y(level) - 0.5),
                    (x_gate, y(level) - r),
                    arrowstyle="-|>",
                    mutation_scale=7,
                    lw=0.6,
                    color="0.4",
                    ls="--",
                    connectionstyle="arc3,rad=-0.2",
                )
            )
            ax.text(x_gate + 0.35, y(level) - 0.42, "X_d", fontsize=6, color="0.4", ha="left", va="center")
        ax.text(
            x_dec + w / 2 + 0.05,
            y(level) + h / 2 - 0.02,
            f"concat: {c_in} ch in",
            ha="left",
            va="bottom",
            fontsize=6,
            color="0.25",
        )
    # heads: heads[k] reads level k + 1
    # the loss weights, bottleneck first (a single head: weight 1; another depth: none to show)
    weights = dict(zip(range(depth, 0, -1), LEVEL_WEIGHTS)) if len(heads) == len(LEVEL_WEIGHTS) == depth else {}
    if len(heads) == 1:
        weights = {1: 1.0}
    for k, head in enumerate(heads):
        level = k + 1
        src = ((x_enc + x_dec) / 2 + w / 2, y(level)) if level == depth else (x_dec + w / 2, y(level))
        label = f"1x1 conv {head.in_channels}->1" + (f"\nW = {weights[level]:g}" if level in weights else "")
        label += " (output)" if level == 1 else ""
        ax.text(x_head + 0.1, y(level), label, ha="left", va="center", fontsize=7)
        arrow(src, (x_head, y(level)))
    if any(gates):
        ax.text(
            x_dec - w / 2,
            1.0,
            "ATT: X'_e = X_e * sigmoid(W_phi relu(W_e X_e + W_d X_d)),\nW_e, W_d, W_phi 1x1 convolutions",
            fontsize=7,
            va="center",
        )
    notes = []
    if not any(gates):
        notes.append("no attention: plain skip connections")
    if len(heads) == 1:
        notes.append("no multilevel refinement: one output head")
    ax.set_title(
        title
        or f"{type(model).__name__}: {depth} levels, widths {tuple(c for _, c in enc)}"
        + (f" ({'; '.join(notes)})" if notes else ""),
        fontsize=9,
    )
    return fig
