"""Convert a local copy of ISLES 2024 into the ISLES 2018 layout the loader reads.

    python data_download.py isles24 --from DIR [--out DATA/isles24] [--series] [--force]

The one job of this module (docs/decisions.md §7), in the pattern of nnU-Net's dataset
conversion scripts: find every case of the BIDS tree, check it, convert it, write the result
whole. ``DIR`` is the training release as unpacked (``raw_data/`` or ``rawdata/`` beside
``derivatives/``), or a folder of such trees (the challenge's batches). Two naming schemes
occur and both are read: ``sub-strokecase0001/ses-0001`` and ``sub-stroke0014/ses-01``.

Per case::

    NCCT   RAW/sub-X/ses-A/sub-X_ses-A_ncct.nii.gz                                   -> CT
    maps   derivatives/sub-X/ses-A/perfusion-maps/sub-X_ses-A_space-ncct_<map>.nii.gz -> CBF, CBV, MTT, Tmax
    CTP    derivatives/sub-X/ses-A/sub-X_ses-A_space-ncct_ctp.nii.gz (with --series)  -> 4DPWI
    mask   derivatives/sub-X/ses-B/sub-X_ses-B[_space-ncct]_lesion-msk.nii.gz       -> OT

(``ses-A`` the acute session, number 1; ``ses-B`` the follow-up, number 2). The maps, the CTP
and the mask are registered to the NCCT in the release, so all share its grid; a file on
another grid is a problem, not something to resample silently. The CTA is recorded in the
manifest and not converted (the network has no CTA channel).

What is done to the voxels:

1. **Values** with ``get_fdata()`` (every scale factor applied). The mask is binarised
   ``> 0.5``: the committed sample masks are uint16 with 65535 inside and ``scl_slope``
   1/65535, so their raw values are never read as labels. NaN / Inf map voxels are set to 0
   and counted (manifest, and a printed note).
2. **Slices**: only those the CTP covered, from the first to the last slice on which every
   perfusion map has a non-zero voxel (the maps are zero elsewhere in NCCT space). Lesion
   voxels outside that range are counted and reported, never dropped silently.
3. **In-plane**: resampled to one spacing, ``max(X * dx, Y * dy) / 256`` mm, so the longer side
   of the field of view fills the 256 pixels of an ISLES 2018 slice, then padded to 256 x 256
   (the loader resizes every slice to a square, so a non-square grid would be distorted). The
   spacing and the new affine (source affine x crop x zoom x pad) are written in every header
   and in the manifest, so a prediction can be mapped back to the source grid. Downsampling is
   anti-aliased: a Gaussian of ``sigma = (factor - 1) / 2`` source voxels, then linear
   interpolation over the whole pixel extent (``grid_mode``), as ``skimage.transform.resize``
   with ``anti_aliasing`` does; the mask goes through the same two steps as a fraction and is
   binarised at 0.5, which keeps its volume. MONAI's ``Resize(anti_aliasing=True)`` does the
   same thing through torch on channel-first tensors; scipy does it in two explicit calls, in
   float64, on the arrays nibabel returns, without a torch dependency in data conversion.

Written: ``OUT/TRAINING/case_N/ISLES24.O.<TOKEN>.<subject>/...nii.gz`` in the subjects' sorted
order (CT int16 HU, the maps float32 in their own units, OT uint8, 4DPWI int16),
``OUT/patients.csv`` (one patient per case: the subject), and ``OUT/isles24_manifest.json``
(source root, each case's source files with their md5, the coverage, spacing, affine and
every note). There is no ``TESTING``: the challenge's test labels are not public.

Nothing half-written: every source file is checked first and each problem is one line naming
the case and the file; then the dataset is built in ``OUT.partial``, each converted case
checked with :func:`~stroke_helpers.isles.check_study` (the check training makes), and swapped
into ``OUT`` whole (:func:`~stroke_helpers.files.swap_in`). Any problem met on the way leaves
``OUT`` as it was. ``--force`` replaces only a dataset this converter wrote.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from . import files, locations
from .download import md5sum
from .isles import (
    AFFINE_ATOL_MM,
    PATIENTS_FILE,
    SPLITS,
    IslesError,
    check_study,
    modality,
    open_header,
)

#: The manifest at the converted dataset's root; its presence marks an ISLES 2024 conversion.
MANIFEST = "isles24_manifest.json"
#: In-plane size of an ISLES 2018 slice (docs/decisions.md §5), which the converter fills.
IN_PLANE = 256
RAW_FOLDERS = ("raw_data", "rawdata")
#: ISLES 2024 file key of each perfusion map, by modality name.
MAP_KEYS = {"CBF": "cbf", "CBV": "cbv", "MTT": "mtt", "Tmax": "tmax"}
#: On-disk dtype of each converted modality (the maps keep their fractional units: CBV in
#: mL/100 g would not survive ISLES 2018's integer dtypes).
DTYPES = {"CT": np.int16, "CBF": np.float32, "CBV": np.float32, "MTT": np.float32, "Tmax": np.float32}
DTYPES |= {"OT": np.uint8, "4DPWI": np.int16}
VERSION = 1

_SUBJECT = re.compile(r"^sub-[A-Za-z0-9]+$")
_SESSION = re.compile(r"^ses-(\d+)$")
_NIFTI = r"\.nii(\.gz)?$"


class Isles24Error(IslesError):
    """A problem with an ISLES 2024 tree or its conversion; one line per problem (``problems``)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


