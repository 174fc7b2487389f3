"""ISLES 2018 on disk: discover cases, load a study, write volumes in a study's geometry.

Layout (docs/decisions.md §5)::

    ROOT/TRAINING/case_1/SMIR.Brain.XX.O.CT.345562/SMIR.Brain.XX.O.CT.345562.nii
                         SMIR.Brain.XX.O.CT_CBF.345563/...
    ROOT/TESTING/case_1/...

Files are matched by their *modality token* (the ``token`` of each row of
:data:`stroke_helpers.modalities.TABLE`: ``CT``, ``CT_4DPWI``, ``CT_CBF``, ``CT_CBV``, ``CT_MTT``,
``CT_Tmax``, ``OT``; ``MR_`` prefixes accepted), never by whole names, because
ids are not consecutive in the test set and some cases mix id ranges. ``.nii`` and ``.nii.gz``
are both read.

Arrays keep the on-disk axis order ``(X, Y, Z)``: ``Y`` grows towards the face and ``Z``
towards the vertex, so ``array[:, :, z].T`` shown with ``origin="lower"`` is the usual axial
view. Voxel spacing comes from ``header.get_zooms()`` (the real headers carry an identity
sform, so the affine says nothing about spacing).

NaN / Inf policy: a volume with non-finite voxels is refused with an error naming the file and
the count (``nan_policy="raise"``, the default), or the voxels are set to 0 with a warning
(``nan_policy="zero"``). Real ISLES 2018 volumes have none, so a NaN means a damaged file.

Nothing silent: before a study is used, :func:`check_study` (shared by :func:`load_study`,
:func:`verify_dataset`, training, evaluation and the baseline) refuses, one line per problem
naming the case and the file, a missing input or ``TRAINING`` mask, a voxel size outside
0.1-20 mm, a NaN / degenerate affine, files of one study on different grids (shape, voxel size,
orientation where both headers carry one), and a 4D series with NaN frames.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

# what each modality is lives in .modalities; MODALITIES and channel_indices are re-exported for older callers
from . import files
from .modalities import (  # noqa: F401
    MODALITIES,
    canonical_modalities,
    channel_indices,
    file_modalities,
    from_token,
    modality,
)

SPLITS = ("TRAINING", "TESTING")
#: A ``patients.csv`` (columns ``split,case,patient``) at the dataset root maps cases to patients.
PATIENTS_FILE = "patients.csv"

_CASE_RE = re.compile(r"^case_(\d+)$")
_NIFTI_RE = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


class IslesError(ValueError):
    """A problem with ISLES data on disk; the message names the case, the file and the problem."""


def modality_token(filename: str) -> str | None:
    """The modality of an ISLES file name, or ``None``.

    >>> modality_token("SMIR.Brain.XX.O.CT_Tmax.345567.nii")
    'Tmax'
    >>> modality_token("SMIR.Brain.XX.O.MR_MTT.127014.nii.gz")
    'MTT'
    >>> modality_token("SMIR.Brain.XX.O.CT.345562.nii")
    'CT'
    """
    stem = _NIFTI_RE.sub("", Path(filename).name)
    for part in reversed(stem.split(".")):
        key = part.upper()
        if key not in ("CT", "MR"):
            key = re.sub(r"^(CT|MR)_", "", key)
        name = from_token(key)
        if name is not None:
            return name
    return None


def _case_number(path: Path) -> int:
    return int(_CASE_RE.match(path.name).group(1))


def find_case_files(case_dir: str | Path) -> dict[str, Path]:
    """Map modality token -> NIfTI file for one case folder; two files of one modality is an error."""
    case_dir = Path(case_dir)
    found: dict[str, Path] = {}
    for path in sorted(case_dir.rglob("*")):
        if (
            not path.is_file()
            or path.name.startswith(".")
            or "__MACOSX" in path.parts
            or not _NIFTI_RE.search(path.name)
        ):
            continue
        token = modality_token(path.name)
        if token is None:
            continue
        if token in found:
            raise IslesError(f"{case_dir}: two {token} files: {found[token].name} and {path.name}")
        found[token] = path
    return found


def not_nifti(case_dir: Path) -> dict[str, Path]:
    """Files of a case that carry a modality token but are not NIfTI (``.txt``, ``.zip`` ...)."""
    found = {}
    for path in case_dir.rglob("*"):
        if path.is_file() and not path.name.startswith(".") and not _NIFTI_RE.search(path.name):
            token = modality_token(path.stem)
            if token is not None:
                found.setdefault(token, path)
    return found


def discover_cases(root: str | Path, split: str = "TRAINING") -> list[Path]:
    """Case folders of one split (``TRAINING`` or ``TESTING``), in numerical order."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise IslesError(f"{root}: no {split}/ folder (is this an ISLES 2018 dataset root?)")
    cases = [p for p in split_dir.iterdir() if p.is_dir() and _CASE_RE.match(p.name)]
    return sorted(cases, key=_case_number)


