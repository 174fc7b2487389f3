"""ISLES 2024 through the same pipeline: phantom trees in its BIDS layout, converted, checked,
trained on, evaluated, predicted and scored by the baseline (docs/decisions.md §7)."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import ATLAS_DIR

import data_download
from stroke_helpers import files, locations
from stroke_helpers.__main__ import main
from stroke_helpers.download import md5sum
from stroke_helpers.isles import discover_cases, load_study, verify_dataset
from stroke_helpers.isles24 import IN_PLANE, MANIFEST, Isles24Error, convert, is_converted
from stroke_helpers.phantom.isles24 import case_paths, on_grid, simulate, write_case

ATLAS = str(ATLAS_DIR) if ATLAS_DIR.is_dir() else None
#: the two phantom cases: (tree, naming, raw folder, subject number, NCCT spacing)
TREES = [
    ("batch_1", "strokecase", "rawdata", 1, (0.8, 0.8, 2.5)),
    ("batch_2", "stroke", "raw_data", 14, (0.7, 0.75, 2.0)),
]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A two-case ISLES 2024 release in both naming schemes: one phantom patient (~10 s, the
    slow part) written on two NCCT grids."""
    root = tmp_path_factory.mktemp("isles24") / "release"
    patient = simulate(3, atlas=ATLAS)
    written = {}
    for tree, naming, raw, number, spacing in TREES:
        volumes, affine = on_grid(patient, spacing)
        written[tree] = write_case(root / tree, number, volumes, affine, naming, raw)
    return root, written


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    root, _ = release
    return convert(root, tmp_path_factory.mktemp("data") / "isles24", progress=False)


def test_phantom_writes_the_isles24_layout(release):
    root, written = release
    rel = {tree: {k: p.relative_to(root).as_posix() for k, p in case.items()} for tree, case in written.items()}
    assert rel["batch_1"]["CT"] == "batch_1/rawdata/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_ncct.nii.gz"
    assert rel["batch_1"]["OT"] == (
        "batch_1/derivatives/sub-strokecase0001/ses-0002/sub-strokecase0001_ses-0002_lesion-msk.nii.gz"
    )
    assert rel["batch_2"]["Tmax"] == (
        "batch_2/derivatives/sub-stroke0014/ses-01/perfusion-maps/sub-stroke0014_ses-01_space-ncct_tmax.nii.gz"
    )
    assert rel["batch_2"]["CT"].startswith("batch_2/raw_data/sub-stroke0014/ses-01/")
    for (_, _, _, _, spacing), case in zip(TREES, written.values(), strict=True):
        mask = nib.load(case["OT"])
        raw = np.asanyarray(mask.dataobj.get_unscaled())
        assert mask.get_data_dtype() == np.uint16 and set(np.unique(raw)) == {0, 65535}
        # a float32 slope: "inside" reads 0.9999999998, which is why the converter binarises > 0.5
        assert mask.dataobj.slope == pytest.approx(1 / 65535, rel=1e-6)
        assert np.unique(mask.get_fdata()) == pytest.approx([0.0, 1.0])
        ct, tmax = nib.load(case["CT"]), nib.load(case["Tmax"]).get_fdata()
        assert np.allclose(ct.header.get_zooms(), spacing) and max(spacing[:2]) < 1  # sub-millimetre in-plane
        assert ct.shape[0] != ct.shape[1] and ct.shape == tmax.shape
        assert ct.shape[2] * spacing[2] >= 115  # the phantom's whole brain, -40 to +78 mm
        covered = np.flatnonzero(tmax.any(axis=(0, 1)))
        assert 0 < covered[0] and covered[-1] < ct.shape[2] - 1  # the CTP covered less than the NCCT


