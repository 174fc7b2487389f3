"""Slice datasets: normalisation, brain mask, cache, splits by patient, channels, augmentation hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stroke_helpers.datasets import (
    SliceDataset,
    brain_mask,
    build_slices,
    normalise,
    resize_slices,
    split_studies,
    to_native,
)
from stroke_helpers.isles import MODALITIES, channel_indices, load_study


@pytest.fixture(scope="module")
def arrays(phantom_root, tmp_path_factory):
    return build_slices(phantom_root, "TRAINING", size=64, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_normalisation_ranges(phantom_root):
    study = load_study(phantom_root / "TRAINING" / "case_1")
    brain = brain_mask(study)
    norm = normalise(study, brain)
    assert set(norm) == set(MODALITIES)
    assert 0 <= norm["CT"].min() and norm["CT"].max() <= 1
    for m in ("CBF", "CBV"):  # relative to the brain mean, whatever the scanner's units
        assert 0.85 < norm[m][brain].mean() <= 1.0  # 1 before clipping the brightest vessels at 4
        assert norm[m].max() <= 4
    assert norm["Tmax"].max() <= 1.5 and norm["MTT"].min() >= 0
    # scaling the uncalibrated map changes nothing after normalisation
    study.images["CBF"] = study.images["CBF"] * 3.7
    np.testing.assert_allclose(normalise(study, brain)["CBF"], norm["CBF"], rtol=1e-5)


def test_brain_mask_covers_the_lesion_and_not_the_background(phantom_root):
    study = load_study(phantom_root / "TRAINING" / "case_2")
    brain = brain_mask(study)
    assert brain[study.mask.astype(bool)].all()
    assert not brain[0, 0].any() and 0.15 < brain.mean() < 0.6


def test_slices_shapes_and_resizing(arrays, phantom_root):
    n = sum(load_study(c).n_slices for c in sorted((phantom_root / "TRAINING").iterdir()))
    assert arrays.images.shape == (n, 5, 64, 64) and arrays.masks.shape == (n, 64, 64)
    assert arrays.images.dtype == torch.float32 and set(torch.unique(arrays.masks).tolist()) <= {0, 1}
    assert len(arrays.studies) == 6 and arrays.shapes[0][:2] == (256, 256)
    assert arrays.masks.sum() > 0


def test_cache_is_used_and_invalidated(phantom_root, tmp_path):
    first = build_slices(phantom_root, "TRAINING", size=32, cache_dir=tmp_path, progress=False)
    cached = list(tmp_path.glob("slices_TRAINING_32_*.npz"))
    assert len(cached) == 1
    second = build_slices(phantom_root, "TRAINING", size=32, cache_dir=tmp_path, progress=False)
    assert torch.equal(first.images, second.images) and first.studies == second.studies
    # touching a file changes the key: a new cache entry, never a stale one
    ct = next((phantom_root / "TRAINING" / "case_1").rglob("*.CT.*.nii*"))  # .nii.gz from the phantom
    ct.touch()
    build_slices(phantom_root, "TRAINING", size=32, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("slices_TRAINING_32_*.npz"))) == 2


def test_split_by_patient_is_seeded_and_keeps_slabs_together():
    studies = [f"s{i}" for i in range(40)]
    patients = [f"p{i // 2}" if i < 20 else f"p{i}" for i in range(40)]  # 10 two-slab patients
    train, val = split_studies(studies, patients, n_val=19, seed=3)
    assert len(val) == 19 and sorted(train + val) == list(range(40))
    val_patients = {patients[i] for i in val}
    assert not val_patients & {patients[i] for i in train}
    assert split_studies(studies, patients, n_val=19, seed=3) == (train, val)
    assert split_studies(studies, patients, n_val=19, seed=4) != (train, val)
    # no patient ids: by case
    train, val = split_studies(studies, [None] * 40, n_val=19, seed=0)
    assert len(val) == 19
    with pytest.raises(ValueError, match="cannot hold out"):
        split_studies(studies[:5], [None] * 5, n_val=19)


def test_dataset_channels_and_transform_hook(arrays):
    channels = channel_indices(("Tmax", "CBV"))
    assert channels == [MODALITIES.index("CBV"), MODALITIES.index("Tmax")]  # the fixed order
    ds = SliceDataset(arrays, channels, studies=[0, 1])
    item = ds[0]
    assert item["image"].shape == (2, 64, 64) and item["mask"].shape == (1, 64, 64)
    j = ds.indices[0]
    assert torch.equal(item["image"][0], arrays.images[j, MODALITIES.index("CBV")])
    assert set(np.unique(arrays.study_index[ds.indices])) == {0, 1}

    def flip(image, mask):
        return image.flip(-1), mask.flip(-1)

    flipped = SliceDataset(arrays, channels, studies=[0, 1], transform=flip)[0]
    assert torch.equal(flipped["image"], item["image"].flip(-1)) and torch.equal(flipped["mask"], item["mask"].flip(-1))
    with pytest.raises(ValueError, match="unknown modality DWI"):
        channel_indices(("DWI",))


def test_to_native_inverts_resize_slices():
    volume = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    back = to_native(resize_slices(volume, 40, "bilinear"), volume.shape)
    assert back.shape == volume.shape and np.allclose(back, volume)
    assert to_native(resize_slices(volume, 20, "bilinear"), volume.shape).shape == volume.shape
