"""The ISLES 2018 layer: discovery by modality token, loading, bad input, writing back."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import REAL_CT, make_case

from stroke_helpers.isles import (
    IslesError,
    discover_cases,
    find_case_files,
    load_split,
    load_study,
    modality_token,
    verify_dataset,
    write_like,
    write_volume,
)


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("SMIR.Brain.XX.O.CT.345562.nii", "CT"),
        ("SMIR.Brain.XX.O.CT_4DPWI.345561.nii", "4DPWI"),
        ("SMIR.Brain.XX.O.CT_CBF.345563.nii.gz", "CBF"),
        ("SMIR.Brain.XX.O.CT_CBV.1.nii", "CBV"),
        ("SMIR.Brain.XX.O.MR_MTT.127014.nii", "MTT"),
        ("SMIR.Brain.XX.O.CT_Tmax.9.nii", "Tmax"),
        ("SMIR.Brain.XX.O.MR_TMAX.9.NII.GZ", "Tmax"),
        ("SMIR.Brain.XX.O.OT.345568.nii", "OT"),
        ("notes.txt", None),
        ("SMIR.Brain.XX.O.CTA.12.nii", None),
    ],
)
def test_modality_token(name, token):
    assert modality_token(name) == token


def test_discovery_ignores_ids_and_junk(tmp_path):
    split = tmp_path / "TESTING"
    for n in (10, 2, 1):
        make_case(split, n, OT=None)
    # ids unrelated to each other, an MR_ prefix, a .nii.gz, and macOS junk next to them
    case = split / "case_2"
    cbf = next(case.rglob("*CT_CBF*.nii"))
    nib.save(nib.load(cbf), cbf.with_name("SMIR.Brain.XX.O.MR_CBF.777.nii.gz"))
    cbf.unlink()
    (case / "__MACOSX").mkdir()
    (case / "__MACOSX" / "._SMIR.Brain.XX.O.CT.1.nii").write_bytes(b"junk")
    assert [c.name for c in discover_cases(tmp_path, "TESTING")] == ["case_1", "case_2", "case_10"]
    files = find_case_files(case)
    assert set(files) == {"CT", "4DPWI", "CBF", "CBV", "MTT", "Tmax"}
    assert files["CBF"].name == "SMIR.Brain.XX.O.MR_CBF.777.nii.gz"
    study = load_study(case)
    assert study.mask is None and study.name == "TESTING/case_2"


def test_load_study_types_and_lazy_pwi(tmp_path):
    case = make_case(tmp_path / "TRAINING", 3, shape=(16, 12, 4), frames=12)
    study = load_study(case)
    assert study.shape == (16, 12, 4) and study.n_slices == 4
    assert list(study.images) == ["CT", "CBV", "CBF", "MTT", "Tmax"]
    assert all(a.dtype == np.float32 for a in study.images.values())
    assert study.mask.dtype == np.uint8 and set(np.unique(study.mask)) <= {0, 1}
    assert study.spacing == pytest.approx((0.976562, 0.976562, 5.0003), rel=1e-6)
    assert study.voxel_ml == pytest.approx(0.976562**2 * 5.0003 / 1000)
    assert "pwi" not in study.__dict__  # not read yet
    assert study.pwi.shape == (16, 12, 4, 12)
    assert study.pwi_time_step == pytest.approx(1.5)
    np.testing.assert_array_equal(study.CT, study.images["CT"])


def test_missing_modality_names_case_and_modality(tmp_path):
    case = make_case(tmp_path / "TRAINING", 4, Tmax=None)
    with pytest.raises(IslesError, match=r"TRAINING/case_4: missing modality Tmax"):
        load_study(case)
    assert load_study(case, modalities=("CT", "CBF")).images.keys() == {"CT", "CBF"}


def test_missing_mask_in_training_is_an_error(tmp_path):
    case = make_case(tmp_path / "TRAINING", 5, OT=None)
    with pytest.raises(IslesError, match="missing modality OT"):
        load_study(case)
    assert load_study(case, require_mask=False).mask is None


def test_truncated_file(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1)
    cbv = find_case_files(case)["CBV"]
    data = cbv.read_bytes()
    cbv.write_bytes(data[: len(data) // 2])
    with pytest.raises(IslesError, match=rf"case_1: cannot read {cbv.name}: unreadable or truncated"):
        load_study(case)


def test_corrupt_header(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1)
    ct = find_case_files(case)["CT"]
    ct.write_bytes(b"this is not a NIfTI file" * 20)
    with pytest.raises(IslesError, match=rf"cannot read {ct.name}"):
        load_study(case)


def test_shape_mismatch(tmp_path):
    case = make_case(tmp_path / "TRAINING", 2, MTT=np.ones((32, 32, 3)))
    with pytest.raises(IslesError, match=r"shape mismatch: .*CT_MTT.* is \(32, 32, 3\) but CT is \(32, 32, 2\)"):
        load_study(case)


def test_nan_policy(tmp_path):
    mtt = np.ones((32, 32, 2))
    mtt[0, 0, 0] = np.nan
    mtt[1, 1, 1] = np.inf
    case = make_case(tmp_path / "TRAINING", 6, MTT=mtt)
    with pytest.raises(IslesError, match="has 2 NaN/Inf voxels"):
        load_study(case)
    with pytest.warns(UserWarning, match="2 NaN/Inf voxels"):
        study = load_study(case, nan_policy="zero")
    assert np.isfinite(study.MTT).all() and study.MTT[0, 0, 0] == 0 and study.notes


def test_mask_values_outside_binary(tmp_path):
    ot = np.zeros((32, 32, 2), np.uint8)
    ot[0, 0, 0] = 2
    case = make_case(tmp_path / "TRAINING", 7, OT=ot)
    with pytest.raises(IslesError, match=r"values \[2\] outside \{0, 1\}"):
        load_study(case)


def test_duplicate_modality(tmp_path):
    case = make_case(tmp_path / "TRAINING", 8)
    ct = find_case_files(case)["CT"]
    (ct.parent / "SMIR.Brain.XX.O.CT.99.nii").write_bytes(ct.read_bytes())
    with pytest.raises(IslesError, match="two CT files"):
        load_study(case)


def test_write_like_keeps_geometry(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1)
    study = load_study(case)
    pred = (study.CBF > 300).astype(np.uint8)
    out = write_like(study, pred, tmp_path / "pred.nii.gz")
    img = nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), pred)
    assert img.header.get_zooms() == study.header.get_zooms()
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 0
    with pytest.raises(IslesError, match="cannot write an array of shape"):
        write_like(study, pred[:, :, :1], tmp_path / "bad.nii")


def test_verify_lists_every_problem(tmp_path):
    make_case(tmp_path / "TRAINING", 1)
    make_case(tmp_path / "TRAINING", 2, CBF=None)
    make_case(tmp_path / "TRAINING", 3, OT=np.zeros((32, 32, 2), np.uint8))
    summaries, problems = verify_dataset(tmp_path)
    assert summaries[0].cases == 3
    assert any("case_2: missing modality CBF" in p for p in problems)
    assert any("case_3" in p and "empty mask" in p for p in problems)
    assert verify_dataset(tmp_path / "nowhere")[1] == [f"{tmp_path / 'nowhere'}: dataset folder does not exist"]


def test_phantom_goes_through_the_same_loader(phantom_root):
    studies = load_split(phantom_root, "TRAINING")
    assert len(studies) == 6 and all(s.patient for s in studies)
    assert all(s.mask.any() for s in studies)
    assert {s.n_slices for s in studies} <= {2, 4, 8, 16, 22}


@pytest.mark.skipif(not REAL_CT.exists(), reason="../shared/real is not present")
def test_real_ct_file():
    from stroke_helpers.isles import _read

    data, img = _read(REAL_CT, "real", "raise", [])
    assert data.shape == (256, 256, 8)
    assert img.get_data_dtype() == np.int32
    assert tuple(round(float(z), 4) for z in img.header.get_zooms()) == (0.9766, 0.9766, 5.0003)
    assert modality_token(REAL_CT.name) == "CT"
    np.testing.assert_array_equal(img.affine, np.eye(4))


def test_written_volumes_are_what_nibabel_writes(tmp_path):
    """``write_volume`` (block-copied to NIfTI order, gzip by ISA-L) stores exactly the bytes of
    ``nib.save`` once uncompressed, for a 4D series and for a map, ``.nii`` and ``.nii.gz``."""
    import gzip

    from stroke_helpers.isles import isles_header

    rng = np.random.default_rng(0)
    series = rng.integers(-50, 200, (40, 36, 3, 7)).astype(np.int16)
    cbf = rng.random((40, 36, 3)).astype(np.float32)
    for array, dtype, step in ((series, np.int16, 1.0), (cbf, np.float32, None)):
        for suffix in (".nii", ".nii.gz"):
            path = write_volume(tmp_path / f"v{array.ndim}{suffix}", array, dtype, (0.9, 0.9, 5.0), step)
            data = array[:, :, :, None, :] if array.ndim == 4 else array
            hdr = isles_header((0.9, 0.9, 5.0), step)
            hdr.set_data_dtype(dtype)
            reference = tmp_path / f"ref{array.ndim}{suffix}"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(data), None, header=hdr), reference)
            raw = path.read_bytes()
            if suffix == ".nii.gz":
                raw, ref = gzip.decompress(raw), gzip.decompress(reference.read_bytes())
            else:
                ref = reference.read_bytes()
            assert raw[348:] == ref[348:]  # the voxels, in NIfTI order
            assert np.array_equal(np.asarray(nib.load(path).dataobj), data)