def read_patients(root: str | Path) -> dict[str, str]:
    """``{"TRAINING/case_1": patient_id, ...}`` from ``ROOT/patients.csv``; ``{}`` when absent.

    The public ISLES 2018 case -> patient map is lost, so real data usually has none and splits
    fall back to cases; the phantom writes one, so synthetic splits are by patient.
    """
    path = Path(root) / PATIENTS_FILE
    if not path.exists():
        return {}
    expected = ("split", "case", "patient")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if not set(expected) <= set(columns):
                found = ",".join(columns) if columns else "none (an empty file)"
                raise IslesError(f"{path}: columns {found}; expected {','.join(expected)}")
            reader.fieldnames = columns
            patients = {}
            for r in reader:
                values = [(r.get(c) or "").strip() for c in expected]
                if not all(values):
                    empty = ", ".join(c for c, v in zip(expected, values) if not v)
                    raise IslesError(f"{path}: line {reader.line_num} has no {empty}; expected {','.join(expected)}")
                patients[f"{values[0]}/{values[1]}"] = values[2]
            return patients
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IslesError(f"{path}: not a CSV file with columns {','.join(expected)} ({exc})") from None


@dataclass
class Study:
    """One ISLES case: the co-registered volumes of a patient's CT slab.

    ``images[m]`` is a float32 ``(X, Y, Z)`` array for each loaded input modality ``m`` of
    :data:`~stroke_helpers.modalities.MODALITIES`; ``mask`` the uint8 lesion mask (``OT``),
    ``None`` in the test split.
    ``header`` is the CT's NIfTI header: write predictions with :func:`write_like` to land in
    the study's own geometry. The raw 4D series is read only when :attr:`pwi` is touched.
    """

    name: str
    path: Path
    files: dict[str, Path]
    images: dict[str, np.ndarray]
    mask: np.ndarray | None
    spacing: tuple[float, float, float]
    header: nib.Nifti1Header
    patient: str | None = None
    nan_policy: str = "raise"
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape if self.images else self.mask.shape

    @property
    def n_slices(self) -> int:
        return self.shape[2]

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def lesion_ml(self) -> float | None:
        return None if self.mask is None else float(self.mask.sum()) * self.voxel_ml

    def __getattr__(self, name: str) -> np.ndarray:
        # study.CT, study.CBF, ... for the loaded modalities
        images = self.__dict__.get("images", {})
        if name in images:
            return images[name]
        raise AttributeError(name)

    @cached_property
    def pwi(self) -> np.ndarray:
        """The 4D perfusion series as float32 ``(X, Y, Z, T)``, read on first use."""
        if "4DPWI" not in self.files:
            raise IslesError(f"{self.name}: no CT_4DPWI file")
        data, _ = _read(self.files["4DPWI"], self.name, self.nan_policy, self.notes)
        if data.ndim == 5 and data.shape[3] == 1:
            data = data[:, :, :, 0, :]
        if data.ndim != 4 or data.shape[:3] != self.shape:
            raise IslesError(
                f"{self.name}: {self.files['4DPWI'].name} has shape {data.shape}, expected {self.shape} + (time,)"
            )
        check_frames(self.name, self.files["4DPWI"].name, data.shape[-1])
        return data

    @property
    def pwi_time_step(self) -> float:
        """Seconds between perfusion frames, from ``pixdim[4]`` of the 4D header."""
        hdr = nib.load(self.files["4DPWI"]).header
        dt = float(hdr["pixdim"][4])
        if not np.isfinite(dt) or dt <= 0:
            dt = float(hdr["pixdim"][5]) if hdr["dim"][0] >= 5 else 0.0
        if not np.isfinite(dt) or dt <= 0:
            warnings.warn(f"{self.name}: no time step in the 4DPWI header, assuming 1 s", stacklevel=2)
            dt = 1.0
        return dt


