"""The generator's half of the truth folder: writes it (:mod:`stroke_helpers.truth` owns its
layout and reads it)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .. import files
from ..truth import CASES_FILE, CONFIG_FILE, TRUTH, truth_dir


def write_case_truth(dataset: Path, case_name: str, arrays: dict[str, np.ndarray], spacing) -> None:
    """Write one case's true maps and masks (booleans as uint8, the rest float32, gzip)."""
    tdir = truth_dir(dataset, case_name)
    tdir.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        dtype = np.uint8 if arr.dtype in (bool, np.uint8) else np.float32
        img = nib.Nifti1Image(arr.astype(dtype), np.diag([*spacing, 1.0]))
        files.write_nifti(tdir / f"{name}.nii.gz", img, durable=False)


def write_tables(dataset: Path, rows: list[dict], settings: dict) -> None:
    """``truth/cases.csv`` (every key of the rows) and ``truth/config.csv`` (``settings``)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    files.write_csv(dataset / TRUTH / CASES_FILE, keys, rows, durable=False)
    files.write_csv(dataset / TRUTH / CONFIG_FILE, ["key", "value"], list(settings.items()), durable=False)