def is_converted(data: str | Path) -> bool:
    """Whether ``data`` is a dataset this converter wrote (it holds :data:`MANIFEST`)."""
    return (Path(data) / MANIFEST).is_file()


NO_TEST_LABELS = (
    "ISLES 2024 has no public test labels (the challenge scores its hidden test cases itself); "
    "a converted dataset has TRAINING only: score --split val"
)


# --- finding the cases -------------------------------------------------------------------------


@dataclass
class SourceCase:
    """One subject of the tree: where its files are, and what is wrong with them."""

    subject: str
    root: Path  # the tree holding raw_data/ (or rawdata/) and derivatives/
    files: dict[str, Path] = field(default_factory=dict)  # CT, CBF, CBV, MTT, Tmax, OT, 4DPWI, CTA
    ignored: list[str] = field(default_factory=list)  # other candidate files, and why not them
    problems: list[str] = field(default_factory=list)


def find_trees(source: Path) -> list[Path]:
    """Every folder at ``source`` or up to two levels below it that holds ``derivatives/``."""
    candidates = [source, *sorted(source.glob("*")), *sorted(source.glob("*/*"))]
    return [d for d in candidates if d.is_dir() and (d / "derivatives").is_dir()]


def _sessions(folder: Path) -> dict[int, Path]:
    out = {}
    if folder.is_dir():
        for d in sorted(folder.iterdir()):
            m = _SESSION.match(d.name)
            if d.is_dir() and m:
                out.setdefault(int(m.group(1)), d)
    return out


def _one(case: SourceCase, role: str, folder: Path | None, pattern: str, expected: str) -> None:
    """Find the one file of ``role`` in ``folder`` whose name matches ``pattern``; a missing or
    doubled file is a problem naming what was expected."""
    if folder is None or not folder.is_dir():
        case.problems.append(f"{case.subject}: missing {role}: no folder {folder or expected}")
        return
    hits = sorted(p for p in folder.iterdir() if p.is_file() and re.search(pattern, p.name))
    if role == "lesion mask" and len(hits) > 1:  # the release has one native-space leftover
        registered = [p for p in hits if "space-ncct" in p.name]
        if len(registered) == 1:
            case.ignored += [f"{p.name}: not the space-ncct mask" for p in hits if p not in registered]
            hits = registered
    if not hits:
        case.problems.append(f"{case.subject}: missing {role}: no {expected} in {folder}")
    elif len(hits) > 1:
        case.problems.append(f"{case.subject}: two {role} files in {folder}: {hits[0].name} and {hits[1].name}")
    else:
        return hits[0]


