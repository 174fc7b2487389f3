"""Trainer, CLI, evaluation, prediction, cascade and distributed training on the phantom."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from stroke_helpers.__main__ import main
from stroke_helpers.cascade import run_cascade
from stroke_helpers.datasets import build_slices
from stroke_helpers.engine import autocast_dtype, choose_precision
from stroke_helpers.inference import Predictor, evaluate, predict_study
from stroke_helpers.presets import PRESETS, deviations
from stroke_helpers.runs import RunError, TrainConfig, is_finished, load_model, load_synthetic_maps, read_history
from stroke_helpers.train import Validation, _datasets, train


def smoke(data, out, **kw):
    """A smoke-preset run on the CPU: the tests compare weights bitwise, which only the CPU
    promises without --deterministic (whatever device "auto" finds)."""
    return TrainConfig(data=str(data), out=str(out), preset="smoke", progress=False, **{"device": "cpu", **kw})


@pytest.fixture(scope="module")
def smoke_run(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mr_att"
    result = train(smoke(phantom_root, out, epochs=2))
    return out, result


def test_run_folder_contents(smoke_run):
    """A finished run keeps its best weights (the model only), its curve and its settings;
    last.pt (model and optimiser) is dropped, and the run is known as finished without it."""
    out, result = smoke_run
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.csv", "split.json"]
    history = read_history(out)
    assert [r["epoch"] for r in history] == [1, 2] and all(0 <= r["val_dice"] <= 1 for r in history)
    split = json.loads((out / "split.json").read_text())
    assert split["val"] and not set(split["val"]) & set(split["train"])
    assert is_finished(out) and not is_finished(out, epochs=3)
    assert set(torch.load(out / "best.pt", weights_only=True)) == {"model", "epoch", "val_dice", "config"}
    model, config = load_model(out)
    assert config.modalities == ("CT", "CBV", "CBF", "MTT", "Tmax")
    saved = json.loads((out / "config.json").read_text())
    assert (saved["world_size"], saved["global_batch"], saved["lr_policy"]) == (1, 4, "keep")


def test_nothing_overwritten_without_resume(smoke_run, phantom_root):
    out, _ = smoke_run
    before = (out / "best.pt").stat().st_mtime_ns
    with pytest.raises(RuntimeError, match="holds a run without last.pt .*a finished run: last.pt is removed"):
        train(smoke(phantom_root, out, epochs=2))
    with pytest.raises(RuntimeError, match="cannot be resumed; pass --force"):  # nothing to extend it from
        train(smoke(phantom_root, out, epochs=3), resume=True)
    assert (out / "best.pt").stat().st_mtime_ns == before


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
        "--device",
        "cpu",
        "--checkpoint-every",
        "2",  # last.pt after epochs 1, 3 and 4: a kill after epoch 2 resumes from epoch 1
        "--keep-last",
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
    resumed, _ = load_model(killed, "last")  # kept: --keep-last
    reference = train(smoke(phantom_root, clean, epochs=4)).model
    for (k, x), y in zip(resumed.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(x, y), k  # bitwise on the CPU
    assert not (clean / "last.pt").exists()
    with pytest.raises(RuntimeError, match="cannot resume with different modalities"):
        train(smoke(phantom_root, killed, epochs=5, modalities="Tmax"), resume=True)


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
    with pytest.raises(RunError, match="a cascade predicts with its stages' best epochs"):
        Predictor(run, device="cpu", checkpoint="last")  # not silently the best epochs
    with pytest.raises(ValueError, match="checkpoint must be best or last"):
        Predictor(run, device="cpu", checkpoint="bogus")


def test_precision_policy_and_deviations():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert deviations(PRESETS["paper"]) == []
    assert any(d.startswith("widths") for d in deviations(PRESETS["cpu"]))
    assert deviations(PRESETS["paper"], epochs=3) == ["epochs: 600 -> 3"]


def _ddp_worker(rank, world, port, data, out, weights):
    import contextlib

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    config = TrainConfig(
        data=data, out=f"{out}/rank{rank}", preset="smoke", epochs=2, device="cpu", progress=False, keep_last=True
    )
    with open(f"{weights}/rank{rank}.txt", "w") as log, contextlib.redirect_stdout(log):
        result = train(config)
    torch.save(result.model.state_dict(), f"{weights}/rank{rank}.pt")
    (Path(weights) / f"rank{rank}.json").write_text(json.dumps(result.history))
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
    # only rank 0 writes: its run folder, with the distributed settings; nothing of rank 1
    run = tmp_path / "rank0"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "history.csv", "last.pt", "split.json"]
    assert not (tmp_path / "rank1").exists()
    saved = json.loads((run / "config.json").read_text())
    assert (saved["world_size"], saved["global_batch"], saved["lr_policy"]) == (2, 8, "keep")
    log0, log1 = ((tmp_path / "w" / f"rank{r}.txt").read_text() for r in (0, 1))
    assert "world size 1 -> 2 (global batch 4 per rank x 2 = 8; lr policy keep" in log0 and log1 == ""
    # validation is sharded over the ranks and its counts summed: both ranks get the value one
    # process gets from the whole validation set with the same weights
    h0, h1 = (json.loads((tmp_path / "w" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert [r["val_dice"] for r in h0] == [r["val_dice"] for r in h1]
    assert [r["train_loss"] for r in h0] == [r["train_loss"] for r in h1]  # the mean over both ranks
    model, config = load_model(run, "last")
    _, val_set, *_ = _datasets(config)
    precision = choose_precision(torch.device("cpu"), config.precision)
    assert Validation(val_set, torch.device("cpu")).dice(model, precision.dtype) == pytest.approx(h0[-1]["val_dice"])
    # resuming with another world size is refused, in one line
    with pytest.raises(RuntimeError, match=r"cannot resume with different world_size \(the run has \[2\]\)"):
        train(smoke(phantom_root, run, epochs=3), resume=True)


def _grid_worker(rank, world, port, data, results, log):
    import stroke_helpers.files as files
    from stroke_helpers.grid import Grid
    from stroke_helpers.runs import RunFolder

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    writes = []
    if rank:  # record every write rank 1 attempts: files.replacing is where every file is written
        real_replacing, real_lock, real_copy = files.replacing, files.lock, RunFolder.copy
        files.replacing = lambda path, *a, **k: (writes.append(str(path)), real_replacing(path, *a, **k))[1]
        files.lock = lambda folder, *a, **k: (writes.append(f"lock {folder}"), real_lock(folder, *a, **k))[1]
        RunFolder.copy = lambda self, *a, **k: (writes.append(f"copy {self}"), real_copy(self, *a, **k))[1]
    Grid(Path(data), Path(results), "smoke", progress=False, options={"device": "cpu"}).cascade("cascade")
    Path(f"{log}/writes{rank}.json").write_text(json.dumps(writes))
    torch.distributed.destroy_process_group()


def test_distributed_grid_and_cascade_write_on_rank_0_only(phantom_root, tmp_path):
    """Two gloo processes run a grid step (the All run, its scores, the cascade on top): both
    train every model, rank 0 alone writes (runs, scores, the stage-1 copy, the maps)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results, log = tmp_path / "results", tmp_path / "log"
    log.mkdir()
    mp.spawn(_grid_worker, args=(2, port, str(phantom_root), str(results), str(log)), nprocs=2)
    assert json.loads((log / "writes1.json").read_text()) == []
    cascade = results / "runs" / "cascade"
    assert (cascade / "cascade.json").is_file() and (cascade / "metrics.json").is_file()
    assert (cascade / "stage2" / "best.pt").is_file() and (cascade / "synthetic_maps.pt").is_file()
    assert (results / "runs" / "MR+ATT_All" / "metrics.json").is_file()
    assert json.loads((cascade / "stage2" / "config.json").read_text())["world_size"] == 2


def test_lr_schedule_warms_up_then_decays_to_zero():
    from stroke_helpers.train import lr_factor

    total, warmup = 100, 10
    f = [lr_factor(s, total, warmup) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[warmup - 1] == 1.0 and f[warmup] == 1.0
    assert all(a <= b for a, b in zip(f[:warmup], f[1:warmup]))  # rising
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :]))  # then falling
    assert f[-1] < 0.001 and lr_factor(total, total, warmup) == 0.0