def test_conversion_layout_values_and_manifest(release, converted):
    root, written = release
    cases = discover_cases(converted, "TRAINING")
    assert [c.name for c in cases] == ["case_1", "case_2"] and not (converted / "TESTING").exists()
    assert is_converted(converted) and verify_dataset(converted)[1] == []
    assert locations.require_dataset(converted) == converted  # what train, the chapters and the explorer check
    with (converted / "patients.csv").open() as f:
        assert [(r["case"], r["patient"]) for r in csv.DictReader(f)] == [
            ("case_1", "sub-strokecase0001"),
            ("case_2", "sub-stroke0014"),
        ]
    manifest = json.loads((converted / MANIFEST).read_text())
    for entry, case_dir, source in zip(manifest["cases"], cases, written.values(), strict=True):
        for name, src in entry["source"].items():  # every source file, with its md5
            assert md5sum(root / src["path"]) == src["md5"] and root / src["path"] == source[name]
        study = load_study(case_dir)
        z0, z1 = entry["slices_kept"]
        tmax_src = nib.load(source["Tmax"]).get_fdata()
        assert np.array_equal(np.flatnonzero(tmax_src.any(axis=(0, 1))), np.arange(z0, z1))  # the CTP coverage
        assert study.shape == (IN_PLANE, IN_PLANE, z1 - z0)
        assert study.spacing == pytest.approx(entry["spacing_mm"], rel=1e-5)
        # the longer side of the field of view fills the 256 pixels; the other is rounded to whole pixels
        fov = [s * n for s, n in zip(entry["source_spacing_mm"][:2], entry["source_shape"][:2], strict=True)]
        long = int(np.argmax(fov))
        assert study.spacing[long] == pytest.approx(fov[long] / IN_PLANE, rel=1e-5)
        assert study.spacing[1 - long] == pytest.approx(fov[long] / IN_PLANE, rel=0.01)
        dtypes = {m: nib.load(p).get_data_dtype() for m, p in study.files.items()}
        assert dtypes == {"CT": np.int16, "CBF": np.float32, "CBV": np.float32, "MTT": np.float32,
                          "Tmax": np.float32, "OT": np.uint8}  # fmt: skip
        # the mask: same volume and the same place in scanner space, through the new affine
        src_mask = nib.load(source["OT"])
        truth = src_mask.get_fdata() > 0.5
        kept = truth[:, :, z0:z1]
        assert entry["lesion_voxels_outside_coverage"] == truth.sum() - kept.sum()  # counted, and printed
        src_ml = kept.sum() * np.prod(src_mask.header.get_zooms()) / 1000
        assert study.lesion_ml == pytest.approx(src_ml, rel=0.05)
        centre = lambda m, affine: (affine @ [*np.argwhere(m).mean(axis=0), 1])[:3]  # noqa: E731
        out_affine = nib.load(study.files["OT"]).affine
        assert np.allclose(out_affine, entry["affine"], atol=1e-5)
        assert np.linalg.norm(centre(study.mask, out_affine) - centre(truth, src_mask.affine)) < 0.5  # mm
        # the maps keep their units: Tmax inside the lesion, CBF over the brain
        assert np.median(study.Tmax[study.mask > 0]) == pytest.approx(np.median(tmax_src[truth]), rel=0.1)
        cbf_src = nib.load(source["CBF"]).get_fdata()
        assert np.median(study.CBF[study.CBF > 0]) == pytest.approx(np.median(cbf_src[cbf_src > 0]), rel=0.1)
        # outside the head, padding included, the CT is the source's background
        assert study.CT[0, 0, 0] == pytest.approx(nib.load(source["CT"]).get_fdata().min(), abs=1)