#: Fewer frames than this cannot be deconvolved into maps (ISLES 2018 has 43-64).
MIN_FRAMES = 10


def check_frames(case: str, filename: str, frames: int) -> None:
    if frames < MIN_FRAMES:
        raise IslesError(f"{case}: {filename} has {frames} frames; at least {MIN_FRAMES} are needed to deconvolve")


# --- checking a study before it is used ------------------------------------------------------

#: Plausible voxel sizes (mm); anything outside is a damaged header (ISLES 2018: 0.98 x 0.98 x 5).
VOXEL_MM = (0.1, 20.0)
#: Two files of one study are on one grid when their voxel sizes agree to this relative
#: tolerance and their affines (where both carry one) to this many mm.
SPACING_RTOL, AFFINE_ATOL_MM = 1e-3, 0.01


def _mm(zooms) -> str:
    return " x ".join(f"{float(z):.4g}" for z in zooms) + " mm"


def _has_orientation(header) -> bool:
    """Whether a header says where its voxels are (a sform or qform code); without either,
    nibabel's affine is only a default built from the voxel size."""
    return int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0


def _header_problem(name: str, path: Path, img) -> str | None:
    """The first impossible thing in one file's header, or None."""
    hdr = img.header
    zooms = np.asarray(hdr.get_zooms()[:3], dtype=float)
    if len(zooms) < 3 or not np.isfinite(zooms).all() or zooms.min() < VOXEL_MM[0] or zooms.max() > VOXEL_MM[1]:
        return (
            f"{name}: {path.name} has voxel size {_mm(zooms)}, outside the plausible "
            f"{VOXEL_MM[0]:g}-{VOXEL_MM[1]:g} mm (a damaged header)"
        )
    geometry = [hdr[k] for k in ("srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c", "quatern_d")]
    geometry += [hdr[k] for k in ("qoffset_x", "qoffset_y", "qoffset_z")]
    affine = np.asarray(img.affine, dtype=float)
    if not all(np.isfinite(g).all() for g in geometry) or not np.isfinite(affine).all():
        return f"{name}: {path.name} has a non-finite (NaN or Inf) sform, qform or affine in its header"
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        return f"{name}: {path.name} has a degenerate affine (its voxel axes span no volume)"
    return None


def open_header(name: str, path: Path, kind: str) -> tuple[object, tuple[int, ...] | None, str | None]:
    """``(image, shape, problem)`` of the NIfTI ``path`` holding a ``kind`` (``"image"``,
    ``"series"``...): ``problem`` is ``None``, or one line naming ``name`` and the file when it
    is unreadable, has the wrong number of dimensions or an impossible header (then ``image``
    and ``shape`` may be ``None``). Reads the header only."""
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many types for damaged files
        return None, None, f"{name}: cannot read {path.name}: unreadable or truncated file ({exc})"
    return img, shape, _shape_problem(name, path, kind, shape) or _header_problem(name, path, img)


def _shape_problem(name: str, path: Path, kind: str, shape: tuple[int, ...]) -> str | None:
    if kind == "series":
        if len(shape) == 4 or (len(shape) == 5 and shape[3] == 1):
            return None
        return f"{name}: {path.name} has shape {shape}, expected (X, Y, Z, time)"
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        return f"{name}: {path.name} has shape {shape}, expected a 3D volume"
    return None


def _nonfinite_frames(name: str, path: Path, img) -> str | None:
    """NaN / Inf in the 4D series, by frame (only a floating-point series can hold them)."""
    if np.dtype(img.dataobj.dtype).kind != "f":
        return None
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        return f"{name}: cannot read {path.name}: unreadable or truncated file ({exc})"
    data = data.reshape(*data.shape[:3], -1)
    bad = ~np.isfinite(data)
    frames = np.flatnonzero(bad.any(axis=(0, 1, 2)))
    if not len(frames):
        return None
    listed = ", ".join(str(int(t)) for t in frames[:5]) + (" ..." if len(frames) > 5 else "")
    return (
        f"{name}: {path.name} has {int(bad.sum())} NaN/Inf voxels in {len(frames)} of its "
        f"{data.shape[-1]} frames (frame {listed})"
    )


