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
from .modalities import MODALITIES, canonical_modalities, channel_indices, from_token, modality  # noqa: F401

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
    with path.open(newline="") as f:
        return {f"{r['split']}/{r['case']}": r["patient"] for r in csv.DictReader(f)}


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
    """
    case_dir = Path(case_dir)
    name = f"{case_dir.parent.name}/{case_dir.name}"
    modalities = canonical_modalities(modalities, allow_empty=True)
    if not case_dir.is_dir():
        raise IslesError(f"{name}: case folder {case_dir} does not exist")
    files = find_case_files(case_dir)
    if require_mask is None:
        require_mask = case_dir.parent.name == "TRAINING"
    missing = [m for m in (*modalities, *(["OT"] if require_mask else [])) if m not in files]
    strays = not_nifti(case_dir)
    for m in missing:
        if m in strays:
            raise IslesError(f"{name}: {strays[m].name} is not a NIfTI file (.nii or .nii.gz), so {m} is missing")
    if missing:
        raise IslesError(f"{name}: missing modality {', '.join(missing)} in {case_dir}")

    notes: list[str] = []
    images, reference = {}, None
    for m in modalities:
        data, img = _read(files[m], name, nan_policy, notes)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise IslesError(f"{name}: {files[m].name} has shape {data.shape}, expected a 3D volume")
        if reference is None:
            reference = (m, data.shape, img.header)
        elif data.shape != reference[1]:
            raise IslesError(
                f"{name}: shape mismatch: {files[m].name} is {data.shape} but {reference[0]} is {reference[1]}"
            )
        images[m] = data
    mask = None
    if "OT" in files:
        mask, _ = _read(files["OT"], name, nan_policy, notes)
        mask = np.squeeze(mask) if mask.ndim > 3 else mask
        if reference is not None and mask.shape != reference[1]:
            raise IslesError(
                f"{name}: shape mismatch: {files['OT'].name} is {mask.shape} but {reference[0]} is {reference[1]}"
            )
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            raise IslesError(
                f"{name}: {files['OT'].name} has values {values[~np.isin(values, (0, 1))][:5].tolist()} outside {{0, 1}}"
            )
        mask = mask.astype(np.uint8)
    header = reference[2] if reference else nib.load(files["OT"]).header
    spacing = tuple(float(z) for z in header.get_zooms()[:3])
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise IslesError(f"{name}: invalid voxel spacing {spacing} in the header of {reference[0]}")
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
    hdr = isles_header(spacing, time_step)
    hdr.set_data_dtype(dtype)
    img = nib.Nifti1Image(data, None, header=hdr)
    img.set_sform(np.eye(4), code=2)
    img.set_qform(None, code=0)
    img.header["pixdim"][0] = -1.0
    nib.save(img, path)
    return path


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
    nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), None, header=hdr), path)
    return path


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
    problem. Each problem names the case and file.
    """
    root = Path(root)
    summaries, problems = [], []
    if not root.is_dir():
        return [], [f"{root}: dataset folder does not exist"]
    present = [s for s in splits if (root / s).is_dir()]
    if not present:
        return [], [f"{root}: neither {' nor '.join(splits)} folder found"]
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
                for token in files:
                    summary.modalities[token] = summary.modalities.get(token, 0) + 1
                study = load_study(case)
                if "4DPWI" in files:
                    try:
                        shape = nib.load(files["4DPWI"]).shape
                    except Exception as exc:  # nibabel raises many types for damaged files
                        raise IslesError(f"{study.name}: cannot read {files['4DPWI'].name} ({exc})") from None
                    if tuple(shape[:3]) != study.shape:
                        raise IslesError(
                            f"{study.name}: {files['4DPWI'].name} has shape {shape}, expected {study.shape} + (time,)"
                        )
                    check_frames(study.name, files["4DPWI"].name, shape[-1])
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
