"""Run folders handed over by someone else: a checkpoint never runs code, a bad file is one line.

Every command that reads a run folder (``predict``, ``evaluate``, ``train --resume``, the grid's
``is_finished``) goes through :func:`stroke_helpers.runs.load_state` (``weights_only=True``).
"""

import os
import pickle
import shutil

import pytest
import torch

from stroke_helpers.__main__ import main
from stroke_helpers.datasets import build_slices
from stroke_helpers.presets import PRESETS
from stroke_helpers.runs import RunError, TrainConfig, is_finished, load_state, load_synthetic_maps
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
    train(TrainConfig(data=str(phantom_root), out=str(out), preset="smoke", epochs=1, progress=False))
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
    assert err.startswith("error: TRAINING/case_1: missing modality") and "\n" not in err
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