def check_study(
    case_dir: str | Path,
    modalities: tuple[str, ...] = MODALITIES,
    require_mask: bool | None = None,
    nan_policy: str = "raise",
) -> list[str]:
    """Every problem of one case folder, one line each naming the case and the file; ``[]``
    when it is fit to load.

    The one check :func:`load_study`, :func:`verify_dataset`, training
    (:func:`~stroke_helpers.datasets.build_slices`), evaluation and the baseline share, made on
    the files used together (the ``modalities`` asked for, ``OT`` and the 4D series) before any
    voxel is used: each ``modalities`` file present (and
    ``OT`` when ``require_mask``, by default in ``TRAINING``); each header readable, with a
    plausible voxel size (:data:`VOXEL_MM`) and a finite, non-degenerate affine; every file on
    one grid (shape, voxel size from ``header.get_zooms()`` and, where both headers carry a
    sform or qform, the affine: real ISLES 2018 headers carry an identity sform, which agrees);
    the 4D series, unless ``nan_policy="zero"``, finite in every frame (whether it has enough
    frames to deconvolve is a limit of its use: :attr:`Study.pwi` and ``verify`` say so).
    Non-finite voxels of the 3D volumes and mask values are checked as they are read.
    """
    case_dir = Path(case_dir)
    name = f"{case_dir.parent.name}/{case_dir.name}"
    modalities = canonical_modalities(modalities, allow_empty=True)
    if not case_dir.is_dir():
        return [f"{name}: case folder {case_dir} does not exist"]
    try:
        files = find_case_files(case_dir)
    except IslesError as exc:
        return [str(exc)]
    if require_mask is None:
        require_mask = case_dir.parent.name == "TRAINING"
    problems = []
    missing = [m for m in (*modalities, *(["OT"] if require_mask else [])) if m not in files]
    strays = not_nifti(case_dir)
    for m in missing:
        if m in strays:
            problems.append(f"{name}: {strays[m].name} is not a NIfTI file (.nii or .nii.gz), so {m} is missing")
    missing = [m for m in missing if m not in strays]
    if missing:
        why = "; a TRAINING case needs its expert mask" if "OT" in missing and require_mask else ""
        problems.append(f"{name}: missing modality {', '.join(missing)} in {case_dir}{why}")
    reference = None  # (modality, path, shape, zooms, header, affine) of the first sound file
    # the files used together: the inputs asked for, the mask and the 4D series (the maps come
    # from it); another row of the table (a CTA, say) may have a grid of its own
    used = [m for m in file_modalities() if m in files and (m in modalities or modality(m).kind in ("mask", "series"))]
    for m in used:  # in table order: the CT, when asked for, is the reference
        path = files[m]
        img, shape, problem = open_header(name, path, modality(m).kind)
        if problem is None and modality(m).kind == "series" and nan_policy != "zero":
            problem = _nonfinite_frames(name, path, img)
        if problem is not None:
            problems.append(problem)
            continue
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        here = (m, path, shape[:3], zooms, img.header, np.asarray(img.affine, dtype=float))
        if reference is None:
            reference = here
            continue
        kinds, mine, theirs = [], [], []
        if here[2] != reference[2]:
            kinds.append("shape")
            mine.append(str(here[2]))
            theirs.append(str(reference[2]))
        if not np.allclose(zooms, reference[3], rtol=SPACING_RTOL, atol=0):
            kinds.append("voxel size")
            mine.append(_mm(zooms))
            theirs.append(_mm(reference[3]))
        if (
            _has_orientation(img.header)
            and _has_orientation(reference[4])
            and not np.allclose(here[5], reference[5], rtol=0, atol=AFFINE_ATOL_MM)
        ):
            kinds.append("orientation")
            codes = "".join(nib.aff2axcodes(here[5])), "".join(nib.aff2axcodes(reference[5]))
            if codes[0] != codes[1]:
                mine.append(f"oriented {codes[0]}")
                theirs.append(f"oriented {codes[1]}")
            else:  # same axes, another rotation or origin
                mine.append(f"placed by the affine {np.round(here[5][:3], 3).tolist()}")
                theirs.append(f"placed by {np.round(reference[5][:3], 3).tolist()}")
        if kinds:
            problems.append(
                f"{name}: {' and '.join(kinds)} mismatch: {path.name} is {', '.join(mine)} "
                f"but {reference[0]} is {', '.join(theirs)}"
            )
    return problems


