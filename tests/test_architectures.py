"""The architecture registry, and MONAI's AttentionUnet trained, evaluated, predicted and resumed
through the same code as the paper's model."""

import inspect
import json
import math

import nibabel as nib
import pytest
import torch
from test_train import smoke

import stroke_helpers.train as training
from stroke_helpers.__main__ import main
from stroke_helpers.architectures import ARCHITECTURES, MonaiAttentionUnet, get_architecture
from stroke_helpers.inference import evaluate, predict_study
from stroke_helpers.model import LESION_PRIOR, CrossAttentionAutoencoder, Output, count_parameters
from stroke_helpers.presets import PRESETS
from stroke_helpers.runs import (
    RunError,
    RunFolder,
    TrainConfig,
    atomic_save,
    config_from_dict,
    load_config,
    load_model,
    read_history,
    resume_state,
    write_json,
)
from stroke_helpers.train import train

MONAI = "monai-attention-unet"


def test_monai_model_at_smoke_widths():
    widths = PRESETS["smoke"].widths
    model = get_architecture(MONAI).make(5, widths, True, False)
    assert isinstance(model, MonaiAttentionUnet)
    assert count_parameters(model) == 23_721  # ours at the same widths: 24,127
    x = torch.randn(3, 5, 64, 64).contiguous(memory_format=torch.channels_last)
    out = model(x, levels=True, attention=True)
    assert isinstance(out, Output) and out.logits.shape == (3, 1, 64, 64)
    assert out.levels == [] and out.attention == {}  # one output, no similarities
    bias = model.net.model[-1].conv.bias
    assert bias.shape == (1,) and math.isclose(torch.sigmoid(bias).item(), LESION_PRIOR, rel_tol=1e-5)
    with pytest.raises(ValueError, match="not divisible by 32"):
        model(torch.randn(1, 5, 48, 48))
    cpu = PRESETS["cpu"]
    assert model.eval()(torch.randn(1, 5, 64, 64)).logits.shape == (1, 1, 64, 64)  # BatchNorm in eval, batch 1
    big = get_architecture(MONAI).make(6, cpu.widths, True, False).eval()
    assert big(torch.randn(1, 6, cpu.size, cpu.size)).logits.shape == (1, 1, cpu.size, cpu.size)


