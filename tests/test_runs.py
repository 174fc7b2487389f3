"""Run folders handed over by someone else: a checkpoint never runs code, a bad file is one line.

Every command that reads a run folder (``predict``, ``evaluate``, ``train --resume``, the grid's
``is_finished``) goes through :func:`stroke_helpers.runs.load_state` (``weights_only=True``).
"""

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from stroke_helpers.__main__ import main
from stroke_helpers.datasets import build_slices
from stroke_helpers.presets import PRESETS
from stroke_helpers.runs import (
    ResultsFolder,
    RunError,
    RunFolder,
    TrainConfig,
    is_finished,
    load_state,
    load_synthetic_maps,
)
from stroke_helpers.train import train


class Payload:
    """Unpickling this runs ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def finished_run(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(TrainConfig(data=str(phantom_root), out=str(out), preset="smoke", epochs=1, progress=False, keep_last=True))
    return out


@pytest.mark.parametrize("kind", ["pickled code", "zero bytes", "truncated", "text", "torch-saved code"])
@pytest.mark.parametrize("command", ["predict", "evaluate", "resume"])
def test_bad_checkpoint_is_refused_in_one_line(finished_run, phantom_root, tmp_path, capsys, kind, command):
    run = tmp_path / "shared_run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "code_ran"
    target = run / ("last.pt" if command == "resume" else "best.pt")
    if kind == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif kind == "torch-saved code":
        torch.save({"model": Payload(marker)}, target)
    elif kind == "pickled code":
        target.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=2))
    else:
        target.write_bytes({"zero bytes": b"", "text": b"not a checkpoint at all\n"}[kind])
    before = sorted(p.name for p in run.rglob("*"))
    argv = {
        "predict": ["predict", "--run", str(run), "--study", str(phantom_root / "TESTING" / "case_1")]
        + ["--out", str(tmp_path / "mask.nii.gz"), "--device", "cpu"],
        "evaluate": ["evaluate", "--run", str(run), "--device", "cpu"],
        "resume": ["train", "--data", str(phantom_root), "--preset", "smoke", "--epochs", "2"]
        + ["--out", str(run), "--resume", "--no-progress"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {target}: ") and "\n" not in err, err
    assert ("refused" in err) if "code" in kind else ("truncated or corrupt" in err), err
    assert not marker.exists()  # nothing executed
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written
    assert not (tmp_path / "mask.nii.gz").exists()


def test_is_finished_and_synthetic_maps_never_run_code(finished_run, phantom_root, tmp_path):
    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    torch.save({"epoch": 9, "config": Payload(marker)}, run / "last.pt")
    with pytest.raises(RunError, match="last.pt: refused: not a plain checkpoint"):
        is_finished(run)
    maps = tmp_path / "synthetic_maps.pt"
    torch.save({"ms": Payload(marker)}, maps)
    arrays = build_slices(phantom_root, "TRAINING", PRESETS["smoke"].size, progress=False)
    with pytest.raises(RunError, match="synthetic_maps.pt: refused: not a plain synthetic-map file"):
        load_synthetic_maps(maps, arrays)
    torch.save({"ms": torch.zeros(3, 1, 8, 8), "studies": ["x"]}, maps)
    with pytest.raises(RunError, match="computed for other slices"):
        load_synthetic_maps(maps, arrays)
    assert not marker.exists()


def test_own_checkpoints_load_as_plain_state(finished_run):
    for name in ("best.pt", "last.pt"):
        state = load_state(finished_run / name)
        assert state["epoch"] == 1 and isinstance(state["model"], dict) and isinstance(state["config"], dict)


def test_failed_train_leaves_no_run_folder(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "TRAINING" / "case_1").mkdir(parents=True)  # a case folder with no files
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--preset", "smoke", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "TRAINING/case_1" in err and "no CT file" in err and "\n" not in err
    assert not out.exists()


def test_predict_out_without_extension(finished_run, phantom_root, tmp_path, capsys):
    study = str(phantom_root / "TESTING" / "case_1")
    argv = ["predict", "--run", str(finished_run), "--study", study, "--out", str(tmp_path / "mask"), "--device", "cpu"]
    assert main(argv) == 0
    written = tmp_path / "mask.nii.gz"
    assert capsys.readouterr().out.strip() == str(written) and written.exists()
    before = written.read_bytes()
    assert main(argv) == 2  # the resolved name exists: not overwritten without --force
    assert "mask.nii.gz exists" in capsys.readouterr().err and written.read_bytes() == before
    assert main([*argv, "--force"]) == 0


def test_run_folder_layout(finished_run, tmp_path):
    """:class:`RunFolder` names every file of the layout the module documents, and nothing is read."""
    run = RunFolder(tmp_path / "run")
    expected = {
        run.config: "config.json",
        run.split: "split.json",
        run.history: "history.csv",
        run.last: "last.pt",
        run.best: "best.pt",
        run.metrics(): "metrics.json",
        run.metrics("test"): "metrics_test.json",
        run.cascade: "cascade.json",
        run.stage1.best: "stage1/best.pt",
        run.stage2.config: "stage2/config.json",
        run.fold(3).history: "fold_3/history.csv",
        run.synthetic_maps: "synthetic_maps.pt",
        run.synthetic_map_nifti("TRAINING/case_2"): "synthetic_maps/TRAINING/case_2/Ms.nii.gz",
    }
    for path, relative in expected.items():
        assert path == tmp_path / "run" / relative
    assert os.fspath(run) == str(run) == str(tmp_path / "run") and not run.exists() and run.records() == []
    with pytest.raises(ValueError, match="best or last"):
        run.checkpoint("first")
    trained = RunFolder(finished_run)  # what train wrote, found through the accessor
    assert trained.exists() and not trained.is_cascade and trained.weights() == [trained.best]
    assert [p.name for p in trained.records()] == ["config.json", "split.json", "history.csv"]
    trained.metrics("test").write_text("{}")  # scored: a copy leaves the scores behind
    copy = trained.copy(tmp_path / "copy")
    trained.metrics("test").unlink()
    assert copy.last.is_file() and copy.config.is_file() and not copy.metrics("test").exists()


def test_results_folder_walks_runs_cascades_and_their_stages(tmp_path):
    results = ResultsFolder(tmp_path)
    assert results.run("MR_All") == RunFolder(tmp_path / "runs" / "MR_All")
    assert (results.report, results.figures, results.notebooks, results.timing) == tuple(
        tmp_path / p for p in ("report.md", "figures", "notebooks", "timing.json")
    )
    cascade = results.run("cascade_oof")
    for run in (results.run("MR_All"), cascade.stage1, cascade.fold(0), cascade.stage2):
        run.path.mkdir(parents=True)
        run.config.write_text("{}")
    assert results.run("MR_All").exists() and not cascade.exists()  # a cascade without cascade.json is unfinished
    cascade.cascade.write_text("{}")
    (cascade.synthetic_map_nifti("TRAINING/case_1")).parent.mkdir(parents=True)
    names = [results.name(r) for r in results.runs()]
    assert names == ["MR_All", "cascade_oof", "cascade_oof/fold_0", "cascade_oof/stage1", "cascade_oof/stage2"]
    assert cascade.is_cascade and cascade.weights() == [cascade.stage1.best, cascade.stage2.best]
    # a threshold method's scores: a run's score files, under thresholds/, never listed as a run
    tmax = results.threshold("tmax_above_6s")
    assert (tmax.metrics("val"), tmax.metrics("test")) == tuple(
        tmp_path / "thresholds" / "tmax_above_6s" / f for f in ("metrics.json", "metrics_test.json")
    )
    assert results.thresholds() == []
    tmax.path.mkdir(parents=True)
    tmax.metrics("test").write_text("{}")
    results.threshold("unscored").path.mkdir()
    assert results.thresholds() == [tmax] and tmax.records() == [tmax.metrics("test")] and not tmax.exists()
    assert [results.name(r) for r in results.runs()] == names


def test_the_shipped_checkpoint_is_a_results_folder():
    """The committed checkpoint keeps the layout: its runs, weights and records where the accessor says."""
    bundle = ResultsFolder(Path(__file__).resolve().parents[1] / "checkpoints" / "cpu")
    if not bundle.path.is_dir():
        pytest.skip("no committed checkpoint in this checkout")
    names = {bundle.name(r) for r in bundle.runs()}
    assert {"MR+ATT_All", "cascade", "cascade/stage1", "cascade/stage2", "cascade_oof/fold_0"} <= names
    for name in ("MR+ATT_All", "cascade"):
        assert all(p.is_file() for p in bundle.run(name).weights())
    assert not any(p.is_file() for p in bundle.run("MR_All").weights())
    assert bundle.run("MR_All").metrics().is_file() and bundle.run("cascade").cascade.is_file()
