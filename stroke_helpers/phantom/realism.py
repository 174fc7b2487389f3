"""Does the phantom look like real CT? Phantom NCCT, the real ISLES CT and the real-CT template
(Rorden et al. 2012, skull-stripped, HU, MNI space) at the same level, side by side, with the
brain's HU percentiles (5/25/50/75/95) of each. The real files are read at run time (never
committed): ``../shared/real/*.nii`` and ``../shared/ct-template/scct_stripped_hu.nii.gz``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

PERCENTILES = (5, 25, 50, 75, 95)


def brain_percentiles(ct2d: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """HU percentiles of the brain of an axial slice: ``brain`` if given, else the voxels of
    0-100 HU inside the skull (the skull's filled inside, eroded by 3 voxels)."""
    from scipy import ndimage

    if brain is None:
        inside = ndimage.binary_fill_holes(ndimage.binary_closing(ct2d > 300, iterations=3))
        brain = ndimage.binary_erosion(inside & (ct2d < 300), iterations=3) & (ct2d >= 0) & (ct2d <= 100)
    values = ct2d[brain]
    return np.percentile(values, PERCENTILES) if values.size else np.full(len(PERCENTILES), np.nan)


def template_slice(path: str | Path, mni_z: float) -> np.ndarray:
    """The CT template's axial slice nearest MNI height ``mni_z`` (``z = 2k - 72``), in HU."""
    vol = np.asarray(nib.load(path).dataobj, np.float32)
    k = int(np.clip(round((mni_z + 72) / 2), 0, vol.shape[2] - 1))
    return vol[:, :, k]


def realism_figure(
    phantom_ct: np.ndarray, real_ct: np.ndarray, template_path, z_phantom: int, z_real: int, mni_z: float
):
    """Three panels (brain window 0-80 HU): phantom CT slice, real CT slice, CT template at MNI
    height ``mni_z``, each titled with its brain HU percentiles. Returns (figure, percentiles)."""
    from ..figures import colorbar, image_panel, subplots

    tpl = template_slice(template_path, mni_z)
    panels = {
        "phantom": (phantom_ct[:, :, z_phantom], brain_percentiles(phantom_ct[:, :, z_phantom])),
        "real ISLES CT": (real_ct[:, :, z_real], brain_percentiles(real_ct[:, :, z_real])),
        f"CT template, z = {mni_z:.0f} mm": (tpl[::-1], brain_percentiles(tpl, tpl > 0)),
    }
    fig, axes = subplots(1, 3, figsize=(11, 4.0))
    for ax, (title, (img, pct)) in zip(axes, panels.items(), strict=True):
        pct_text = "/".join(f"{v:.0f}" for v in pct)
        im = image_panel(
            fig, ax, img.T, "gray", (0, 80), bar=False, title=f"{title}\nbrain HU p5/25/50/75/95: {pct_text}"
        )
    colorbar(fig, im, list(axes), "HU")
    return fig, {k: v[1] for k, v in panels.items()}
