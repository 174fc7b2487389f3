"""Does synthetic CT look like real CT? The brain's HU percentiles (5/25/50/75/95) of an axial
slice, measured alike on the phantom's NCCT, a real ISLES CT and the real-CT template (Rorden et
al. 2012, skull-stripped, HU, MNI space) at the same level. The real files are never part of the
repository: :func:`stroke_helpers.locations.reference_ct` and
:func:`~stroke_helpers.locations.ct_template` say where they are looked for.
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


def realism_panels(
    phantom_ct: np.ndarray, real_ct: np.ndarray, template: str | Path, z_phantom: int, z_real: int, mni_z: float
):
    """``{title: (axial slice (X, Y), brain HU percentiles)}``: the phantom's CT slice, the real CT
    slice and the CT template at MNI height ``mni_z``, in that order (what
    :func:`stroke_helpers.figures.realism_figure` draws)."""
    tpl = template_slice(template, mni_z)
    return {
        "phantom": (phantom_ct[:, :, z_phantom], brain_percentiles(phantom_ct[:, :, z_phantom])),
        "real ISLES CT": (real_ct[:, :, z_real], brain_percentiles(real_ct[:, :, z_real])),
        f"CT template, z = {mni_z:.0f} mm": (tpl[::-1], brain_percentiles(tpl, tpl > 0)),
    }
