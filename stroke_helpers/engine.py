"""Where and how the network runs: device, precision, TF32, determinism, distributed set-up,
batched forward passes. The one place each of these policies is decided (the CLI's option
checks and every command call these functions by name).

**Precision** (:func:`choose_precision`; a run prints the choice and its reason when it starts):

- ``auto``: bf16 autocast where the hardware computes bf16 natively: CUDA GPUs of compute
  capability 8.0 or newer (A100, L4, H100, H200 ...) and CPUs with AVX512-BF16 or AMX; fp16
  autocast with a gradient scaler (``torch.amp.GradScaler``) on older CUDA GPUs with tensor
  cores (capability 7.x: V100, T4), which compute fp16 but not bf16; fp32 everywhere else
  (a CPU without those units, MPS, a GPU older than 7.0).
- ``bf16``, ``fp16``, ``fp32``: as asked (bf16 without bf16 units is emulated, slowly; fp16
  always trains with the gradient scaler, whose state is saved with the run).

**TF32** (:data:`TF32`, set by :func:`apply_tf32_policy` and nowhere else): fp32 runs on CUDA
use the TF32 tensor cores of capability >= 8.0 GPUs for convolutions and matmuls (fp32 range,
10-bit mantissa products, fp32 accumulation). PyTorch's default already does so for cuDNN
convolutions; the policy extends it to matmuls and states it. bf16 and fp16 runs and CPUs are
untouched.

**Determinism** (:func:`configure_determinism`): CPU runs are bitwise reproducible (a seed
gives the same weights). On CUDA ``cudnn.benchmark`` picks the fastest kernels per shape,
which is not bitwise reproducible, unless ``deterministic``: then
``torch.use_deterministic_algorithms(True, warn_only=True)``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
(read when cuBLAS starts: set before the run's first matmul), ``cudnn.deterministic`` and no
autotuning. The backward of bilinear upsampling has no deterministic CUDA kernel, so the
model's upsampling then runs as two matmuls with the same weights
(:func:`stroke_helpers.model.upsample`); any other operation without a deterministic kernel
warns, naming itself, instead of stopping a long run. All-reductions across GPUs (DDP) are
reproducible for the same world size and topology only.

Inputs and weights are channels_last, which was faster on every CPU measured (see ``benchmarks/``).

**Distributed**: under ``torchrun`` (``WORLD_SIZE > 1``) :func:`setup_distributed` joins the
process group (NCCL on CUDA, told its GPU through ``device_id``; gloo on CPU) and pins each
rank to its own GPU; :func:`is_main_process` is rank 0, the only rank that writes files.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

#: Precision settings a run accepts (``--precision``).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: The TF32 policy: fp32 convolutions and matmuls on CUDA run on TF32 tensor cores.
TF32 = True


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the accelerator PyTorch finds (CUDA, MPS, XPU ...), else the CPU."""
    if str(name) != "auto":
        return torch.device(name)
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc if acc is not None else torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The device in words: a CUDA card's name, the CPU's model (``/proc/cpuinfo`` on Linux, else
    what ``platform`` knows), else the device type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_bf16() -> tuple[bool, str]:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        try:
            amx, avx = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
        except AttributeError:  # a torch without the probes: no claim
            return False, "this PyTorch cannot tell whether the CPU has AVX512-BF16 or AMX"
        if amx:
            return True, "this CPU has AMX, which computes bf16 natively"
        if avx:
            return True, "this CPU has AVX512-BF16, which computes bf16 natively"
        return False, "this CPU has neither AVX512-BF16 nor AMX"
    try:  # Arm and others: oneDNN's check is the BF16 extension itself
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return (
        native,
        f"this {machine} CPU {'computes' if native else 'has no'} bf16 {'natively' if native else 'instructions'}",
    )


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and the reason in words (what a run prints)."""
    if device.type == "cuda":
        if torch.version.hip:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
            return (
                native,
                f"this ROCm GPU {'computes' if native else 'has no'} bf16 {'natively' if native else 'units'}",
            )
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return True, f"CUDA capability {major}.{minor} computes bf16 natively"
        return False, f"CUDA capability {major}.{minor} has no bf16 units"
    if device.type == "cpu":
        return _cpu_bf16()
    return False, f"no bf16 policy for {device.type} devices"


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (:func:`native_bf16`)."""
    return native_bf16(device)[0]


@dataclass(frozen=True)
class Precision:
    """A run's precision: ``name`` (bf16, fp16 or fp32) and why it was chosen."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def scaler(self) -> bool:
        """Whether training needs a gradient scaler (fp16: small gradients underflow)."""
        return self.name == "fp16"

    def __str__(self) -> str:
        return f"precision {self.name} ({self.reason})"


def choose_precision(device: torch.device, precision: str = "auto") -> Precision:
    """The precision policy (module docstring) for ``device`` and a ``--precision`` setting."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    native, why = native_bf16(device)
    if precision == "auto":
        if native:
            return Precision("bf16", why)
        if device.type == "cuda" and not torch.version.hip and torch.cuda.get_device_capability(device) >= (7, 0):
            return Precision("fp16", f"{why}; its tensor cores compute fp16, trained with a gradient scaler")
        return Precision("fp32", why)
    if precision == "bf16":
        return Precision("bf16", "asked for" if native else f"asked for; {why}, so it is emulated (slow)")
    if precision == "fp16":
        return Precision("fp16", "asked for; trained with a gradient scaler")
    return Precision("fp32", "asked for")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for fp32 (:func:`choose_precision`)."""
    return choose_precision(device, precision).dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype``, or a no-op context for fp32 (``dtype=None``)."""
    return torch.autocast(device.type, dtype) if dtype is not None else nullcontext()


def grad_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler | None:
    """The gradient scaler an fp16 run trains with; None for bf16 and fp32, which need none."""
    return torch.amp.GradScaler(device.type) if precision.scaler else None


def apply_tf32_policy(device: torch.device, precision: Precision) -> str | None:
    """Sets :data:`TF32` for CUDA; what it means for this run in words, None where it does not apply."""
    if device.type != "cuda":
        return None
    mode = "tf32" if TF32 else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = TF32
        torch.backends.cudnn.allow_tf32 = TF32
    if precision.name != "fp32" or torch.version.hip or torch.cuda.get_device_capability(device) < (8, 0):
        return None
    return f"TF32 {'on' if TF32 else 'off'} for fp32 convolutions and matmuls"


def configure_determinism(device: torch.device, deterministic: bool) -> str:
    """Sets cuDNN autotuning and deterministic algorithms for a run; the line it prints."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type != "cuda":
        return f"bitwise reproducible ({device.type})"
    if deterministic:
        return (
            "deterministic: deterministic algorithms, cudnn.deterministic, no autotuning; the model's "
            "bilinear upsampling runs as matmuls (no deterministic CUDA kernel for its backward)"
        )
    return "cudnn.benchmark on: fastest kernels, not bitwise reproducible (--deterministic for that)"


def distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``: joins the torchrun process group when there is one
    (NCCL told its GPU, so its collectives and barriers never guess one; gloo on a CPU)."""
    rank, world, local_rank = distributed()
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            if device.type == "cuda":
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
    return rank, world, device


def is_main_process() -> bool:
    """Whether this process is rank 0 (or alone): the only one that writes files."""
    return distributed()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing only; the training loop never calls it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
