"""Device bugs caught on a CPU: the hot loop on the meta device, host syncs, the precision policy.

**The meta device as a GPU proxy.** A meta tensor has a shape, a dtype and a device but no
data. A training step run on it (model, batch and augmentation on ``torch.device("meta")``)
fails on any tensor made without the batch's device (mixing a CPU tensor with a meta one is
an error, as mixing it with a CUDA one is) and on any read of a device value by the host:
``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``nonzero`` and other
data-dependent shapes all raise on meta, exactly where CUDA would make the host wait. A
:class:`~torch.overrides.TorchFunctionMode` records those calls on device tensors, so a
failure names them; an epoch of the loop then shows its only host reads are the loss reads of
``_read_losses``, once every ``CHECK_EVERY`` steps.
"""

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import stroke_helpers.train as training
from stroke_helpers import engine
from stroke_helpers.augment import PaperAugmentation
from stroke_helpers.datasets import SliceArrays, SliceDataset
from stroke_helpers.model import bilinear_matmul
from stroke_helpers.runs import TrainConfig

META = torch.device("meta")
#: Tensor methods that read a device value on the host (a sync on CUDA).
HOST_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero", "unique"}


class HostReads(TorchFunctionMode):
    """Records every host read of a tensor on ``device``, with the function it came from,
    unless it happens inside ``allowed``."""

    def __init__(self, device: torch.device, allowed: str = "_read_losses"):
        super().__init__()
        self.device, self.allowed, self.reads = device, allowed, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name in HOST_READS and tensor is not None and tensor.device == self.device:
            frames, frame = [], sys._getframe(1)
            while frame is not None:
                frames.append(frame.f_code.co_name)
                frame = frame.f_back
            if self.allowed not in frames:
                self.reads.append(f"{name} in {frames[1] if len(frames) > 1 else '?'}")
        return func(*args, **(kwargs or {}))


def _slices(n: int, size: int, channels: int = 5) -> SliceArrays:
    g = torch.Generator().manual_seed(0)
    return SliceArrays(
        images=torch.rand(n, channels, size, size, generator=g),
        masks=(torch.rand(n, size, size, generator=g) > 0.9).to(torch.uint8),
        brains=torch.ones(n, size, size, dtype=torch.uint8),
        study_index=np.arange(n) // 3,
        z=np.arange(n) % 3,
        studies=[f"TRAINING/case_{i + 1}" for i in range(math.ceil(n / 3))],
        patients=[None] * math.ceil(n / 3),
        shapes=[(size, size, 3)] * math.ceil(n / 3),
        spacings=[(1.0, 1.0, 5.0)] * math.ceil(n / 3),
    )


def _paper_on_meta():
    config = TrainConfig(data="d", out="o", preset="paper", device="meta", progress=False)
    with META:
        model = config.build_model()
    model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.settings.weight_decay)
    return config, model, optimiser


def test_a_paper_training_step_runs_on_the_meta_device():
    """Model, batch and augmentation on meta at the paper's size: every tensor of the step is
    made on the batch's device, and nothing reads a device value."""
    config, model, optimiser = _paper_on_meta()
    size, batch = config.settings.size, config.settings.batch_size
    slices = training.DeviceSlices(SliceDataset(_slices(10, size), [0, 1, 2, 3, 4]), META)
    assert slices.images.device == META and slices.masks.device == META
    x, y = next(slices.batches(range(10), batch))
    assert x.shape == (batch, 5, size, size) and x.device == META
    augment = PaperAugmentation(0.5, seed=0)
    with HostReads(META) as reads:
        loss = training.train_step(model, x, y, augment, optimiser, None, True, None)
    assert loss.device == META and loss.shape == () and not loss.requires_grad
    assert reads.reads == []
    assert all(p.grad is None or p.grad.device == META for p in model.parameters())


def test_an_epoch_reads_the_losses_only_every_check_every_steps(monkeypatch):
    """An epoch of the loop on meta: the host reads device values only in ``_read_losses``,
    once every ``CHECK_EVERY`` steps and once at the end (``_read_losses`` is faked here: a
    meta tensor has no value to read)."""
    config = TrainConfig(data="d", out="o", preset="smoke", device="meta", progress=False)
    with META:
        model = config.build_model()
    model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr)
    slices = training.DeviceSlices(SliceDataset(_slices(28, config.settings.size), [0, 1, 2, 3, 4]), META)
    calls = []

    def read_losses(pending, config, label, done):
        calls.append(len(pending))
        return [0.5] * len(pending)

    monkeypatch.setattr(training, "CHECK_EVERY", 3)
    monkeypatch.setattr(training, "_read_losses", read_losses)
    n_batches = math.ceil(28 / config.settings.batch_size)  # 7 batches of 4
    with HostReads(META) as reads:
        losses = training._train_epoch(
            model,
            slices.batches(list(range(28)), config.settings.batch_size),
            n_batches,
            PaperAugmentation(0.5),
            optimiser,
            None,
            config,
            0,
            None,
            show=False,
        )
    assert reads.reads == [] and calls == [3, 3, 1] and len(losses) == n_batches


