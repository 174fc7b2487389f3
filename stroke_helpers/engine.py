"""Where and how the network runs: device, precision, distributed set-up, batched forward passes.

Precision: ``"auto"`` uses bf16 autocast where the hardware has bf16 units (CUDA with bf16,
CPUs with AVX512-BF16 or AMX) and fp32 elsewhere; ``"fp32"`` and ``"bf16"`` force it. Inputs and
weights are channels_last, which was faster on every CPU measured (see ``benchmarks/``).

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) :func:`setup_distributed` joins the
process group (NCCL on CUDA, gloo on CPU) and pins each rank to its own GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the accelerator PyTorch finds (CUDA, MPS, XPU ...), else the CPU."""
    if str(name) != "auto":
        return torch.device(name)
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc if acc is not None else torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for fp32."""
    if precision == "fp32" or (precision == "auto" and not bf16_supported(device)):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype``, or a no-op context for fp32 (``dtype=None``)."""
    return torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None)


def distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``: joins the torchrun process group when there is one."""
    rank, world, local_rank = distributed()
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def forward_batches(
    model: torch.nn.Module,
    images: torch.Tensor,
    take: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """``take(model, x)`` over ``images (N, C, S, S)`` batch by batch, in eval mode without
    gradients; the results are concatenated as float32 on the CPU. What prediction and the
    cascade's synthetic map share."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad(), autocast(device, dtype):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            out.append(take(model, x).float().cpu())
    return torch.cat(out)


def predict_logits(model, images: torch.Tensor, device=None, dtype=None, batch_size: int = 16) -> torch.Tensor:
    """Full-resolution logits ``(N, S, S)`` float32 on the CPU."""
    if not len(images):
        return torch.zeros(0, *images.shape[-2:])
    return forward_batches(model, images, lambda m, x: m(x).logits[:, 0], device, dtype, batch_size)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (what a notebook cell draws from;
    training seeds its own from the run's config)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global is what np.random.* calls in a cell use)
    torch.manual_seed(seed)


def print_config() -> None:
    """Versions and hardware, MONAI-style: what to paste into a bug report or beside a result."""
    import platform
    from importlib import metadata

    from . import __version__

    print(
        f"stroke_helpers {__version__}, Python {platform.python_version()} on {platform.system()} {platform.machine()}"
    )
    for package in ("torch", "numpy", "scipy", "nibabel", "monai", "matplotlib", "ipywidgets"):
        try:
            print(f"{package:11s} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            print(f"{package:11s} not installed")
    device = resolve_device("auto")
    print(f"device      {device} ({torch.get_num_threads()} threads), bf16 units: {bf16_supported(device)}")
