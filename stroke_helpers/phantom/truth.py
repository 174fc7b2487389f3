"""The truth folder beside a synthetic dataset: the one module that reads and writes it.

Layout (``OUT/truth/``, never inside the ISLES tree's modality folders, so the loader cannot see
it)::

    truth/TRAINING/case_N/{CBF,CBV,MTT,Tmax,delay,core,penumbra,brain,territory}.nii.gz
    truth/TESTING/case_N/...  + ot.nii.gz (the TESTING split carries no OT of its own)
    truth/cases.csv           one row per case: patient, slab, territory, volumes, onset, ...
    truth/config.csv          the generator's settings, the seed and where the territories came from
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np

TRUTH = "truth"


def truth_dir(dataset: str | os.PathLike, case_name: str) -> Path:
    """``DATASET/truth/SPLIT/case_N`` for ``case_name`` = ``"SPLIT/case_N"``."""
    return Path(dataset) / TRUTH / case_name


def write_case_truth(dataset: Path, case_name: str, arrays: dict[str, np.ndarray], spacing) -> None:
    """Write one case's true maps and masks (booleans as uint8, the rest float32, gzip)."""
    tdir = truth_dir(dataset, case_name)
    tdir.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        dtype = np.uint8 if arr.dtype in (bool, np.uint8) else np.float32
        nib.save(nib.Nifti1Image(arr.astype(dtype), np.diag([*spacing, 1.0])), tdir / f"{name}.nii.gz")


def write_tables(dataset: Path, rows: list[dict], settings: dict) -> None:
    """``truth/cases.csv`` (every key of the rows) and ``truth/config.csv`` (``settings``)."""
    (dataset / TRUTH).mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(dataset / TRUTH / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    with open(dataset / TRUTH / "config.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "value"])
        w.writerows(settings.items())


def read_truth(dataset: str | os.PathLike, case_name: str) -> dict[str, np.ndarray]:
    """True maps and masks of one synthetic case (``"TRAINING/case_3"``), as ``(X, Y, Z)`` arrays."""
    tdir = truth_dir(dataset, case_name)
    if not tdir.is_dir():
        raise FileNotFoundError(f"{tdir}: no truth folder (only synthetic datasets have one)")
    return {p.name[: -len(".nii.gz")]: np.asanyarray(nib.load(p).dataobj) for p in sorted(tdir.glob("*.nii.gz"))}


def read_cases(dataset: str | os.PathLike) -> list[dict]:
    """Rows of ``truth/cases.csv`` (patient, slab, lesion volume, territory, parameters, ...)."""
    with open(Path(dataset) / TRUTH / "cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_config(dataset: str | os.PathLike) -> dict[str, str]:
    """``truth/config.csv`` as a dict: the generator's settings, seed, and ``territories``
    (``atlas`` with the atlas's md5, or ``geometric`` for the offline fallback)."""
    with open(Path(dataset) / TRUTH / "config.csv", newline="") as f:
        return {r["key"]: r["value"] for r in csv.DictReader(f)}


def load_study_truth(data: str | os.PathLike, name: str):
    """A study with its mask (header, spacing): TESTING masks come from the phantom's ``truth/``."""
    from ..isles import IslesError, load_study

    data = Path(data)
    if not name.startswith("TESTING/"):
        return load_study(data / name, modalities=(), require_mask=True)
    ot = truth_dir(data, name) / "ot.nii.gz"
    if not ot.exists():
        raise IslesError(f"{name}: no ground truth at {ot} (real ISLES 2018 keeps the TESTING masks private)")
    study = load_study(data / name, modalities=("CT",), require_mask=False)
    study.mask = np.asarray(nib.load(ot).dataobj).astype(np.uint8)
    return study