def test_a_nan_loss_stops_the_run_in_one_line(monkeypatch):
    config = TrainConfig(data="d", out="runs/x", preset="smoke", device="cpu", progress=False)
    values = [torch.tensor(0.5), torch.tensor(float("nan")), torch.tensor(0.4)]
    with pytest.raises(RuntimeError, match=r"^runs/x: the loss became nan in epoch 3/12 \(step 5\); try a lower"):
        training._read_losses(values, config, "epoch 3/12", 3)


def test_device_slices_are_the_datasets_items():
    arrays = _slices(9, 32)
    extra = torch.rand(9, 1, 32, 32)
    dataset = SliceDataset(arrays, [4, 0], studies=[0, 2], extra=extra)
    slices = training.DeviceSlices(dataset, torch.device("cpu"))
    order = [4, 0, 5, 2]
    x, y = next(slices.batches(order, 4))
    assert torch.equal(x, torch.stack([dataset[i]["image"] for i in order]))
    assert torch.equal(y, torch.stack([dataset[i]["mask"] for i in order]))


def test_the_augmentation_draws_on_the_cpu_and_computes_on_the_batchs_device():
    """The same seed gives the same draws whatever the device (on meta, the shapes)."""
    x, y = torch.rand(4, 3, 64, 64), (torch.rand(4, 1, 64, 64) > 0.8).float()
    a, b = PaperAugmentation(1.0, seed=5), PaperAugmentation(1.0, seed=5)
    a(x, y)
    b(x.to(META), y.to(META))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    out, mask = a(x, y)
    assert out.shape == x.shape and mask.shape == y.shape


@pytest.fixture
def cuda_capability(monkeypatch):
    """A fake CUDA device of a chosen compute capability (no GPU needed)."""

    def set_capability(major: int, minor: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.version, "hip", None)
        return torch.device("cuda")

    return set_capability


def test_precision_on_a_pre_ampere_gpu_is_fp16_with_a_gradient_scaler(cuda_capability):
    t4 = cuda_capability(7, 5)
    choice = engine.choose_precision(t4, "auto")
    assert choice.name == "fp16" and choice.dtype is torch.float16 and choice.scaler
    assert str(choice).startswith("precision fp16 (CUDA capability 7.5 has no bf16 units")
    assert engine.autocast_dtype(t4) is torch.float16 and not engine.bf16_supported(t4)
    forced = engine.choose_precision(t4, "bf16")
    assert forced.dtype is torch.bfloat16 and "emulated" in forced.reason
    assert engine.choose_precision(t4, "fp32").dtype is None


def test_precision_on_ampere_and_later_is_bf16(cuda_capability):
    h100 = cuda_capability(9, 0)
    assert str(engine.choose_precision(h100)) == "precision bf16 (CUDA capability 9.0 computes bf16 natively)"
    assert not engine.choose_precision(h100).scaler
    assert engine.choose_precision(cuda_capability(8, 0)).name == "bf16"
    assert engine.choose_precision(cuda_capability(6, 1)).name == "fp32"  # no tensor cores


def test_precision_on_cpus(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine.platform, "machine", lambda: "x86_64")
    for amx, avx, name, said in [
        (False, False, "fp32", "neither AVX512-BF16 nor AMX"),
        (False, True, "bf16", "AVX512-BF16"),
        (True, False, "bf16", "AMX"),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx: avx)
        choice = engine.choose_precision(cpu)
        assert choice.name == name and said in choice.reason
    assert engine.choose_precision(cpu, "fp16").scaler
    assert isinstance(engine.grad_scaler(cpu, engine.choose_precision(cpu, "fp16")), torch.amp.GradScaler)
    assert engine.grad_scaler(cpu, engine.choose_precision(cpu, "fp32")) is None
    assert engine.choose_precision(META).name == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp16, fp32"):
        engine.choose_precision(cpu, "fp8")


def test_deterministic_upsampling_is_the_same_bilinear_map():
    """What the model runs on CUDA under --deterministic: values and gradients as F.interpolate's."""
    x = torch.randn(2, 3, 7, 5, requires_grad=True)
    a = bilinear_matmul(x, (14, 10))
    b = F.interpolate(x, size=(14, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(a, b)
    (ga,) = torch.autograd.grad(a.square().sum(), x)
    (gb,) = torch.autograd.grad(b.square().sum(), x)
    torch.testing.assert_close(ga, gb)


def test_cpu_determinism_note_and_the_tf32_policy_leave_a_cpu_alone():
    cpu = torch.device("cpu")
    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert engine.configure_determinism(cpu, False) == "bitwise reproducible (cpu)"
    finally:
        torch.use_deterministic_algorithms(before)
    assert engine.apply_tf32_policy(cpu, engine.choose_precision(cpu, "fp32")) is None


def test_device_name_is_the_cpu_model_or_the_card():
    """One name for the machine everywhere (timing.json, the benchmarks): the CPU's model on Linux."""
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    name = engine.device_name(torch.device("cpu"))
    assert name and (name == models[0] if models else True)
    assert engine.device_name(torch.device("meta")) == "meta"
