"""Anatomy: the MNI152 2009 template (nilearn wheel), posed and deformed per patient, cut into
5 mm CT slices with partial volume, with skull, scalp and a constant background.

Template (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``,
197x233x189 at 1 mm, MNI ``x = i - 98, y = j - 134, z = k - 72``): grey and white matter are its
probability maps; the intracranial volume is the skull-stripped T1's support; CSF is what the
intracranial volume leaves (sulci, cisterns, the ventricles); deep grey matter (caudate,
lentiform nucleus, thalamus) is grey matter more than 18 mm under the brain's surface (37 HU);
the ventricles are the template's own (its CSF deep inside), so they change with level. Skull and scalp are shells around the
intracranial volume at their distance outside it (bone 4-6.5 mm: dense tables 1400-1900 HU around
a darker diploe; scalp 2.5-5 mm: galea and fat mixed at 15 HU under 1.5 mm of skin at 38 HU; air is
clipped to the real files' constant background).

Per patient (seeded): yaw N(0, 5 deg), pitch N(4, 6 deg) (CT slices roughly follow the
orbito-meatal line), roll N(0, 2 deg), isotropic scale U(0.92, 1.08), in-plane shift N(0, 5 mm),
and a smooth elastic deformation (random displacement, SD 2.5 mm, correlated over ~30 mm).
Slabs: the first slice's MNI height is drawn so that the slab centre lies around z = +18 mm
(SD 14 mm: mostly basal ganglia to supraventricular levels, some lower), kept inside -40..+78 mm.
Each 5 mm slice averages three planes 1.67 mm apart (partial volume), resampled to 256x256 at 0.976562 mm.

Tissue HU (docs/decisions.md §6): GM 39, deep GM 37, WM 29, CSF 8; background -23 (the real files clip air).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

HU = {"GM": 39.0, "deepGM": 37.0, "WM": 29.0, "CSF": 8.0, "skin": 38.0, "scalp": 15.0, "blood": 45.0}
BACKGROUND_HU = -23.0
SPACING_XY = 0.976562
SLICE_MM = 5.0003
SIZE = 256
#: MNI coordinate (mm) of template voxel (0, 0, 0); the grid is axis-aligned at 1 mm.
TEMPLATE_ORIGIN = np.array([-98.0, -134.0, -72.0])
HEAD_CENTRE_MNI = np.array([0.0, -18.0, 0.0])  # the image centre of a well-centred head


def smooth_field(rng, shape, sigma_px: float, coarse: int = 4) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field ``(X, Y, Z)``: Gaussian-filtered noise on a grid
    ``coarse`` times coarser in-plane, upsampled bilinearly."""
    small = (shape[0] // coarse, shape[1] // coarse, shape[2])
    f = ndimage.gaussian_filter(rng.standard_normal(small), (sigma_px / coarse, sigma_px / coarse, 0.6), mode="wrap")
    f = zoom_planes(f, coarse, mode="grid-wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


def zoom_planes(f: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """Bilinear in-plane upsampling of ``f`` ``(..., X, Y, Z)`` by ``factor``: the numbers of
    ``ndimage.zoom(f, (1, ..., factor, factor, 1), order=1, grid_mode=True, mode=mode)``, plane by
    plane (an axis zoomed by 1 only adds zero weights), in a fraction of the time."""
    out = np.empty((*f.shape[:-3], f.shape[-3] * factor, f.shape[-2] * factor, f.shape[-1]), f.dtype)
    for lead in np.ndindex(*f.shape[:-3], f.shape[-1]):
        plane = (*lead[:-1], slice(None), slice(None), lead[-1])
        out[plane] = ndimage.zoom(f[plane], factor, order=1, grid_mode=True, mode=mode)
    return out


def template_dir() -> Path:
    """nilearn's bundled MNI152 2009 files, found without importing nilearn (slow, in every worker)."""
    return Path(importlib.util.find_spec("nilearn").submodule_search_locations[0]) / "datasets" / "data"


@lru_cache(maxsize=1)
def template() -> dict[str, np.ndarray]:
    """The template's volumes on its 1 mm grid (cached per process): ``GM, WM, CSF`` fractions,
    ``deep`` (deep grey matter fraction), ``icv`` (0/1), ``outside`` (mm outside the ICV),
    ``depth`` (mm under the ICV's surface)."""
    load = lambda n: np.asarray(  # noqa: E731
        nib.load(template_dir() / f"mni_icbm152_{n}_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32
    )
    gm, wm = load("gm") / 255, load("wm") / 255
    icv = ndimage.binary_fill_holes(ndimage.binary_closing(load("t1") > 0, iterations=2))
    depth = ndimage.distance_transform_edt(icv).astype(np.float32)
    outside = ndimage.distance_transform_edt(~icv).astype(np.float32)
    tissue = np.clip(gm + wm, 0, 1)
    csf = np.where(icv, 1 - tissue, 0).astype(np.float32)
    deep = np.where(depth > 18, gm, 0).astype(np.float32)
    return {"GM": gm, "WM": wm, "CSF": csf, "deep": deep, "icv": icv.astype(np.float32), "outside": outside}


def patient_pose(rng) -> dict:
    """The seeded pose, head and skull of one patient (see the module docstring)."""
    return {
        "yaw": np.deg2rad(rng.normal(0, 5)),
        "pitch": np.deg2rad(rng.normal(4, 6)),
        "roll": np.deg2rad(rng.normal(0, 2)),
        "scale": rng.uniform(0.92, 1.08),
        "shift": np.array([*rng.normal(0, 5, 2), 0.0]),
        "elastic_mm": 2.5,
        "bone": rng.uniform(4.0, 6.5),
        "scalp": rng.uniform(2.5, 5.0),
        "bone_hu": rng.uniform(1400, 1900),
    }


def slab_heights(rng, n_slices: int) -> np.ndarray:
    """MNI heights (mm) of the slice centres of a slab of ``n_slices`` contiguous 5 mm slices."""
    length = (n_slices - 1) * 5.0
    centre = float(np.clip(rng.normal(18, 14), -40 + length / 2, 78 - length / 2))
    return centre - length / 2 + 5.0 * np.arange(n_slices)


def _rotation(pose: dict) -> np.ndarray:
    cy, sy = np.cos(pose["yaw"]), np.sin(pose["yaw"])
    cp, sp = np.cos(pose["pitch"]), np.sin(pose["pitch"])
    cr, sr = np.cos(pose["roll"]), np.sin(pose["roll"])
    yaw = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    roll = np.array([[cr, 0, sr], [0, 1, 0], [-sr, 0, cr]])
    return yaw @ pitch @ roll


def _elastic(rng, amplitude: float, coarse_mm: float = 30.0) -> callable:
    """A smooth random displacement field (mm), as a function of points ``(3, N)`` in mm."""
    n = 12
    field = ndimage.gaussian_filter(rng.standard_normal((3, n, n, n)), (0, 1, 1, 1), mode="wrap")
    field *= amplitude / (field.std() + 1e-9)

    def displace(points: np.ndarray) -> np.ndarray:
        idx = points / coarse_mm + n / 2
        return np.stack([ndimage.map_coordinates(f, idx, order=1, mode="nearest") for f in field])

    return displace


def template_coordinates(pose: dict, heights: np.ndarray, rng, size: int = SIZE, sub: int = 5) -> np.ndarray:
    """Template voxel coordinates ``(3, size, size, Z * sub)`` of the 1 mm sub-planes of each
    slice: scanner point -> (shift, scale, rotation, elastic) -> MNI -> template index. Computed
    at a quarter of the in-plane resolution and interpolated (the map is smooth)."""
    q = size // 4
    axis = (np.arange(q) * 4 + 1.5 - size / 2 + 0.5) * SPACING_XY
    offsets = (np.arange(sub) - (sub - 1) / 2) * (SLICE_MM / sub)
    zs = (heights[:, None] + offsets[None, :]).ravel()
    x, y, z = np.meshgrid(axis, axis, zs, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()])
    head = _rotation(pose).T @ ((pts - pose["shift"][:, None]) / pose["scale"])
    head += _elastic(rng, pose["elastic_mm"])(head)
    idx = (head + HEAD_CENTRE_MNI[:, None] - TEMPLATE_ORIGIN[:, None]).reshape(3, q, q, len(zs))
    return zoom_planes(idx, 4, mode="nearest").astype(np.float32)


def _sample(volume: np.ndarray, coords: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=cval, prefilter=False)


@lru_cache(maxsize=1)
def _brain_box() -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest template index, per axis, at which a sample of the brain volumes
    (``GM, WM, CSF, deep, icv``) can be nonzero: their nonzero voxels' box, one voxel wider."""
    tpl = template()
    nonzero = np.argwhere(np.any([tpl[k] != 0 for k in ("GM", "WM", "CSF", "deep", "icv")], axis=0))
    return nonzero.min(axis=0) - 1.0, nonzero.max(axis=0) + 1.0


def _sample_brain(coords: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`_sample` of ``GM, WM, CSF, deep, icv`` at ``coords`` ``(3, ...)``, interpolated only
    inside :func:`_brain_box` (outside it every neighbour is 0, so is the sample): the same numbers,
    faster, since the brain fills only part of the field of view."""
    lo, hi = _brain_box()
    flat = coords.reshape(3, -1)
    inside = np.all((flat >= lo[:, None]) & (flat <= hi[:, None]), axis=0)
    points = flat[:, inside]
    out = {}
    for k in ("GM", "WM", "CSF", "deep", "icv"):
        values = np.zeros(flat.shape[1], np.float32)
        values[inside] = _sample(template()[k], points)
        out[k] = values.reshape(coords.shape[1:])
    return out


def _shell_hu(outside: np.ndarray, pose: dict) -> tuple[np.ndarray, np.ndarray]:
    """Skull and scalp HU and the head mask from the distance (mm) outside the intracranial volume."""
    b, s = pose["bone"], pose["scalp"]
    t = np.clip(outside / b, 0, 1)
    bone = pose["bone_hu"] * (1 - 0.55 * np.sin(np.pi * t) ** 2)  # dense tables, darker diploe
    scalp = np.where(outside > b + s - 1.5, HU["skin"], HU["scalp"])  # galea and fat, mixed, then skin
    hu = np.where((outside > 0) & (outside <= b), bone, np.where(outside <= b + s, scalp, BACKGROUND_HU))
    return hu.astype(np.float32), outside <= b + s


def anatomy(pose: dict, heights: np.ndarray, rng, labels: np.ndarray | None = None, sub: int = 3) -> dict:
    """One patient's slices ``(SIZE, SIZE, Z)`` at MNI heights ``heights``.

    Returns slice-averaged fractions ``GM, WM, CSF, deep, icv``, the noise-free NCCT ``ct`` (HU,
    no lesion), masks ``brain`` (intracranial), ``head``, ``skull``, the vascular ``territory``
    label of each voxel (atlas level-1 numbering; 0 outside, from ``labels`` on the template grid)
    and the MNI coordinates ``mni`` ``(3, SIZE, SIZE, Z)`` of the slice centres.
    """
    tpl = template()
    nz = len(heights)
    coords = template_coordinates(pose, heights, rng, SIZE, sub)
    avg = lambda a: a.reshape(SIZE, SIZE, nz, sub).mean(axis=3)  # noqa: E731
    planes = _sample_brain(coords)
    out = {k: avg(planes[k]) for k in ("GM", "WM", "CSF", "deep")}
    planes_icv = planes["icv"]
    out["icv"] = avg(planes_icv)
    shell, head = _shell_hu(_sample(tpl["outside"], coords, cval=1e3), pose)
    shell = np.where(head, shell, -1000.0)  # air, clipped below like the real files
    tissue = out["GM"] * HU["GM"] + out["WM"] * HU["WM"] + out["CSF"] * HU["CSF"]
    tissue -= out["deep"] * (HU["GM"] - HU["deepGM"])
    out["ct"] = np.maximum(tissue + avg((1 - planes_icv) * shell), BACKGROUND_HU).astype(np.float32)
    out["head"] = avg(head.astype(np.float32)) > 0.5
    out["skull"] = (out["ct"] > 300) & (out["icv"] < 0.5)
    out["brain"] = out["icv"] > 0.5
    centre = coords[:, :, :, sub // 2 :: sub]
    out["mni"] = centre + TEMPLATE_ORIGIN[:, None, None, None].astype(np.float32)
    out["territory"] = np.zeros((SIZE, SIZE, nz), np.int16)
    if labels is not None:
        out["territory"] = _sample(labels, centre, order=0).astype(np.int16)
    return out


def outline_ellipse_iou(mask2d: np.ndarray) -> float:
    """Intersection over union of a 2D mask and the ellipse of the same second moments: 1 for an
    ellipse, lower for a real brain outline (frontal and occipital poles, temporal lobes)."""
    ij = np.argwhere(mask2d).astype(float)
    if len(ij) < 10:
        return float("nan")
    centre = ij.mean(axis=0)
    cov = np.cov((ij - centre).T)
    grid = np.argwhere(np.ones_like(mask2d, bool)).astype(float) - centre
    inside = np.einsum("ni,ij,nj->n", grid, np.linalg.inv(4 * cov), grid) <= 1
    ellipse = inside.reshape(mask2d.shape)
    return float((ellipse & mask2d).sum() / (ellipse | mask2d).sum())