def _small_case(root, number, shape=(40, 48, 10), naming="stroke", raw="raw_data", seed=0, **changes):
    """A hand-made case on a small grid: random positive maps, a blob lesion; ``changes``
    replace (array) or leave out (None) a volume."""
    rng = np.random.default_rng(seed)
    lesion = np.zeros(shape, bool)
    lesion[10:20, 12:24, 4:7] = True
    vols = {"CT": rng.uniform(20, 40, shape), "OT": lesion}
    vols |= {m: rng.uniform(1, 10, shape).astype(np.float32) for m in ("CBF", "CBV", "MTT", "Tmax")}
    for name, value in changes.items():
        if value is None:
            vols.pop(name)
        else:
            vols[name] = value
    affine = np.diag([4.0, 4.0, 2.0, 1.0])  # coarse, so the grid stays small: 160 x 192 mm
    return write_case(root, number, vols, affine, naming, raw, time_step=1.5)


def test_a_bad_tree_is_refused_one_line_per_problem(tmp_path, capsys):
    src, out = tmp_path / "release", tmp_path / "isles24"
    _small_case(src, 1)
    _small_case(src, 2, MTT=None)  # a map missing
    _small_case(src, 3, OT=np.zeros((40, 48, 9), bool))  # a mask on another grid
    ct = _small_case(src, 4)["CT"]
    ct.write_bytes(ct.read_bytes()[:200])  # a truncated NCCT
    _small_case(src, 5, OT=None)  # no follow-up session at all
    with pytest.raises(Isles24Error) as info:
        convert(src, out, progress=False)
    problems = info.value.problems
    assert len(problems) == 4, problems
    expected = [
        ("sub-stroke0002", "sub-stroke0002_ses-01_space-ncct_mtt.nii.gz"),
        ("sub-stroke0003", "sub-stroke0003_ses-02_lesion-msk.nii.gz"),
        ("sub-stroke0004", "sub-stroke0004_ses-01_ncct.nii.gz"),
        ("sub-stroke0005", "ses-02"),
    ]
    for (case, name), line in zip(expected, sorted(problems), strict=True):
        assert line.startswith(f"{case}: ") and name in line and "\n" not in line
    assert not out.exists() and not files.partial(out).exists()  # nothing written
    # through the command line: one error, then the same lines; exit status 2
    assert data_download.main(["isles24", "--from", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src}: 4 problem(s); nothing was written to {out}:")
    assert all(p in err for p in problems) and len(err.strip().splitlines()) == 5
    assert not out.exists()
    # not an ISLES 2024 tree at all: one line
    (tmp_path / "empty").mkdir()
    assert data_download.main(["isles24", "--from", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "not an ISLES 2024 tree (no derivatives/ folder" in capsys.readouterr().err


def test_series_nan_coverage_and_a_stray_mask(tmp_path, capsys):
    """The options a real release needs: the 4D series, NaN map voxels, lesion voxels outside the
    CTP coverage, and the native-space leftover mask beside the registered one."""
    src = tmp_path / "release"
    shape, frames = (40, 48, 10), 12
    rng = np.random.default_rng(1)
    cbf = rng.uniform(1, 10, shape).astype(np.float32)
    cbf[5, 5, 5] = np.nan
    maps = {m: rng.uniform(1, 10, shape).astype(np.float32) for m in ("CBV", "MTT", "Tmax")} | {"CBF": cbf}
    for m in maps.values():
        m[:, :, :2] = 0  # the CTP did not cover the first two slices
    lesion = np.zeros(shape, bool)
    lesion[10:20, 12:24, 1:6] = True  # one of its slices outside the coverage
    pwi = rng.integers(0, 100, (*shape, frames)).astype(np.float32)
    written = _small_case(src, 2, **maps, OT=lesion, **{"4DPWI": pwi})
    # the registered mask is named space-ncct; the leftover native one is ignored, and said so
    registered = written["OT"].with_name("sub-stroke0002_ses-02_space-ncct_lesion-msk.nii.gz")
    written["OT"].rename(registered)
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 5), np.uint8), np.eye(4)), written["OT"].with_suffix(""))
    out = convert(src, tmp_path / "isles24", series=True, progress=False)
    notes = capsys.readouterr().out
    assert "note: sub-stroke0002: 1 NaN/Inf voxels in the CBF map set to 0" in notes
    assert "note: sub-stroke0002: 120 of 600 lesion voxels lie outside the CTP coverage" in notes
    entry = json.loads((out / MANIFEST).read_text())["cases"][0]
    assert entry["slices_kept"] == [2, 10] and entry["nonfinite_set_to_zero"] == {"CBF": 1}
    assert entry["ignored"] == ["sub-stroke0002_ses-02_lesion-msk.nii: not the space-ncct mask"]
    assert entry["source"]["OT"]["path"].endswith("space-ncct_lesion-msk.nii.gz") and "4DPWI" in entry["source"]
    study = load_study(out / "TRAINING" / "case_1")
    assert study.pwi.shape == (IN_PLANE, IN_PLANE, 8, frames) and study.pwi_time_step == pytest.approx(1.5)
    # 192 mm fill the 256 pixels; the 160 mm side takes round(160 / (192 / 256)) = 213 of them
    assert np.isfinite(study.CBF).all() and study.spacing == pytest.approx((160 / 213, 192 / IN_PLANE, 2.0))
    assert entry["time_step_s"] == pytest.approx(1.5)


