"""The digital phantom: ISLES layout, dtypes and header quirks, patients, determinism, realism."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import REAL_CT
from scipy import ndimage

from stroke_helpers import phantom
from stroke_helpers.figures import ct_realism, ct_realism_figure
from stroke_helpers.isles import find_case_files, load_split, read_patients
from stroke_helpers.modalities import modality
from stroke_helpers.truth import read_cases, read_truth


def test_files_have_isles_dtypes_and_header_quirks(phantom_root):
    case = phantom_root / "TRAINING" / "case_1"
    files = find_case_files(case)
    assert set(files) == {"CT", "4DPWI", "CBF", "CBV", "MTT", "Tmax", "OT"}
    ids = {t: int(p.name[: -len(".nii.gz")].split(".")[-1]) for t, p in files.items()}
    assert [ids[t] for t in ("4DPWI", "CT", "CBF", "CBV", "MTT", "Tmax", "OT")] == list(
        range(ids["4DPWI"], ids["4DPWI"] + 7)
    )
    for token, path in files.items():
        assert path.name.endswith(".nii.gz") and path.parent.name == path.name[: -len(".nii.gz")]  # compressed
        img = nib.load(path)
        hdr = img.header
        assert img.get_data_dtype() == np.dtype(modality(token).dtype), token
        assert int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 2 and hdr["pixdim"][0] == -1
        np.testing.assert_array_equal(img.affine, np.eye(4))
        assert img.shape[:2] == (256, 256)
    pwi = nib.load(files["4DPWI"])
    assert pwi.ndim == 5 and pwi.shape[3] == 1 and 43 <= pwi.shape[4] <= 60
    assert pwi.header["pixdim"][4] == pytest.approx(1.0)


def test_test_split_has_no_mask_but_truth_keeps_it(phantom_root):
    for case in (phantom_root / "TESTING").iterdir():
        assert "OT" not in find_case_files(case)
        assert (phantom_root / "truth" / "TESTING" / case.name / "ot.nii.gz").exists()


def test_patients_and_cases_table(phantom_root):
    patients = read_patients(phantom_root)
    assert len(patients) == 8
    rows = read_cases(phantom_root)
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient"], []).append(r)
    assert any(len(v) == 2 for v in by_patient.values())  # some patients have two slabs
    for slabs in by_patient.values():
        if len(slabs) == 2:
            assert [s["slab"] for s in slabs] == ["A", "B"] and slabs[0]["n_slices"] == slabs[1]["n_slices"]
    studies = load_split(phantom_root, "TRAINING")
    for s in studies:
        row = next(r for r in rows if f"{r['split']}/{r['case']}" == s.name)
        assert s.lesion_ml == pytest.approx(float(row["lesion_ml"]), abs=0.01)
        assert s.patient == row["patient"]


def test_truth_maps_obey_central_volume_theorem(phantom_root):
    truth = read_truth(phantom_root, "TRAINING/case_1")
    ok = truth["CBF"] > 1
    np.testing.assert_allclose(truth["MTT"][ok], 60 * truth["CBV"][ok] / truth["CBF"][ok], rtol=1e-4)
    assert truth["core"].any() and not (truth["core"] & truth["penumbra"]).any()
    assert (truth["Tmax"][truth["core"] > 0] > 10).mean() > 0.5  # the core lies in the severe zone (Tmax > 10 s)


def test_ot_is_core_grown_into_penumbra(phantom_root):
    for case in ("TRAINING/case_1", "TRAINING/case_2", "TRAINING/case_3"):
        truth = read_truth(phantom_root, case)
        ot = truth["ot_dwi"].astype(bool)  # the DWI lesion before its registration error
        core, pen = truth["core"].astype(bool), truth["penumbra"].astype(bool)
        written = np.asanyarray(nib.load(find_case_files(phantom_root / case)["OT"]).dataobj).astype(bool)
        near = ndimage.binary_dilation(ot, np.ones((7, 7, 1), bool))  # shifted in-plane by ~1-2 mm
        assert written.any() and not (written & ~near).any()
        assert (ot & core).sum() == core.sum()  # all the core
        assert 0 < (ot & pen).sum() < pen.sum()  # part, not all, of the penumbra
        assert not (ot & ~core & ~pen).any()


def test_same_seed_same_data_and_slab_sizes():
    a = phantom.simulate_patient(11, [2], phantom.PhantomConfig(write_pwi=False))[0]
    b = phantom.simulate_patient(11, [2], phantom.PhantomConfig(write_pwi=False))[0]
    for k in a["volumes"]:
        np.testing.assert_array_equal(a["volumes"][k], b["volumes"][k])
    c = phantom.simulate_patient(12, [2], phantom.PhantomConfig(write_pwi=False))[0]
    assert not np.array_equal(a["volumes"]["CT"], c["volumes"]["CT"])
    sizes = phantom.slab_sizes(np.random.default_rng(0), 94)
    assert sum(sizes) == 502 and sorted(set(sizes)) == [2, 4, 8, 16, 22] and sizes.count(2) == 51


def test_patient_plan_matches_isles_proportions():
    plan = phantom.plan_split(np.random.default_rng(0), 94)
    assert len(plan) == 63 and sum(len(p) for p in plan) == 94 and sum(len(p) == 2 for p in plan) == 31


def test_existing_dataset_is_kept_without_force(phantom_root, tmp_path):
    out = tmp_path / "syn"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="force=True"):
        phantom.generate_dataset(out, 1, 0, workers=1, progress=False)
    assert (out / "precious.txt").exists()


def test_ct_realism_numbers(phantom_root):
    ct = np.asanyarray(nib.load(find_case_files(phantom_root / "TRAINING" / "case_1")["CT"]).dataobj)
    numbers = ct_realism(ct)
    assert numbers["background_hu"] == -23
    assert 28 <= numbers["brain_median_hu"] <= 40
    assert numbers["skull_p99_hu"] > 1000
    if REAL_CT.exists():
        real = ct_realism(np.asanyarray(nib.load(REAL_CT).dataobj))
        assert numbers["background_hu"] == real["background_hu"]
        assert abs(numbers["brain_median_hu"] - real["brain_median_hu"]) <= 10
        assert abs(numbers["brain_iqr_hu"] - real["brain_iqr_hu"]) < 10
        fig = ct_realism_figure(ct, np.asanyarray(nib.load(REAL_CT).dataobj))
        panels = [a for a in fig.axes if a.images]  # the rest are colorbars
        assert len(panels) == 2 and len(fig.axes) == 5 and "real" in panels[1].get_title().lower()


def test_study_figure_draws_every_modality_and_the_outline(phantom_root):
    from stroke_helpers.figures import study_figure
    from stroke_helpers.isles import load_study

    study = load_study(phantom_root / "TRAINING" / "case_1")
    z = int(study.mask.sum(axis=(0, 1)).argmax())
    fig = study_figure(study.images, z, study.mask, title=study.name)
    panels = [a for a in fig.axes if a.images]
    assert [ax.get_title() for ax in panels] == ["CT", "CBV", "CBF", "MTT", "Tmax"]
    assert all(ax.collections for ax in panels)  # the red lesion contour is on every panel
    assert panels[0].images[0].get_clim() == (0, 100)
    assert [b.get_ylabel() for b in fig.axes if not b.images] == ["HU", "a.u.", "a.u.", "s", "s"]


def test_correlated_noise_sd_and_correlation():
    noise = phantom.correlated_noise(np.random.default_rng(0), np.empty((256, 256, 8), np.float32), 8.0, 0.8)
    assert noise.std() == pytest.approx(8 / (2 * 0.8 * np.sqrt(np.pi)), rel=0.05)  # 2.8 HU per voxel
    neighbour = np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]
    assert 0.5 < neighbour < 0.9  # spatially correlated, unlike white noise