def check_cases(cases: list[Path], modalities: tuple[str, ...] = MODALITIES, require_mask: bool | None = None) -> None:
    """:func:`check_study` on every case before any is used; the first problem raises
    :class:`IslesError` in one line, which says how many more there are."""
    problems = [p for case in cases for p in check_study(case, modalities, require_mask)]
    if problems:
        more = len(problems) - 1
        root = Path(cases[0]).parent.parent
        hint = f" (and {more} more; `python data_download.py verify {root}` lists them)" if more else ""
        raise IslesError(problems[0] + hint)


def _read(path: Path, case: str, nan_policy: str, notes: list[str]) -> tuple[np.ndarray, nib.Nifti1Image]:
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise IslesError(f"{case}: cannot read {path.name}: unreadable or truncated file ({exc})") from exc
    data = data.astype(np.float32, copy=False) if data.dtype != np.uint8 else data
    bad = ~np.isfinite(data) if data.dtype.kind == "f" else None
    if bad is not None and bad.any():
        message = f"{case}: {path.name} has {int(bad.sum())} NaN/Inf voxels"
        if nan_policy == "raise":
            raise IslesError(message + " (pass nan_policy='zero' to set them to 0)")
        if nan_policy != "zero":
            raise ValueError(f"nan_policy must be 'raise' or 'zero', not {nan_policy!r}")
        warnings.warn(message + ", set to 0", stacklevel=3)
        notes.append(message + ", set to 0")
        data = np.where(bad, np.float32(0), data)
    return data, img


def load_study(
    case_dir: str | Path,
    modalities: tuple[str, ...] = MODALITIES,
    require_mask: bool | None = None,
    nan_policy: str = "raise",
    patient: str | None = None,
) -> Study:
    """Load one case folder.

    Parameters
    ----------
    modalities : which of :data:`~stroke_helpers.modalities.MODALITIES` to read (all by default);
        each must be present.
    require_mask : whether ``OT`` must exist; by default it must in ``TRAINING`` cases.
    nan_policy : ``"raise"`` (default) or ``"zero"``, see the module docstring.

    The case is first checked by :func:`check_study` (files present, plausible headers, every
    file on one grid); its first problem raises :class:`IslesError` in one line.
    """
    case_dir = Path(case_dir)
    name = f"{case_dir.parent.name}/{case_dir.name}"
    modalities = canonical_modalities(modalities, allow_empty=True)
    problems = check_study(case_dir, modalities, require_mask, nan_policy)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s) in this case)" if len(problems) > 1 else ""
        raise IslesError(problems[0] + more)
    files = find_case_files(case_dir)

    notes: list[str] = []
    images = {}
    for m in modalities:
        data, _ = _read(files[m], name, nan_policy, notes)
        images[m] = data.reshape(data.shape[:3])  # (X, Y, Z, 1) -> (X, Y, Z); check_study checked the shapes
    mask = None
    if "OT" in files:
        mask, _ = _read(files["OT"], name, nan_policy, notes)
        mask = mask.reshape(mask.shape[:3])
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            raise IslesError(
                f"{name}: {files['OT'].name} has values {values[~np.isin(values, (0, 1))][:5].tolist()} outside {{0, 1}}"
            )
        mask = mask.astype(np.uint8)
    first = next((m for m in (*modalities, "OT", *file_modalities()) if m in files), None)
    if first is None:
        raise IslesError(f"{name}: no NIfTI file of any modality in {case_dir}")
    header = nib.load(files[first]).header
    spacing = tuple(float(z) for z in header.get_zooms()[:3])  # plausible: check_study checked every header
    return Study(name, case_dir, files, images, mask, spacing, header, patient, nan_policy, notes)


