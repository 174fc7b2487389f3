"""Nothing silent, commands honest (issue 23, items 2 and 5).

Every study is checked before training or evaluation by the one check ``verify`` makes
(:func:`stroke_helpers.isles.check_study`): each hostile input below gives exactly one line
naming the case and the file, in ``verify_dataset`` and in the training path (``build_slices``)
alike, and the real data's header quirks still pass. Options the data or the machine cannot
honour are refused before any work: exit 2, one ``error:`` line, nothing written.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REAL_CT, make_case

from stroke_helpers.__main__ import main as cli
from stroke_helpers.__main__ import parser
from stroke_helpers.baseline import classical_baseline
from stroke_helpers.datasets import build_slices
from stroke_helpers.isles import IslesError, check_study, discover_cases, find_case_files, load_study, verify_dataset
from stroke_helpers.runs import RunFolder, TrainConfig, write_json

SHAPE = (32, 32, 2)


def rewrite(path: Path, edit=None, data=None, dtype=None) -> None:
    """Write ``path`` again with its header changed by ``edit(header)`` (and other data/dtype)."""
    img = nib.load(path)
    hdr = img.header.copy()
    array = np.asanyarray(img.dataobj) if data is None else data
    if edit is not None:
        edit(hdr)
    if dtype is not None:
        hdr.set_data_dtype(dtype)
    nib.save(nib.Nifti1Image(np.asarray(array).astype(hdr.get_data_dtype()), None, header=hdr), path)


def one_problem(root: Path, split: str = "TRAINING") -> str:
    """The one line ``verify_dataset`` lists, checked to be the line training stops on."""
    _, problems = verify_dataset(root)
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line and line.startswith(f"{split}/case_1: ")
    cache = root.parent / "cache"
    with pytest.raises(IslesError) as err:
        build_slices(root, split, size=16, cache_dir=cache, progress=False)
    assert str(err.value) == line
    assert not cache.exists()  # refused before any work
    return line


def files_under(folder: Path) -> list[tuple[Path, int]]:
    return sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- the data ----------------------------------------------------------------------------------


def test_training_case_without_its_mask(tmp_path):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1, OT=None)
    line = one_problem(root)
    assert "missing modality OT" in line and "needs its expert mask" in line
    # TESTING cases carry no mask of their own: that is fine
    make_case(root / "TESTING", 1, OT=None)
    assert check_study(root / "TESTING" / "case_1") == []


@pytest.mark.parametrize(
    "zooms, sform, expected",
    [
        ((2.0, 2.0, 10.0), np.diag([-1.0, 1, 1, 1]), r"voxel size and orientation mismatch: .*CT_CBF\.\S+ is "
         r"2 x 2 x 10 mm, oriented LAS but CT is 0\.9766 x 0\.9766 x 5 mm, oriented RAS"),
        ((2.0, 2.0, 10.0), np.eye(4), r"voxel size mismatch: .*CT_CBF\.\S+ is 2 x 2 x 10 mm but CT is 0\.9766"),
        (None, np.diag([1.0, -1, 1, 1]), r"orientation mismatch: .*CT_CBF\.\S+ is oriented RPS but CT is oriented RAS"),
        (None, np.array([[1.0, 0, 0, 40], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), r"orientation mismatch: .*placed by"),
    ],
)  # fmt: skip
def test_modalities_of_one_study_share_one_grid(tmp_path, zooms, sform, expected):
    root = tmp_path / "data"
    cbf = find_case_files(make_case(root / "TRAINING", 1))["CBF"]

    def edit(hdr):
        if zooms is not None:
            hdr.set_zooms(zooms)
        hdr.set_sform(sform, code=2)

    rewrite(cbf, edit)
    line = one_problem(root)
    assert cbf.name in line
    assert re.search(expected, line), line


def test_shape_of_one_modality(tmp_path):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1, Tmax=np.ones((32, 30, 2)))
    assert "shape mismatch: SMIR.Brain.XX.O.CT_Tmax.1005.nii is (32, 30, 2) but CT is (32, 32, 2)" in one_problem(root)


def test_a_header_without_orientation_is_not_compared(tmp_path):
    """A file with neither sform nor qform says nothing about orientation: it cannot disagree."""
    root = tmp_path / "data"
    ot = find_case_files(make_case(root / "TRAINING", 1))["OT"]
    rewrite(ot, lambda hdr: hdr.set_sform(None, code=0))
    assert verify_dataset(root)[1] == []


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda h: h["srow_x"].__setitem__(0, np.nan), "non-finite (NaN or Inf) sform, qform or affine"),
        (lambda h: h["qoffset_y"].__setitem__((), np.inf), "non-finite (NaN or Inf) sform, qform or affine"),
        (lambda h: h.set_sform(np.zeros((4, 4)), code=2), "degenerate affine"),
        (lambda h: h["pixdim"].__setitem__(3, 1e30), "voxel size 0.9766 x 0.9766 x 1e+30 mm, outside the plausible"),
        (lambda h: h["pixdim"].__setitem__(1, 0.01), "voxel size 0.01 x 0.9766 x 5 mm, outside the plausible 0.1-20"),
        (lambda h: h["pixdim"].__setitem__(2, np.nan), "voxel size 0.9766 x nan x 5 mm, outside the plausible"),
    ],
)
@pytest.mark.parametrize("token", ["CT", "CBF", "OT"])
def test_impossible_geometry(tmp_path, token, edit, expected):
    root = tmp_path / "data"
    path = find_case_files(make_case(root / "TRAINING", 1))[token]
    rewrite(path, edit)
    line = one_problem(root)
    assert line.startswith(f"TRAINING/case_1: {path.name} has ") and expected in line, line


def test_impossible_geometry_never_reaches_a_prediction_or_a_volume(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1)
    rewrite(find_case_files(case)["CT"], lambda h: h["pixdim"].__setitem__(3, 1e30))
    with pytest.raises(IslesError, match=r"1e\+30 mm, outside the plausible"):
        load_study(case)  # what predict, evaluation and the baseline load through: no 5e90 mL lesion
    rewrite(
        find_case_files(case)["CT"], lambda h: (h["pixdim"].__setitem__(3, 5.0), h["srow_z"].__setitem__(2, np.nan))
    )
    with pytest.raises(IslesError, match="non-finite"):
        load_study(case, require_mask=False)  # so write_like never copies a NaN sform into a prediction


def test_a_3d_map_with_a_fourth_dimension(tmp_path):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1, MTT=np.ones((*SHAPE, 3)))
    assert "CT_MTT.1004.nii has shape (32, 32, 2, 3), expected a 3D volume" in one_problem(root)


def test_nan_frame_of_the_4d_series(tmp_path):
    root = tmp_path / "data"
    case = make_case(root / "TRAINING", 1, frames=12)
    pwi = find_case_files(case)["4DPWI"]
    series = np.asanyarray(nib.load(pwi).dataobj).astype(np.float32)
    series[3, 4, 1, ..., 7] = np.nan
    rewrite(pwi, data=series, dtype=np.float32)
    line = one_problem(root)
    assert f"{pwi.name} has 1 NaN/Inf voxels in 1 of its 12 frames (frame 7)" in line
    assert load_study(case, nan_policy="zero").mask is not None  # the caller who asked for zeros gets them


def test_4d_series_on_another_grid(tmp_path):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1, **{"4DPWI": np.zeros((32, 16, 2, 10))})
    assert "shape mismatch: SMIR.Brain.XX.O.CT_4DPWI.1000.nii is (32, 16, 2) but CT is (32, 32, 2)" in one_problem(root)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("split,case,patient_id\nTRAINING,case_1,p1\n", "columns split,case,patient_id; expected split,case,patient"),
        ("", "columns none (an empty file); expected split,case,patient"),
        ("split,case,patient\nTRAINING,case_1\n", "line 2 has no patient; expected split,case,patient"),
    ],
)
def test_patients_csv_with_other_columns(tmp_path, text, expected):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1)
    (root / "patients.csv").write_text(text)
    _, problems = verify_dataset(root)
    assert problems == [f"{root / 'patients.csv'}: {expected}"]
    with pytest.raises(IslesError) as err:
        build_slices(root, "TRAINING", size=16, cache_dir=tmp_path / "cache", progress=False)
    assert str(err.value) == problems[0] and not (tmp_path / "cache").exists()


def test_every_problem_listed_and_training_says_how_many(tmp_path):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1, OT=None)
    make_case(root / "TRAINING", 2, CBF=np.ones((32, 32, 3)))
    rewrite(find_case_files(make_case(root / "TRAINING", 3))["CBV"], lambda h: h["pixdim"].__setitem__(1, 1e30))
    _, problems = verify_dataset(root)
    assert [p.split(":")[0] for p in problems] == ["TRAINING/case_1", "TRAINING/case_2", "TRAINING/case_3"]
    with pytest.raises(
        IslesError, match=r"^TRAINING/case_1: missing modality OT .*\(and 2 more; `python data_download"
    ):
        build_slices(root, "TRAINING", size=16, cache_dir=tmp_path / "cache", progress=False)


def test_evaluation_checks_the_testing_split_too(tmp_path):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1)
    rewrite(find_case_files(make_case(root / "TESTING", 1, OT=None))["Tmax"], lambda h: h.set_zooms((1, 1, 1)))
    line = one_problem(root, "TESTING")
    assert "voxel size mismatch: SMIR.Brain.XX.O.CT_Tmax.1005.nii is 1 x 1 x 1 mm" in line


# --- the quirks that must still pass ------------------------------------------------------------


def test_the_phantom_passes(phantom_root):
    for split in ("TRAINING", "TESTING"):
        for case in discover_cases(phantom_root, split):
            assert check_study(case) == [], case


@pytest.mark.skipif(not REAL_CT.exists(), reason="../shared/real is not present")
def test_the_real_ct_header_passes_beside_maps_in_its_geometry(tmp_path):
    """Real ISLES 2018: identity sform (code 2), qform code 0, pixdim[0] = -1, spacing only in
    the zooms, NaN scl_slope; the maps written with the same quirks sit on its grid."""
    case = make_case(tmp_path / "TRAINING", 1, shape=(256, 256, 8))
    ct = find_case_files(case)["CT"]
    ct.unlink()
    shutil.copy(REAL_CT, ct.with_name(REAL_CT.name))
    assert check_study(case) == []
    study = load_study(case)
    assert study.spacing == pytest.approx((0.976562, 0.976562, 5.0003), rel=1e-6)
    assert verify_dataset(tmp_path)[1] == []


# --- commands: baseline ------------------------------------------------------------------------


def test_baseline_on_the_phantoms_testing_split(phantom_root, capsys):
    rows = classical_baseline(phantom_root, "TESTING", progress=False)
    assert [r["study"] for r in rows] == ["TESTING/case_1", "TESTING/case_2"]
    assert all(0 <= r["dice"] <= 1 and r["lesion_ml"] >= 0 for r in rows)
    assert cli(["baseline", str(phantom_root), "--split", "TESTING"]) == 0
    assert "TESTING: 2 studies" in capsys.readouterr().out


def one_error_line(capsys, code: int) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_baseline_on_testing_without_truth_says_why(tmp_path, capsys):
    root = tmp_path / "real"
    make_case(root / "TRAINING", 1)
    make_case(root / "TESTING", 1, OT=None)
    before = files_under(root)
    err = one_error_line(capsys, cli(["baseline", str(root), "--split", "TESTING", "--out", str(tmp_path / "b.json")]))
    assert "cannot score TESTING: no truth/TESTING folder" in err and "private" in err
    assert files_under(root) == before and not (tmp_path / "b.json").exists()


# --- commands: options that cannot be honoured ---------------------------------------------------


def fake_run(folder: Path, data: Path) -> Path:
    """A run folder with an untrained smoke model: enough for Predictor, no training needed."""
    config = TrainConfig(data=str(data), out=str(folder), preset="smoke")
    folder.mkdir(parents=True)
    write_json(config.to_dict(), RunFolder(folder).config)
    state = {"model": config.build_model().state_dict(), "epoch": 1, "val_dice": 0.0, "config": config.to_dict()}
    torch.save(state, RunFolder(folder).best)
    return folder


@pytest.fixture
def no_bf16(monkeypatch):
    """A machine whose device cannot autocast to bf16, not even emulated."""
    import stroke_helpers.__main__ as entry

    computes = entry.computes
    monkeypatch.setattr(
        entry, "computes", lambda device, precision: precision != "bf16" and computes(device, precision)
    )


def test_the_precision_probe():
    import stroke_helpers.__main__ as entry

    assert entry.computes(torch.device("cpu"), "bf16")  # natively or emulated, a CPU computes it


def _refusals(phantom_root: Path, tmp: Path) -> list[tuple[list[str], str]]:
    no_truth = tmp / "no_truth"
    make_case(no_truth / "TRAINING", 1)
    make_case(no_truth / "TRAINING", 2)
    no_tmax = tmp / "no_tmax"
    make_case(no_tmax / "TRAINING", 1, Tmax=None)
    make_case(no_tmax / "TRAINING", 2, Tmax=None)
    run = fake_run(tmp / "fake_run", phantom_root)
    empty = tmp / "empty"
    empty.mkdir()
    real_run = fake_run(tmp / "fake_real_run", no_truth)
    out = ["--out", str(tmp / "out")]
    train = ["train", "--data", str(phantom_root), "--preset", "smoke", *out]
    cases = [
        ([*train, "--device", "gpu"], "--device gpu: not a device name"),
        (["evaluate", "--run", str(run), "--device", "cuda:x"], "--device cuda:x: not a device name"),
        ([*train, "--precision", "bf16"], "cannot compute bf16 on this machine"),
        (["reproduce", "--preset", "smoke", "--precision", "bf16", "--data", str(tmp / "gen"), *out], "cannot compute"),
        (["evaluate", "--run", str(real_run), "--split", "test"], "cannot score split test: no truth/TESTING"),
        (["train", "--data", str(no_tmax), "--modalities", "CT,Tmax", *out], "TRAINING/case_1 and 1 more case(s)"),
        (["cascade", "--data", str(phantom_root), "--preset", "smoke", "--folds", "6", *out], "--folds 6: "),
        (["predict", "--run", str(run), "--study", str(phantom_root), *out], "not a case folder: it holds TESTING"),
        (["predict", "--run", str(run), "--study", str(phantom_root / "TESTING"), *out], "it holds case_1"),
        (["predict", "--run", str(run), "--study", str(tmp), *out], "it holds no_tmax/TRAINING"),
        (["predict", "--run", str(run), "--study", str(empty), *out], "not a case folder (no NIfTI file"),
        (["predict", "--run", str(run), "--study", str(tmp / "nowhere"), *out], "not a case folder (no such folder)"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*train, "--device", "cuda"], "--device cuda: this machine has no cuda device"))
    return cases


def test_refused_options_write_nothing(phantom_root, tmp_path, capsys, no_bf16):
    tmp = tmp_path / "work"
    tmp.mkdir()
    cases = _refusals(phantom_root, tmp)
    before = files_under(phantom_root), files_under(tmp)
    for argv, message in cases:
        err = one_error_line(capsys, cli(argv))
        assert message in err, (argv, err)
        assert (files_under(phantom_root), files_under(tmp)) == before, argv
    assert not (tmp / "out").exists() and not (tmp / "gen").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explore", "--port", "70000"], "--port: not a port number (1-65535): 70000"),
        (["explore", "--port", "0"], "--port: not a port number"),
        (["train", "--data", "d", "--out", "o", "--epochs", "-2"], "--epochs: must be at least 1"),
    ],
)
def test_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and "Traceback" not in err


# --- commands: after Ctrl-C ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["train", "--data", "d", "--out", "o"], "continue with the same command and --resume"),
        (["cascade", "--data", "d", "--out", "o", "--resume"], "continue with the same command (with --resume)"),
        (["reproduce"], "run the same reproduce command again: it skips what is finished"),
        (["evaluate", "--run", "r"], "nothing to resume: run the same command again"),
    ],
)
def test_ctrl_c_names_what_each_command_has(monkeypatch, capsys, argv, hint):
    import stroke_helpers.__main__ as entry

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "run", interrupted)
    assert cli(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"interrupted; {hint}") and "\n" not in err
    options = {a for action in _subparser(argv[0])._actions for a in action.option_strings}
    assert ("--resume" in err) == ("--resume" in options)  # a flag named is one the command has


def _subparser(command: str):
    sub = next(a for a in parser()._actions if a.dest == "command")
    return sub.choices[command]


def test_train_command_refuses_a_hostile_study_in_the_verify_line(tmp_path, capsys):
    root = tmp_path / "data"
    make_case(root / "TRAINING", 1)
    make_case(root / "TRAINING", 2, OT=None)
    line = verify_dataset(root)[1][0]
    before = files_under(tmp_path)
    err = one_error_line(capsys, cli(["train", "--data", str(root), "--preset", "smoke", "--out", str(tmp_path / "r")]))
    assert err == f"error: {line}" and files_under(tmp_path) == before


def test_more_folds_than_patients_never_make_an_empty_fold():
    from stroke_helpers.cascade import folds_by_patient

    assert sorted(map(len, folds_by_patient(["a", "b", "c"], {}, 3, 0))) == [1, 1, 1]
    with pytest.raises(ValueError, match="4 folds need at least 4 training patients; this split has 3"):
        folds_by_patient(["a", "b", "c"], {}, 4, 0)