def find_cases(source: str | Path, series: bool = False) -> tuple[list[SourceCase], list[str]]:
    """The subjects of every tree under ``source``, with their files; and the problems of the
    trees themselves (no derivatives, no raw folder, a subject twice)."""
    source = Path(source)
    if not source.is_dir():
        return [], [f"{source}: no such folder"]
    trees = find_trees(source)
    if not trees:
        return [], [
            f"{source}: not an ISLES 2024 tree (no derivatives/ folder here or two levels below; "
            "expected raw_data/ or rawdata/ beside derivatives/)"
        ]
    cases, problems, seen = [], [], {}
    for tree in trees:
        raws = [tree / r for r in RAW_FOLDERS if (tree / r).is_dir()]
        subjects = sorted(d.name for d in (tree / "derivatives").iterdir() if d.is_dir() and _SUBJECT.match(d.name))
        if not subjects:
            problems.append(f"{tree / 'derivatives'}: no sub-* folders")
        if not raws:
            problems.append(f"{tree}: no raw_data/ or rawdata/ folder beside derivatives/ (the NCCT is there)")
        for sub in subjects:
            if sub in seen:
                problems.append(f"{sub}: in two trees, {seen[sub]} and {tree}")
                continue
            seen[sub] = tree
            case = SourceCase(sub, tree)
            derived = _sessions(tree / "derivatives" / sub)
            acute, followup = derived.get(1), derived.get(2)
            if acute is None:
                case.problems.append(
                    f"{sub}: missing acute session: no ses-01 or ses-0001 in {tree / 'derivatives' / sub}"
                )
            if followup is None:
                case.problems.append(
                    f"{sub}: missing follow-up session: no ses-02 or ses-0002 in {tree / 'derivatives' / sub}"
                )
            raw_acute = next((_sessions(r / sub).get(1) for r in raws if _sessions(r / sub).get(1)), None)
            if raws:
                ses = acute.name if acute else "ses-01"
                where = raw_acute or raws[0] / sub / ses
                if raw_acute is None:
                    case.problems.append(f"{sub}: missing NCCT: no folder {where}")
                else:
                    _found(case, "CT", _one(case, "NCCT", where, rf"_ncct{_NIFTI}", f"{sub}_{where.name}_ncct.nii.gz"))
            if acute is not None:
                maps = acute / "perfusion-maps"
                for name, key in MAP_KEYS.items():
                    expected = f"{sub}_{acute.name}_space-ncct_{key}.nii.gz"
                    _found(case, name, _one(case, f"{name} map", maps, rf"_space-ncct_{key}{_NIFTI}", expected))
                cta = [p for p in acute.iterdir() if p.is_file() and re.search(rf"_cta{_NIFTI}", p.name)]
                if cta:
                    case.files["CTA"] = sorted(cta)[0]
                if series:
                    expected = f"{sub}_{acute.name}_space-ncct_ctp.nii.gz"
                    _found(case, "4DPWI", _one(case, "CTP series", acute, rf"_space-ncct_ctp{_NIFTI}", expected))
            if followup is not None:
                expected = f"{sub}_{followup.name}_lesion-msk.nii.gz"
                _found(case, "OT", _one(case, "lesion mask", followup, rf"lesion-msk{_NIFTI}", expected))
            cases.append(case)
    return cases, problems


def _found(case: SourceCase, name: str, path: Path | None) -> None:
    if path is not None:
        case.files[name] = path


# --- checking the files ------------------------------------------------------------------------


def check_case(case: SourceCase) -> list[str]:
    """Every problem of one case's files, one line each naming the case and the file: unreadable,
    not 3D (4D for the series), an impossible header, or not on the NCCT's grid."""
    problems = list(case.problems)
    ref = None
    for name in ("CT", *MAP_KEYS, "OT", "4DPWI"):
        path = case.files.get(name)
        if path is None:
            continue
        img, shape, problem = open_header(case.subject, path, modality(name).kind)
        if problem:
            problems.append(problem)
            continue
        if name == "CT":
            ref = (shape[:3], np.asarray(img.affine, float))
        elif ref is not None:
            off_grid = shape[:3] != ref[0] or not np.allclose(img.affine, ref[1], rtol=0, atol=AFFINE_ATOL_MM)
            if off_grid:
                problems.append(
                    f"{case.subject}: {path.name} is not on the NCCT's grid (shape {shape[:3]} vs {ref[0]}, "
                    f"or another affine); the derivatives must be registered to the NCCT"
                )
    return problems