def load_split(root: str | Path, split: str = "TRAINING", **kwargs) -> list[Study]:
    """Every case of a split, with patient ids from ``patients.csv`` when it exists."""
    patients = read_patients(root)
    return [load_study(c, patient=patients.get(f"{split}/{c.name}"), **kwargs) for c in discover_cases(root, split)]


# --- writing -------------------------------------------------------------------------------


def isles_header(spacing, time_step: float | None = None) -> nib.Nifti1Header:
    """A header with the quirks of the official files: qform_code 0, sform_code 2, identity srow."""
    hdr = nib.Nifti1Header()
    hdr.set_qform(None, code=0)
    hdr.set_sform(np.eye(4), code=2)
    zooms = list(spacing)
    if time_step is not None:
        zooms += [time_step, time_step]  # (X, Y, Z, 1, T): pixdim[4] = pixdim[5] = time step
    hdr["pixdim"][1 : 1 + len(zooms)] = zooms
    hdr["pixdim"][0] = -1.0
    return hdr


def _fortran(a: np.ndarray, block: int = 16) -> np.ndarray:
    """``a`` in NIfTI's voxel order (first axis fastest), copied ``block`` rows at a time: for a 4D
    series, whose frames are its fastest axis, much faster than the plain transposing copy."""
    if a.flags.f_contiguous:
        return a
    out = np.empty(a.shape, a.dtype, order="F")
    for i in range(0, a.shape[0], block):
        out[i : i + block] = a[i : i + block]
    return out


def write_volume(path: str | Path, array: np.ndarray, dtype, spacing, time_step: float | None = None) -> Path:
    """Write one ISLES-style volume (uncompressed unless ``path`` ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array)
    if np.dtype(dtype).kind in "iu" and data.dtype != np.dtype(dtype):
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    data = data.astype(dtype, copy=False)
    if time_step is not None and data.ndim == 4:
        data = data[:, :, :, None, :]
    data = _fortran(data)
    hdr = isles_header(spacing, time_step)
    hdr.set_data_dtype(dtype)
    img = nib.Nifti1Image(data, None, header=hdr)
    img.set_sform(np.eye(4), code=2)
    img.set_qform(None, code=0)
    img.header["pixdim"][0] = -1.0
    # atomic, and one line on a full disk; not flushed one by one: a dataset is built whole in a
    # folder that is moved into place at the end (stroke_helpers.phantom.dataset)
    return files.write_nifti(path, img, durable=False)


def write_case(
    split_dir: str | Path,
    case_number: int,
    volumes: dict[str, np.ndarray],
    spacing,
    ids: dict[str, int],
    time_step: float = 1.0,
    compress: bool = False,
) -> Path:
    """Write one case folder in the ISLES 2018 layout, in the official dtypes.

    ``volumes`` maps modality names of :data:`~stroke_helpers.modalities.TABLE` to arrays (a
    ``"series"`` such as ``4DPWI`` as ``(X, Y, Z, T)``), each written with the row's file token
    and dtype; ``ids`` gives each one's numeric id (consecutive in the official training set).
    """
    case_dir = Path(split_dir) / f"case_{case_number}"
    for name, array in volumes.items():
        row = modality(name)
        stem = f"SMIR.Brain.XX.O.{row.token}.{ids[name]}"
        suffix = ".nii.gz" if compress else ".nii"
        write_volume(
            case_dir / stem / (stem + suffix),
            array,
            row.dtype,
            spacing,
            time_step if row.kind == "series" else None,
        )
    return case_dir


def write_like(study: Study, array: np.ndarray, path: str | Path, dtype=np.uint8) -> Path:
    """Write ``array`` ``(X, Y, Z)`` with the study's own header (geometry, spacing, quirks)."""
    if array.shape != study.shape:
        raise IslesError(f"{study.name}: cannot write an array of shape {array.shape} into a {study.shape} study")
    hdr = study.header.copy()
    hdr.set_data_dtype(dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), None, header=hdr)
    return files.write_nifti(path, img)  # atomic, one line on a full disk


