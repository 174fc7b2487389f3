"""The phantom's truth folder: its layout, and the one reader outside the generator.

A synthetic dataset keeps what only a phantom knows beside the ISLES tree (never inside a case's
modality folders, so the loader cannot see it)::

    DATA/truth/TRAINING/case_N/{CBF,CBV,MTT,Tmax,delay,core,penumbra,brain,territory}.nii.gz
    DATA/truth/TESTING/case_N/...  + ot.nii.gz   (the TESTING split carries no OT of its own)
    DATA/truth/cases.csv           one row per case: patient, slab, territory, volumes, onset, ...
    DATA/truth/config.csv          the generator's settings, seed and where the territories came from
    DATA/truth/scorecard.csv       the realism scorecard of TRAINING (:mod:`stroke_helpers.scorecard`)

Evaluation, the chapters, the grid and the shipped checkpoint read it through this module and
never import the generator (:mod:`stroke_helpers.phantom`, which writes it). Real ISLES 2018
has no truth folder: :func:`has_truth` is False there and the TESTING masks stay private.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from .isles import IslesError, Study, load_study

TRUTH = "truth"
CASES_FILE, CONFIG_FILE = "cases.csv", "config.csv"
SCORECARD_FILE = "scorecard.csv"  # written by stroke_helpers.scorecard, not by the generator


def truth_dir(dataset: str | os.PathLike, case_name: str) -> Path:
    """``DATASET/truth/SPLIT/case_N`` for ``case_name`` = ``"SPLIT/case_N"``."""
    return Path(dataset) / TRUTH / case_name


def has_truth(dataset: str | os.PathLike) -> bool:
    """Whether ``dataset`` is a synthetic dataset with the phantom's truth tables."""
    return (Path(dataset) / TRUTH / CASES_FILE).is_file() and (Path(dataset) / TRUTH / CONFIG_FILE).is_file()


def has_test_truth(dataset: str | os.PathLike) -> bool:
    """Whether the TESTING split can be scored: the phantom keeps its masks here; real ISLES
    2018 keeps them private, so there only validation studies are scored."""
    return (Path(dataset) / TRUTH / "TESTING").is_dir()


def no_truth(dataset: str | os.PathLike) -> str:
    """Why an answer key is missing: real data has no truth folder."""
    return f"{dataset}: no truth folder (only the synthetic dataset has one)"


def read_truth(dataset: str | os.PathLike, case_name: str) -> dict[str, np.ndarray]:
    """True maps and masks of one synthetic case (``"TRAINING/case_3"``), as ``(X, Y, Z)`` arrays."""
    tdir = truth_dir(dataset, case_name)
    if not tdir.is_dir():
        raise FileNotFoundError(f"{tdir}: no truth folder (only synthetic datasets have one)")
    return {p.name[: -len(".nii.gz")]: np.asanyarray(nib.load(p).dataobj) for p in sorted(tdir.glob("*.nii.gz"))}


def read_cases(dataset: str | os.PathLike) -> list[dict]:
    """Rows of ``truth/cases.csv`` (patient, slab, lesion volume, territory, parameters, ...)."""
    with open(Path(dataset) / TRUTH / CASES_FILE, newline="") as f:
        return list(csv.DictReader(f))


def case_row(dataset: str | os.PathLike, case_name: str) -> dict:
    """The ``truth/cases.csv`` row of one case (``"TRAINING/case_3"``)."""
    for row in read_cases(dataset):
        if f"{row['split']}/{row['case']}" == case_name:
            return row
    raise KeyError(f"{Path(dataset) / TRUTH / CASES_FILE}: no row for {case_name}")


def read_config(dataset: str | os.PathLike) -> dict[str, str]:
    """``truth/config.csv`` as a dict: the generator's settings, seed, and ``territories``
    (``atlas`` with the atlas's md5, or ``geometric`` for the offline fallback)."""
    with open(Path(dataset) / TRUTH / CONFIG_FILE, newline="") as f:
        return {r["key"]: r["value"] for r in csv.DictReader(f)}


def truth_mask(dataset: str | os.PathLike, study: Study) -> np.ndarray:
    """The expert mask of a TESTING ``study`` from ``truth/``, uint8 on the study's grid; a
    missing, unreadable, misshapen or non-binary one raises :class:`IslesError` naming the file."""
    ot = truth_dir(dataset, study.name) / "ot.nii.gz"
    if not ot.exists():
        raise IslesError(f"{study.name}: no ground truth at {ot} (real ISLES 2018 keeps the TESTING masks private)")
    try:
        mask = np.asarray(nib.load(ot).dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise IslesError(f"{study.name}: cannot read {ot}: unreadable or truncated file ({exc})") from None
    if mask.shape[:3] != study.shape or any(s != 1 for s in mask.shape[3:]):
        raise IslesError(f"{study.name}: shape mismatch: {ot} is {mask.shape} but the study is {study.shape}")
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        raise IslesError(
            f"{study.name}: {ot} has values {values[~np.isin(values, (0, 1))][:5].tolist()} outside {{0, 1}}"
        )
    return mask.reshape(study.shape).astype(np.uint8)


def load_study_truth(dataset: str | os.PathLike, name: str) -> Study:
    """A study with its expert mask (header, spacing): TESTING masks come from ``truth/``."""
    dataset = Path(dataset)
    if not name.startswith("TESTING/"):
        return load_study(dataset / name, modalities=(), require_mask=True)
    study = load_study(dataset / name, modalities=("CT",), require_mask=False)
    study.mask = truth_mask(dataset, study)
    return study