# --- the voxels --------------------------------------------------------------------------------


@dataclass
class Geometry:
    """How a case's NCCT grid becomes the converted grid: slices ``z0:z1``, in-plane zoom to
    ``shape``, then ``pad`` voxels before each in-plane axis."""

    z0: int
    z1: int
    shape: tuple[int, int]
    pad: tuple[int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray

    @classmethod
    def plan(cls, source_shape, zooms, affine, z0: int, z1: int, size: int = IN_PLANE) -> Geometry:
        x, y = source_shape[:2]
        dx, dy, dz = (float(z) for z in zooms[:3])
        step = max(x * dx, y * dy) / size  # mm: the longer side fills the slice
        shape = (min(size, max(1, round(x * dx / step))), min(size, max(1, round(y * dy / step))))
        pad = ((size - shape[0]) // 2, (size - shape[1]) // 2)
        spacing = (x * dx / shape[0], y * dy / shape[1], dz)
        # output voxel (i, j, k) -> source voxel: (i - pad + 0.5) * x / nx - 0.5, likewise j; k + z0
        sx, sy = x / shape[0], y / shape[1]
        to_source = np.array(
            [
                [sx, 0, 0, (0.5 - pad[0]) * sx - 0.5],
                [0, sy, 0, (0.5 - pad[1]) * sy - 0.5],
                [0, 0, 1, z0],
                [0, 0, 0, 1],
            ]
        )
        return cls(z0, z1, shape, pad, spacing, np.asarray(affine, float) @ to_source)

    def apply(self, volume: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``(X, Y, Z)`` on the NCCT grid -> float32 ``(256, 256, z1 - z0)``."""
        v = np.asarray(volume[:, :, self.z0 : self.z1], np.float64)
        factors = [v.shape[0] / self.shape[0], v.shape[1] / self.shape[1]]
        sigma = [max(0.0, (f - 1) / 2) for f in factors]
        if any(sigma):
            v = ndimage.gaussian_filter(v, (*sigma, 0), mode="nearest")
        zoom = (self.shape[0] / v.shape[0], self.shape[1] / v.shape[1], 1.0)
        v = ndimage.zoom(v, zoom, order=1, mode="nearest", grid_mode=True)
        out = np.full((IN_PLANE, IN_PLANE, v.shape[2]), fill, np.float32)
        out[self.pad[0] : self.pad[0] + self.shape[0], self.pad[1] : self.pad[1] + self.shape[1]] = v
        return out


def _read(path: Path, name: str, subject: str) -> tuple[np.ndarray, int]:
    """``get_fdata()`` as float32 (3D), and how many non-finite voxels were set to 0."""
    try:
        data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many types for damaged files
        raise Isles24Error(f"{subject}: cannot read {path.name}: unreadable or truncated file ({exc})") from None
    data = data.reshape(data.shape[:3])
    bad = ~np.isfinite(data)
    count = int(bad.sum())
    if count:
        data[bad] = 0
    return data, count


def coverage(maps: dict[str, np.ndarray]) -> tuple[int, int] | None:
    """``(first, last + 1)`` of the slices on which every map has a non-zero voxel; None if none."""
    covered = np.all([np.any(m != 0, axis=(0, 1)) for m in maps.values()], axis=0)
    idx = np.flatnonzero(covered)
    return (int(idx[0]), int(idx[-1]) + 1) if len(idx) else None


def _save(path: Path, data: np.ndarray, affine: np.ndarray, dtype, time_step: float | None = None) -> None:
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    if time_step is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], time_step))
    path.parent.mkdir(parents=True, exist_ok=True)
    files.save_with(path, lambda tmp: nib.save(img, tmp), durable=False)  # the whole dataset is swapped in


def _time_step(img) -> float | None:
    zooms = img.header.get_zooms()
    dt = float(zooms[3]) if len(zooms) > 3 else 0.0
    return dt if np.isfinite(dt) and dt > 0 else None


def convert_case(case: SourceCase, case_dir: Path, source: Path) -> dict:
    """Convert one checked case into ``case_dir``; returns its manifest entry (source files
    named relative to ``source``)."""
    sub = case.subject
    read, nonfinite = {}, {}
    for name in ("CT", *MAP_KEYS, "OT"):
        read[name], count = _read(case.files[name], name, sub)
        if count:
            nonfinite[name] = count
    ct, mask = read.pop("CT"), read.pop("OT") > 0.5
    maps = read
    span = coverage(maps)
    if span is None:
        raise Isles24Error(f"{sub}: every perfusion map is zero on every slice (no CTP coverage to keep)")
    src = nib.load(case.files["CT"])
    geo = Geometry.plan(ct.shape, src.header.get_zooms(), src.affine, *span)
    notes = [f"{sub}: {count} NaN/Inf voxels in the {name} {'file' if name in ('CT', 'OT') else 'map'} set to 0"
             for name, count in nonfinite.items()]  # fmt: skip
    outside = int(mask.sum() - mask[:, :, span[0] : span[1]].sum())
    if outside:
        notes.append(
            f"{sub}: {outside} of {int(mask.sum())} lesion voxels lie outside the CTP coverage and are left out"
        )
    if not mask[:, :, span[0] : span[1]].any():
        notes.append(f"{sub}: the lesion mask is empty within the CTP coverage")
    volumes = {"CT": geo.apply(ct, fill=float(ct.min())), **{n: geo.apply(m) for n, m in maps.items()}}
    volumes["OT"] = geo.apply(mask.astype(np.float32)) > 0.5
    del ct, maps, mask, read
    time_step = None
    if "4DPWI" in case.files:
        img = nib.load(case.files["4DPWI"], keep_file_open=True)
        time_step = _time_step(img)
        if time_step is None:
            time_step = 1.0
            notes.append(f"{sub}: {case.files['4DPWI'].name} records no time step; 1 s assumed")
        frames = []
        bad = 0
        for t in range(img.shape[-1]):
            frame = np.asarray(img.dataobj[..., t], np.float32).reshape(img.shape[:3])
            finite = np.isfinite(frame)
            bad += int(frame.size - finite.sum())
            fill = float(frame[finite].min()) if finite.any() else 0.0
            frames.append(geo.apply(np.where(finite, frame, fill), fill=fill))
        volumes["4DPWI"] = np.stack(frames, axis=3)
        if bad:
            nonfinite["4DPWI"] = bad
            notes.append(f"{sub}: {bad} NaN/Inf voxels in the CTP series set to the frame's minimum")
    for name, data in volumes.items():
        token = modality(name).token
        stem = f"ISLES24.O.{token}.{sub}"
        _save(
            case_dir / stem / f"{stem}.nii.gz", data, geo.affine, DTYPES[name], time_step if name == "4DPWI" else None
        )
    problems = check_study(case_dir, require_mask=True)
    if problems:
        raise Isles24Error(problems[0])
    for note in notes:
        print(f"note: {note}", flush=True)
    return {
        "subject": sub,
        "case": f"TRAINING/{case_dir.name}",
        "source": {
            name: {"path": p.relative_to(source).as_posix(), "md5": md5sum(p)} for name, p in sorted(case.files.items())
        },
        "ignored": case.ignored,
        "source_shape": [int(s) for s in src.shape[:3]],
        "source_spacing_mm": [float(z) for z in src.header.get_zooms()[:3]],
        "slices_kept": [geo.z0, geo.z1],
        "in_plane": {"resampled_to": list(geo.shape), "padded_by": list(geo.pad), "size": IN_PLANE},
        "spacing_mm": [round(s, 6) for s in geo.spacing],
        "affine": np.round(geo.affine, 6).tolist(),
        "lesion_voxels": int(volumes["OT"].sum()),
        "lesion_voxels_outside_coverage": outside,
        "nonfinite_set_to_zero": nonfinite,
        "time_step_s": time_step,
        "notes": notes,
    }


# --- the whole tree ----------------------------------------------------------------------------


def not_converted_here(out: Path) -> str:
    """Why ``out`` is not a dataset this converter wrote ('' when it is one, which ``force`` may
    replace): it writes ``TRAINING/case_N``, ``patients.csv`` and the manifest, and the loader
    adds its slice cache; anything else is someone's."""
    if not out.is_dir():
        return "a file, not a folder"
    if not is_converted(out):
        return f"no {MANIFEST}"
    ours = {"TRAINING", PATIENTS_FILE, MANIFEST, locations.CACHE_NAME}
    foreign = [p.name for p in out.iterdir() if p.name not in ours]
    if (out / "TRAINING").is_dir():
        foreign += [f"TRAINING/{p.name}" for p in (out / "TRAINING").iterdir() if not re.fullmatch(r"case_\d+", p.name)]
    return f"it also holds {', '.join(sorted(foreign)[:5])}" if foreign else ""


def _refuse(source: Path, out: Path, problems: list[str]) -> Isles24Error:
    lines = "\n  ".join(problems)
    return Isles24Error(f"{source}: {len(problems)} problem(s); nothing was written to {out}:\n  {lines}", problems)


def convert(
    source: str | Path, out: str | Path | None = None, series: bool = False, force: bool = False, progress: bool = True
) -> Path:
    """Convert the ISLES 2024 training release at ``source`` into ``out`` (default
    ``DATA/isles24``, :func:`stroke_helpers.locations.dataset`); returns ``out``.

    Raises :class:`Isles24Error` listing every problem, one line each, with ``out`` untouched;
    ``FileExistsError`` when ``out`` holds something and ``force`` is not given, or holds
    something this converter did not write."""
    source, out = Path(source), locations.dataset("isles24", out)
    cases, problems = find_cases(source, series)
    problems += [p for case in cases for p in check_case(case)]
    if not problems and not cases:
        problems = [f"{source}: no cases found"]
    if problems:
        raise _refuse(source, out, problems)
    with files.lock(out, f"convert ISLES 2024 from {source} into {out}"):
        files.recover(out)
        files.check_replaceable(
            out, force, not_converted_here, "an ISLES 2024 dataset written by data_download.py isles24"
        )
        tmp = files.partial(out)
        try:
            _build(tmp, source, cases, series, progress)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, Isles24Error):
                raise _refuse(source, out, exc.problems) from None
            if isinstance(exc, files.NoSpaceError):
                raise files.NoSpaceError(f"{exc} (the partial dataset {tmp} was removed)") from None
            raise
        return files.swap_in(tmp, out)


def _build(tmp: Path, source: Path, cases: list[SourceCase], series: bool, progress: bool) -> None:
    tmp.mkdir(parents=True)
    entries, problems = [], []
    for number, case in enumerate(tqdm(cases, desc="convert ISLES 2024", disable=not progress), start=1):
        try:
            entries.append(convert_case(case, tmp / "TRAINING" / f"case_{number}", source))
        except Isles24Error as exc:
            problems += exc.problems
    if problems:
        raise Isles24Error(problems[0], problems)
    rows = [{"split": "TRAINING", "case": e["case"].split("/")[1], "patient": e["subject"]} for e in entries]
    files.write_csv(tmp / PATIENTS_FILE, ["split", "case", "patient"], rows, durable=False)
    manifest = {
        "converter": f"stroke_helpers.isles24 v{VERSION}",
        "source": str(source.resolve()),
        "converted": datetime.datetime.now().isoformat(timespec="seconds"),
        "series": series,
        "splits": [s for s in SPLITS if s == "TRAINING"],
        "cases": entries,
    }
    files.write_json(manifest, tmp / MANIFEST, durable=False)


def read_manifest(data: str | Path) -> dict:
    """The manifest of a converted dataset."""
    path = Path(data) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Isles24Error(f"{path}: not a readable manifest ({exc})") from None
