"""Trainer, CLI, evaluation, prediction, cascade and distributed training on the phantom."""

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from stroke_helpers.__main__ import main
from stroke_helpers.cascade import run_cascade
from stroke_helpers.datasets import build_slices
from stroke_helpers.engine import autocast_dtype
from stroke_helpers.inference import Predictor, evaluate, predict_study
from stroke_helpers.presets import PRESETS, deviations
from stroke_helpers.runs import TrainConfig, is_finished, load_model, load_synthetic_maps, read_history
from stroke_helpers.train import train


def smoke(data, out, **kw):
    return TrainConfig(data=str(data), out=str(out), preset="smoke", progress=False, **kw)


@pytest.fixture(scope="module")
def smoke_run(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mr_att"
    result = train(smoke(phantom_root, out, epochs=2))
    return out, result


def test_run_folder_contents(smoke_run):
    out, result = smoke_run
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.csv", "last.pt", "split.json"]
    history = read_history(out)
    assert [r["epoch"] for r in history] == [1, 2] and all(0 <= r["val_dice"] <= 1 for r in history)
    split = json.loads((out / "split.json").read_text())
    assert split["val"] and not set(split["val"]) & set(split["train"])
    assert is_finished(out) and not is_finished(out, epochs=3)
    model, config = load_model(out, "last")
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    assert config.modalities == ("CT", "CBV", "CBF", "MTT", "Tmax")


def test_nothing_overwritten_without_resume(smoke_run, phantom_root):
    out, _ = smoke_run
    before = (out / "last.pt").stat().st_mtime_ns
    with pytest.raises(RuntimeError, match="already holds a run; pass --resume"):
        train(smoke(phantom_root, out, epochs=2))
    with pytest.raises(RuntimeError, match="cannot resume with different modalities"):
        train(smoke(phantom_root, out, epochs=3, modalities="Tmax"), resume=True)
    assert (out / "last.pt").stat().st_mtime_ns == before


def test_training_is_deterministic_and_learns(phantom_root, tmp_path):
    a = train(smoke(phantom_root, tmp_path / "a", epochs=2, modalities="Tmax,CBF"))
    b = train(smoke(phantom_root, tmp_path / "b", epochs=2, modalities="CBF,Tmax"))  # order does not matter
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]