def test_nothing_overwritten_but_our_own_dataset(tmp_path):
    src, out = tmp_path / "release", tmp_path / "isles24"
    _small_case(src, 1, naming="strokecase", raw="rawdata")
    convert(src, out, progress=False)
    before = md5sum(out / MANIFEST)
    with pytest.raises(FileExistsError, match="pass --force"):
        convert(src, out, progress=False)
    assert md5sum(out / MANIFEST) == before
    assert data_download.main(["isles24", "--from", str(src), "--out", str(out), "--force", "--no-progress"]) == 0
    (out / "notes.txt").write_text("mine")  # someone's file: --force no longer replaces the folder
    with pytest.raises(FileExistsError, match=r"it also holds notes.txt"):
        convert(src, out, force=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "other"
    shutil.copytree(out / "TRAINING", foreign / "TRAINING")  # an ISLES-layout folder we did not convert
    with pytest.raises(FileExistsError, match=f"no {MANIFEST}"):
        convert(src, foreign, force=True, progress=False)
    assert case_paths(src, 1, "strokecase", "rawdata")["CT"].is_file()  # the source is only read


def test_train_evaluate_predict_and_baseline_on_converted_data(converted, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--preset", "smoke", "--epochs", "2", "--device", "cpu", "--no-progress"]
    assert main(["train", "--data", str(converted), "--out", str(run), *argv]) == 0
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 0
    assert "lesion_f1" in capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())
    for row in saved["studies"]:
        assert 0 <= row["lesion_f1"] <= 1 and row["lesion_count_diff"] >= 0
    assert {"lesion_f1", "lesion_count_diff", "dice", "avd"} <= set(saved["summary"])
    # no public test labels: one line, before any work
    assert main(["evaluate", "--run", str(run), "--split", "test", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "ISLES 2024 has no public test labels" in err and "\n" not in err
    assert not (run / "metrics_test.json").exists()
    # predict writes the converted study's geometry
    case = converted / "TRAINING" / "case_2"
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "--run", str(run), "--study", str(case), "--out", str(out), "--device", "cpu"]) == 0
    ct = nib.load(next(case.glob("*.CT.*/*.nii.gz")))
    mask = nib.load(out)
    assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine)
    # the classical baseline reads the converted maps; TESTING is refused in one line
    assert main(["baseline", str(converted), "--out", str(tmp_path / "baseline.json")]) == 0
    rows = json.loads((tmp_path / "baseline.json").read_text())["rows"]
    assert len(rows) == 2 and all(0 <= r["dice"] <= 1 for r in rows)
    capsys.readouterr()
    assert main(["baseline", str(converted), "--split", "TESTING"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ISLES 2024 has no public test labels" in err and "\n" not in err
