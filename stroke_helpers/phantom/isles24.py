"""Phantom cases in the ISLES 2024 layout: test data for the converter without the real data.

ISLES 2024 ships BIDS trees (docs/decisions.md §7). Two naming schemes occur, and both are
written here: ``sub-strokecase0001/ses-0001`` (the challenge README) and ``sub-stroke0014/ses-01``
(the sample files committed with the challenge's code); the raw folder is ``raw_data/`` (the
Zenodo release) or ``rawdata/`` (the README)::

    RAW/sub-stroke0001/ses-01/sub-stroke0001_ses-01_ncct.nii.gz
    derivatives/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_space-ncct_{cbf,cbv,mtt,tmax}.nii.gz
    derivatives/sub-stroke0001/ses-01/sub-stroke0001_ses-01_space-ncct_ctp.nii.gz        (optional)
    derivatives/sub-stroke0001/ses-02/sub-stroke0001_ses-02_lesion-msk.nii.gz

What it imitates: the NCCT is the reference grid (the derivatives are registered to it), with
sub-millimetre in-plane voxels and thin slices (``spacing``; the sample files: 0.38 and 0.44 mm, 2 mm),
a grid that is not square, a real affine, and whole-brain coverage; the perfusion maps are zero
on the NCCT slices the CTP did not cover (``uncovered_mm`` at each end); the mask is stored as
the committed sample masks are, uint16 with 65535 inside and ``scl_slope`` 1/65535, so only
``get_fdata() > 0.5`` reads it right.

The patient is the phantom's own (:func:`~stroke_helpers.phantom.series.simulate_patient`, a
single slab of ``slices`` 5 mm slices from -40 to +78 mm MNI height for the default 24), cropped
to the head and resampled linearly onto the ISLES 2024 grid. Its mask is still the phantom's
acute lesion, not a final infarct: the layout, units and geometry are ISLES 2024's, the task is
not. :func:`simulate` and :func:`on_grid` split the work, so one patient can be written on two
grids; :func:`write_case` writes any arrays in the layout, for hand-made cases.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .. import files
from .anatomy import BACKGROUND_HU, SLICE_MM, SPACING_XY
from .series import PhantomConfig, simulate_patient

#: naming scheme -> (subject pattern, acute session, follow-up session)
NAMINGS = {
    "stroke": ("sub-stroke{:04d}", "ses-01", "ses-02"),
    "strokecase": ("sub-strokecase{:04d}", "ses-0001", "ses-0002"),
}
RAW_FOLDERS = ("raw_data", "rawdata")
#: file key of each perfusion map in the ISLES 2024 names, by modality name
MAP_KEYS = {"CBF": "cbf", "CBV": "cbv", "MTT": "mtt", "Tmax": "tmax"}
#: how the committed sample masks store "inside": raw 65535 with scl_slope 1/65535
MASK_RAW = 65535


def case_paths(root: str | os.PathLike, number: int, naming: str = "stroke", raw: str = "raw_data") -> dict[str, Path]:
    """Where each file of case ``number`` goes, by modality name (``CT`` is the NCCT, ``OT`` the
    lesion mask, ``4DPWI`` the CTP series in NCCT space)."""
    if naming not in NAMINGS:
        raise ValueError(f"unknown naming {naming!r}; choose from {', '.join(NAMINGS)}")
    if raw not in RAW_FOLDERS:
        raise ValueError(f"unknown raw folder {raw!r}; choose from {', '.join(RAW_FOLDERS)}")
    pattern, acute, followup = NAMINGS[naming]
    sub = pattern.format(number)
    root = Path(root)
    derived = root / "derivatives" / sub
    paths = {"CT": root / raw / sub / acute / f"{sub}_{acute}_ncct.nii.gz"}
    for name, key in MAP_KEYS.items():
        paths[name] = derived / acute / "perfusion-maps" / f"{sub}_{acute}_space-ncct_{key}.nii.gz"
    paths["4DPWI"] = derived / acute / f"{sub}_{acute}_space-ncct_ctp.nii.gz"
    paths["OT"] = derived / followup / f"{sub}_{followup}_lesion-msk.nii.gz"
    return paths


def _save(path: Path, data: np.ndarray, affine: np.ndarray, dtype, time_step: float | None = None) -> Path:
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    if time_step is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], time_step))
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.save_with(path, lambda tmp: nib.save(img, tmp), durable=False)


def write_case(
    root: str | os.PathLike,
    number: int,
    volumes: dict[str, np.ndarray],
    affine: np.ndarray,
    naming: str = "stroke",
    raw: str = "raw_data",
    time_step: float = 1.0,
) -> dict[str, Path]:
    """Write one case in the ISLES 2024 layout and return its files by modality name.

    ``volumes``: ``CT`` (HU, written int16), ``CBF``, ``CBV``, ``MTT``, ``Tmax`` (float32),
    ``OT`` (boolean; written uint16 65535 inside, ``scl_slope`` 1/65535) and optionally
    ``4DPWI`` ``(X, Y, Z, T)`` (HU, int16, ``time_step`` s between frames), all on the grid of
    ``affine``. A name left out is not written (for broken trees in tests)."""
    paths = case_paths(root, number, naming, raw)
    written = {}
    for name, array in volumes.items():
        if name == "OT":  # float 0/1 saved as uint16: nibabel stores 65535 with scl_slope 1/65535
            data, dtype = np.asarray(array, bool).astype(np.float32), np.uint16
        elif name in ("CT", "4DPWI"):
            data, dtype = np.clip(np.rint(array), -1024, 3071).astype(np.int16), np.int16
        else:
            data, dtype = np.asarray(array, np.float32), np.float32
        written[name] = _save(paths[name], data, affine, dtype, time_step if name == "4DPWI" else None)
    return written


def _to_grid(volume: np.ndarray, zoom: tuple[float, float, float], order: int = 1) -> np.ndarray:
    return ndimage.zoom(volume.astype(np.float32), zoom, order=order, mode="nearest", grid_mode=True)


def simulate(seed: int, slices: int = 24, atlas: str | None = None, series: bool = False) -> dict[str, np.ndarray]:
    """One phantom patient, a single slab of ``slices`` 5 mm slices (24: -40 to +78 mm MNI height,
    the phantom's whole brain), on the phantom's own grid (:func:`simulate_patient`)."""
    return simulate_patient(seed, [slices], PhantomConfig(atlas=atlas, write_pwi=series))[0]["volumes"]


def on_grid(
    volumes: dict[str, np.ndarray], spacing: tuple[float, float, float] = (0.45, 0.45, 2.0), uncovered_mm: float = 10.0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A simulated patient (:func:`simulate`) on an ISLES 2024 NCCT grid: ``(volumes, affine)``
    for :func:`write_case`. The head is cropped with a margin (so the grid is not square) and
    resampled linearly to ``spacing`` (mm); the maps (and the series) are zero on the
    ``uncovered_mm`` of NCCT slices at each end that the CTP did not cover."""
    head = volumes["CT"] > BACKGROUND_HU + 5
    box = ndimage.find_objects(head.any(axis=2).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 6, 0), s.stop + 6) for s in box)
    zoom = (SPACING_XY / spacing[0], SPACING_XY / spacing[1], SLICE_MM / spacing[2])
    out = {name: _to_grid(volumes[name][box], zoom) for name in ("CT", *MAP_KEYS)}
    out["OT"] = _to_grid(volumes["OT"][box], zoom) > 0.5
    nz = out["CT"].shape[2]
    edge = min(int(round(uncovered_mm / spacing[2])), (nz - 1) // 2)
    names = [*MAP_KEYS]
    if "4DPWI" in volumes:
        pwi = volumes["4DPWI"]
        out["4DPWI"] = np.stack([_to_grid(pwi[box + (slice(None), t)], zoom) for t in range(pwi.shape[3])], axis=3)
        names.append("4DPWI")
    for name in names:  # the CTP covered fewer slices than the NCCT: zero there in NCCT space
        out[name][:, :, :edge] = 0
        out[name][:, :, nz - edge :] = 0
    shape = np.array(out["CT"].shape)
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])  # LAS, as many scanner exports
    affine[:3, 3] = -affine[:3, :3] @ ((shape - 1) / 2)  # the grid centred on the origin
    return out, affine


def write_isles24(
    out: str | os.PathLike,
    cases: int = 2,
    seed: int = 0,
    naming: str = "stroke",
    raw: str = "raw_data",
    first: int = 1,
    **options,
) -> list[dict[str, Path]]:
    """Write ``cases`` phantom patients (subject numbers ``first``, ``first + 1``, ...) in the
    ISLES 2024 layout under ``out``; returns each case's files. ``grid`` goes to :func:`on_grid`
    (``spacing``, ``uncovered_mm``), ``options`` to :func:`simulate` (``slices``, ``atlas``,
    ``series``)."""
    grid = {k: options.pop(k) for k in ("spacing", "uncovered_mm") if k in options}
    written = []
    for number in range(first, first + cases):
        volumes, affine = on_grid(simulate(seed * 1_000_003 + number, **options), **grid)
        written.append(write_case(out, number, volumes, affine, naming, raw, PhantomConfig().frame_step))
    return written