def test_resume_after_sigkill_matches_an_uninterrupted_run(phantom_root, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    argv = [
        "train",
        "--data",
        str(phantom_root),
        "--preset",
        "smoke",
        "--epochs",
        "4",
        "--out",
        str(killed),
        "--no-progress",
    ]
    cmd = [sys.executable, "-m", "stroke_helpers", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "history.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 2, or later
    proc.wait()
    done = len(read_history(killed))
    assert 1 <= done <= 4
    assert main([*argv, "--resume"]) == 0
    assert [r["epoch"] for r in read_history(killed)] == [1, 2, 3, 4]
    resumed, _ = load_model(killed, "last")
    reference = train(smoke(phantom_root, clean, epochs=4)).model
    for (k, x), y in zip(resumed.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(x, y, msg=k)


def test_cli_errors_are_one_line(phantom_root, tmp_path, capsys):
    cases = [
        (["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")], "not an ISLES-layout dataset"),
        (
            ["train", "--data", str(phantom_root), "--modalities", "CT,ADC", "--out", str(tmp_path / "r")],
            "unknown modality ADC",
        ),
        (["evaluate", "--run", str(tmp_path)], "no best.pt checkpoint"),
        (
            [
                "predict",
                "--run",
                str(tmp_path / "nope"),
                "--study",
                str(phantom_root),
                "--out",
                str(tmp_path / "m.nii.gz"),
            ],
            "no such run folder",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err


def test_evaluate_writes_metrics(smoke_run):
    out, _ = smoke_run
    result = evaluate(out, progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert [r["study"] for r in saved["studies"]] == split["val"]
    for row in saved["studies"]:
        assert 0 <= row["dice"] <= 1 and row["avd"] == pytest.approx(
            abs(row["lesion_ml"] - row["predicted_ml"]), abs=1e-6
        )
    assert set(saved["summary"]) == {"dice", "precision", "recall", "hd95", "avd"}
    assert result["summary"]["dice"]["n"] == len(split["val"])


def test_predict_writes_the_studys_geometry(smoke_run, phantom_root, tmp_path):
    out, _ = smoke_run
    case = phantom_root / "TESTING" / "case_1"
    ct = nib.load(next(case.glob("*CT.*/*.nii*")))
    mask = nib.load(predict_study(out, case, tmp_path / "mask.nii.gz", device="cpu"))
    probs = nib.load(predict_study(out, case, tmp_path / "p.nii.gz", probabilities=True, device="cpu"))
    assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine) and mask.get_data_dtype() == np.uint8
    p = probs.get_fdata()
    assert p.min() >= 0 and p.max() <= 1
    assert np.array_equal(np.asarray(mask.dataobj), (p > 0.5).astype(np.uint8))
    with pytest.raises(FileExistsError):
        predict_study(out, case, tmp_path / "mask.nii.gz")


def test_cascade_out_of_fold(phantom_root, tmp_path):
    run = run_cascade(smoke(phantom_root, tmp_path / "cascade", epochs=1), folds=2)
    info = json.loads((run / "cascade.json").read_text())
    assert info["mode"] == "out-of-fold" and info["scale"] > 0
    arrays = build_slices(phantom_root, "TRAINING", PRESETS["smoke"].size, progress=False)
    ms = load_synthetic_maps(run / "synthetic_maps.pt", arrays)
    assert ms.shape[1] == 1 and ms.min() >= 0 and ms.max() <= 1.5
    predictor = Predictor(run, device="cpu")
    assert predictor.model.in_channels == 6  # [I; Mp; Ms]
    # validation slices get the full stage-1 model's map; training slices their fold's
    in_sample = predictor.synthetic_map(arrays.images)
    val = np.isin(np.array(arrays.studies)[arrays.study_index], predictor.split["val"])
    torch.testing.assert_close(in_sample[val], ms[val], atol=2e-3, rtol=1e-2)  # float16 on disk
    assert not torch.allclose(in_sample[~val], ms[~val], atol=1e-2)
    name = arrays.studies[0]
    nifti = nib.load(run / "synthetic_maps" / name / "Ms.nii.gz")
    assert nifti.shape == nib.load(next((phantom_root / name).glob("*CT.*/*.nii*"))).shape
    result = evaluate(run, progress=False)
    assert result["name"].startswith("MR+ATT") and len(result["studies"]) == len(predictor.split["val"])


def test_precision_policy_and_deviations():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert deviations(PRESETS["paper"]) == []
    assert any(d.startswith("widths") for d in deviations(PRESETS["cpu"]))
    assert deviations(PRESETS["paper"], epochs=3) == ["epochs: 600 -> 3"]


def _ddp_worker(rank, world, port, data, out, weights):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    result = train(TrainConfig(data=data, out=f"{out}/rank{rank}", preset="smoke", device="cpu", progress=False))
    torch.save(result.model.state_dict(), f"{weights}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_distributed_two_cpu_processes(phantom_root, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "w").mkdir()
    # each rank is given its own --out: only rank 0's may exist afterwards
    mp.spawn(_ddp_worker, args=(2, port, str(phantom_root), str(tmp_path), str(tmp_path / "w")), nprocs=2)
    w0, w1 = (torch.load(tmp_path / "w" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert (tmp_path / "rank0" / "last.pt").exists()
    assert not (tmp_path / "rank1").exists()


def test_lr_schedule_warms_up_then_decays_to_zero():
    from stroke_helpers.train import lr_factor

    total, warmup = 100, 10
    f = [lr_factor(s, total, warmup) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[warmup - 1] == 1.0 and f[warmup] == 1.0
    assert all(a <= b for a, b in zip(f[:warmup], f[1:warmup]))  # rising
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :]))  # then falling
    assert f[-1] < 0.001 and lr_factor(total, total, warmup) == 0.0