def test_registry(tmp_path, phantom_root, capsys):
    assert list(ARCHITECTURES)[0] == "cross-attention"
    with pytest.raises(
        ValueError, match=r"^unknown architecture 'unet'; choose from cross-attention, monai-attention-unet$"
    ):
        get_architecture("unet")
    with pytest.raises(ValueError, match="unknown architecture"):
        TrainConfig(data="d", out="o", architecture="unet")
    config = TrainConfig(data="d", out="o", preset="smoke")
    assert isinstance(config.build_model(), CrossAttentionAutoencoder) and config.name == "MR+ATT CT+CBV+CBF+MTT+Tmax"
    monai = TrainConfig(data="d", out="o", preset="smoke", architecture=MONAI, multilevel=False)
    assert (monai.attention, monai.multilevel) == (True, False) and isinstance(monai.build_model(), MonaiAttentionUnet)
    assert monai.name == f"{MONAI} CT+CBV+CBF+MTT+Tmax"
    for switch in ("attention", "multilevel"):
        value = switch == "multilevel"
        with pytest.raises(ValueError, match=f"the {MONAI} architecture has no {switch} switch"):
            TrainConfig(data="d", out="o", architecture=MONAI, **{switch: value})
    with pytest.raises(RunError, match="bad run configuration .unknown architecture 'unet'"):
        config_from_dict(config.to_dict() | {"architecture": "unet"}, "config.json")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(phantom_root), "--out", str(tmp_path / "r"), "--architecture", "unet"])
    assert "invalid choice: 'unet'" in capsys.readouterr().err
    args = ["--data", str(phantom_root), "--preset", "smoke", "--architecture", MONAI, "--no-progress"]
    cases = [
        (["train", *args, "--no-attention", "--out", str(tmp_path / "a")], "has no attention switch: it is always on"),
        (["cascade", *args, "--out", str(tmp_path / "c")], "the cascade needs the cross-attention architecture's"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_run_saved_before_architectures_is_cross_attention(tmp_path):
    """A ``config.json`` and a ``last.pt`` without the field load, and resume, as cross-attention."""
    run = RunFolder(tmp_path / "old")
    run.path.mkdir()
    saved = TrainConfig(data="d", out=str(run), preset="smoke").to_dict()
    del saved["architecture"]
    write_json(saved, run.config)
    model = TrainConfig(data="d", out=str(run), preset="smoke").build_model()
    optimiser = torch.optim.AdamW(model.parameters())
    history = [{"epoch": 1, "train_loss": 0.5, "val_dice": 0.1}]
    state = {"config": saved, "epoch": 1, "model": model.state_dict(), "optimizer": optimiser.state_dict()}
    atomic_save(state | {"history": history, "best_dice": 0.1}, run.last)
    config = load_config(run)
    assert config.architecture == "cross-attention" and (config.attention, config.multilevel) == (True, True)
    assert isinstance(config.build_model(), CrossAttentionAutoencoder)
    assert resume_state(config, resume=True)["epoch"] == 1
    monai = TrainConfig(data="d", out=str(run), preset="smoke", architecture=MONAI)
    with pytest.raises(
        RunError,
        match=r"cannot resume with different architecture, multilevel \(the run has \['cross-attention', True\]",
    ):
        resume_state(monai, resume=True)


def test_resuming_a_cross_attention_run_as_monai_is_refused(phantom_root, tmp_path, capsys):
    out = tmp_path / "run"
    train(smoke(phantom_root, out, epochs=1, keep_last=True))
    before = RunFolder(out).last.stat().st_mtime_ns
    argv = ["train", "--data", str(phantom_root), "--preset", "smoke", "--out", str(out), "--resume", "--no-progress"]
    assert main([*argv, "--architecture", MONAI]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot resume with different architecture" in err and "\n" not in err
    assert RunFolder(out).last.stat().st_mtime_ns == before


def _stop_before_epoch_2(monkeypatch):
    """Interrupt training as Ctrl-C would, once epoch 1 is saved."""
    real = training._train_epoch

    def epoch(*args, **kwargs):
        if inspect.signature(real).bind(*args, **kwargs).arguments["epoch"] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", epoch)


def test_monai_trains_evaluates_predicts_and_resumes(phantom_root, tmp_path, monkeypatch, capsys):
    run = RunFolder(tmp_path / "monai")
    argv = ["train", "--data", str(phantom_root), "--preset", "smoke", "--epochs", "2", "--out", str(run)]
    argv += ["--architecture", MONAI, "--no-progress", "--device", "cpu", "--keep-last"]
    _stop_before_epoch_2(monkeypatch)
    assert main(argv) == 130  # interrupted after epoch 1
    assert f"run {MONAI} CT+CBV+CBF+MTT+Tmax -> {run}" in capsys.readouterr().out
    assert [r["epoch"] for r in read_history(run)] == [1]
    saved = json.loads(run.config.read_text())
    assert saved["architecture"] == MONAI and (saved["attention"], saved["multilevel"]) == (True, False)

    result = evaluate(run, progress=False)
    assert json.loads(run.metrics().read_text())["name"] == f"{MONAI} CT+CBV+CBF+MTT+Tmax"
    assert all(0 <= r["dice"] <= 1 for r in result["studies"])
    case = phantom_root / "TESTING" / "case_1"
    mask = nib.load(predict_study(run, case, tmp_path / "mask.nii.gz", device="cpu"))
    assert mask.shape == nib.load(next(case.glob("*CT.*/*.nii*"))).shape

    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert [r["epoch"] for r in read_history(run)] == [1, 2]
    resumed, config = load_model(run, "last")
    assert isinstance(resumed, MonaiAttentionUnet) and config.architecture == MONAI
    reference = train(smoke(phantom_root, tmp_path / "clean", epochs=2, architecture=MONAI)).model
    for (k, x), y in zip(resumed.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(x, y, msg=k)


def test_the_explorer_says_why_a_monai_run_has_no_attention_maps(phantom_root, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from stroke_helpers.explorer import TABS, Explorer

    out = tmp_path / "monai"
    train(smoke(phantom_root, out, epochs=1, architecture=MONAI))
    app = Explorer(phantom_root, out)
    app.tabs.selected_index = TABS.index("Attention and Ms")
    shown = app.tabs.children[TABS.index("Attention and Ms")]
    text = shown.value if hasattr(shown, "value") else str([c.value for c in shown.children if hasattr(c, "value")])
    assert "the monai-attention-unet architecture returns none" in text and "--no-attention" not in text
