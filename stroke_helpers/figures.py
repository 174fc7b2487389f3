"""Figure-making functions the notebooks show (pure: arrays in, a matplotlib Figure out).

Display convention: arrays are ``(X, Y, Z)`` as on disk; :func:`axial` returns the slice
transposed so that ``imshow(..., origin="lower")`` shows the face at the top.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .datasets import inside_skull

#: Display windows of SPEC §2.
WINDOWS = {"CT": (0, 100), "CBF": (0, 1000), "CBV": (0, 100), "MTT": (0, 20), "Tmax": (0, 20)}


def axial(volume: np.ndarray, z: int) -> np.ndarray:
    """The axial slice ``z`` ready for ``imshow(origin="lower")``."""
    return volume[:, :, z].T


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
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    for ax, vol, z, title in (
        (axes[0], phantom_ct, z_phantom, "phantom CT"),
        (axes[1], real_ct, z_real, "real ISLES CT (case 1)"),
    ):
        ax.imshow(axial(vol, z), cmap="gray", vmin=0, vmax=100, origin="lower")
        ax.set_title(f"{title}, slice {z}")
        ax.axis("off")
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
    axes[2].set_xlabel("HU")
    axes[2].set_title("head voxels, −30…110 HU")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def study_figure(volumes: dict[str, np.ndarray], z: int, mask: np.ndarray | None = None, title: str = ""):
    """One slice of every modality in its display window, the lesion outline in red."""
    names = [m for m in ("CT", "CBF", "CBV", "MTT", "Tmax") if m in volumes]
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3.2))
    for ax, m in zip(np.atleast_1d(axes), names):
        lo, hi = WINDOWS[m]
        if m in ("CBF", "CBV"):  # uncalibrated: window on the study's own range
            hi = float(np.percentile(volumes[m][volumes[m] > 0], 99)) if (volumes[m] > 0).any() else 1
        ax.imshow(axial(volumes[m], z), cmap="gray" if m == "CT" else "magma", vmin=lo, vmax=hi, origin="lower")
        if mask is not None and mask[:, :, z].any():
            ax.contour(axial(mask, z), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(m)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