# --- verification --------------------------------------------------------------------------


@dataclass
class SplitSummary:
    split: str
    cases: int = 0
    slices: int = 0
    modalities: dict[str, int] = field(default_factory=dict)
    spacing_min: tuple[float, ...] | None = None
    spacing_max: tuple[float, ...] | None = None
    lesion_ml: list[float] = field(default_factory=list)
    slice_counts: dict[int, int] = field(default_factory=dict)


def verify_dataset(root: str | Path, splits=SPLITS) -> tuple[list[SplitSummary], list[str]]:
    """Load every case of every split present; return summaries and a list of every problem.

    A split folder that is absent is skipped (``TESTING`` is optional); no split at all is a
    problem. Each problem is one line naming the case and file: those of :func:`check_study`
    (the check training and evaluation make), then those found reading the voxels, an empty
    mask, and a ``patients.csv`` without the columns ``split,case,patient``.
    """
    root = Path(root)
    summaries, problems = [], []
    if not root.is_dir():
        return [], [f"{root}: dataset folder does not exist"]
    present = [s for s in splits if (root / s).is_dir()]
    if not present:
        return [], [f"{root}: neither {' nor '.join(splits)} folder found"]
    try:
        read_patients(root)
    except IslesError as exc:
        problems.append(str(exc))
    for split in present:
        summary = SplitSummary(split)
        cases = discover_cases(root, split)
        if not cases:
            problems.append(f"{root / split}: no case_N folders")
        for other in sorted((root / split).iterdir()):
            if other.is_dir() and not _CASE_RE.match(other.name) and other.name != "__MACOSX":
                problems.append(f"{split}/{other.name}: not a case_N folder (the loader skips it)")
        for case in cases:
            summary.cases += 1
            try:
                files = find_case_files(case)
            except IslesError as exc:
                problems.append(str(exc))
                continue
            for token in files:
                summary.modalities[token] = summary.modalities.get(token, 0) + 1
            found = check_study(case)  # the check training and evaluation make, every problem listed
            if found:
                problems += found
                continue
            try:
                study = load_study(case)  # then the voxels: NaN / Inf, mask values
                if "4DPWI" in files:  # too short to deconvolve: a limit of its use, not damage
                    check_frames(study.name, files["4DPWI"].name, nib.load(files["4DPWI"]).shape[-1])
            except IslesError as exc:
                problems.append(str(exc))
                continue
            summary.slices += study.n_slices
            summary.slice_counts[study.n_slices] = summary.slice_counts.get(study.n_slices, 0) + 1
            sp = np.array(study.spacing)
            summary.spacing_min = tuple(sp if summary.spacing_min is None else np.minimum(summary.spacing_min, sp))
            summary.spacing_max = tuple(sp if summary.spacing_max is None else np.maximum(summary.spacing_max, sp))
            if study.mask is not None:
                summary.lesion_ml.append(study.lesion_ml)
                if study.mask.sum() == 0:
                    problems.append(f"{study.name}: {study.files['OT'].name} is an empty mask")
        summaries.append(summary)
    return summaries, problems


def format_summary(summaries: list[SplitSummary]) -> str:
    """A short human-readable table of :func:`verify_dataset` summaries."""
    lines = []
    for s in summaries:
        lines.append(f"{s.split}: {s.cases} cases, {s.slices} slices")
        lines.append("  slices per case: " + ", ".join(f"{k}x{v}" for k, v in sorted(s.slice_counts.items())))
        lines.append("  modalities: " + ", ".join(f"{k} {v}" for k, v in sorted(s.modalities.items())))
        if s.spacing_min is not None:
            lo = " x ".join(f"{v:.4g}" for v in s.spacing_min)
            hi = " x ".join(f"{v:.4g}" for v in s.spacing_max)
            lines.append(f"  spacing (mm): {lo}" + ("" if lo == hi else f" .. {hi}"))
        if s.lesion_ml:
            v = np.array(s.lesion_ml)
            lines.append(
                f"  lesion volume (mL): median {np.median(v):.1f}, mean {v.mean():.1f}, "
                f"min {v.min():.2f}, max {v.max():.1f}, empty {int((v == 0).sum())}"
            )
    return "\n".join(lines)
