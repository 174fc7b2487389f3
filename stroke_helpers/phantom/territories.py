"""Vascular territories: the JHU arterial territory atlas (Liu et al., Scientific Data 10, 74,
2023; CC BY-SA 4.0, (c) 2021 The Johns Hopkins University), fetched at run time by
:func:`stroke_helpers.download.fetch_arterial_atlas`, or geometric territories offline.

The atlas's level-1 labels (odd = left, even = right): 1/2 ACA, 3/4 medial lenticulostriate,
5/6 lateral lenticulostriate, 7/8 MCA frontal, 9/10 MCA parietal, 11/12 MCA temporal, 13/14 MCA
occipital, 15/16 MCA insular, 17/18 PCA temporal, 19/20 PCA occipital, 21/22 posterior choroidal
and thalamoperforators, 23/24 anterior choroidal and thalamoperforators, 25/26 basilar, 27/28
superior cerebellar, 29/30 inferior cerebellar, 31/32 lateral ventricles. Its voxel grid maps
onto the nilearn MNI152 2009 template by an integer flip and shift (measured; the header's sform
is unusable): ``i_mni = 188 - i_atlas``, ``j_mni = j_atlas + 8``, ``k_mni = k_atlas``.

The geometric fallback uses the same numbers for ACA, lateral lenticulostriate, MCA frontal /
parietal / temporal / insular, PCA occipital and cerebellum, drawn from angles and distances in
MNI space; a dataset built with it says so in ``truth/config.csv`` (``territories``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .anatomy import TEMPLATE_ORIGIN, template

ATLAS_FILE = "ArterialAtlas.nii.gz"
ATLAS_MD5 = "30c24774be7bcfbdb7bcc85371bdd23a"
NAMES = {
    1: "ACA", 3: "medial lenticulostriate", 5: "lateral lenticulostriate", 7: "MCA frontal",
    9: "MCA parietal", 11: "MCA temporal", 13: "MCA occipital", 15: "MCA insular", 17: "PCA temporal",
    19: "PCA occipital", 21: "posterior choroidal / thalamoperforators", 23: "anterior choroidal",
    25: "basilar", 27: "superior cerebellar", 29: "inferior cerebellar", 31: "lateral ventricle",
}  # fmt: skip


@dataclass
class Territories:
    """Level-1 territory labels on the template grid and where they came from."""

    labels: np.ndarray
    source: str  # "atlas" or "geometric"
    md5: str = ""

    def record(self) -> dict:
        return record(self.source == "atlas")


def record(atlas: bool) -> dict:
    """What ``truth/config.csv`` says of the territories: their source and the atlas's md5."""
    return {"territories": "atlas" if atlas else "geometric", "territories_md5": ATLAS_MD5 if atlas else ""}


def atlas_to_template(atlas: np.ndarray, shape: tuple) -> np.ndarray:
    """The atlas's labels on the template grid (the integer flip and shift above)."""
    out = np.zeros(shape, np.int16)
    ni, nj, nk = atlas.shape
    out[188 - ni + 1 : 189, 8 : 8 + nj, :nk] = atlas[::-1].astype(np.int16)
    return out


def geometric_labels() -> np.ndarray:
    """The offline fallback: territories from angles around the head's vertical axis."""
    tpl = template()
    i, j, k = np.indices(tpl["icv"].shape, dtype=np.float32)
    x, y, z = i + TEMPLATE_ORIGIN[0], j + TEMPLATE_ORIGIN[1], k + TEMPLATE_ORIGIN[2]
    angle = np.arctan2(np.abs(x), y + 18)  # 0 anterior, pi posterior
    lab = np.where(angle < 0.5, 1, np.where(angle > 2.45, 19, np.where(y > -10, 7, np.where(z > 20, 9, 11))))
    lab = np.where((np.abs(x) > 28) & (np.abs(x) < 42) & (y > -20) & (y < 15) & (z > -10) & (z < 15), 15, lab)
    lab = np.where((tpl["deep"] > 0.2) & (y > -15) & (np.abs(x) > 8), 5, lab)
    lab = np.where((y < -40) & (z < -15), 27, lab)
    lab = lab + (x > 0)  # even = right
    return np.where(tpl["icv"] > 0.5, lab, 0).astype(np.int16)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def find_atlas(atlas_dir: str | Path | None, warn: bool = True) -> Path | None:
    """The pinned atlas file in ``atlas_dir`` (checked against its md5), else ``None`` and, with
    ``warn``, a printed warning that geometric territories will be used."""
    path = Path(atlas_dir) / ATLAS_FILE if atlas_dir else None
    if path is not None and path.is_file() and _md5(path) == ATLAS_MD5:
        return path
    if warn:
        why = "no atlas folder given" if path is None else f"{path} missing or not the pinned file"
        message = (
            f"WARNING: arterial territory atlas unavailable ({why}); using geometric territories. "
            "Get it with: python data_download.py atlas"
        )
        print(message, flush=True)
    return None


def load_territories(atlas_dir: str | Path | None, warn: bool = True) -> Territories:
    """The atlas's territories from ``atlas_dir`` (:func:`find_atlas`), else the geometric fallback."""
    path = find_atlas(atlas_dir, warn)
    if path is not None:
        atlas = np.asarray(nib.load(path).dataobj)
        return Territories(atlas_to_template(atlas, template()["icv"].shape), "atlas", ATLAS_MD5)
    return Territories(geometric_labels(), "geometric")
