"""The model architectures a run can train, by name: ``TrainConfig.architecture`` -> a model.

One job: :data:`ARCHITECTURES` maps a name to a builder, and :func:`get_architecture` finds
it (an unknown name is refused in one line). Every model takes ``(B, in_channels, H, W)`` and
returns :class:`~stroke_helpers.model.Output` from ``forward(x, levels=False, attention=False)``,
so training, evaluation, prediction and resuming are one code path for all of them.

- ``cross-attention`` (the default): the paper's model,
  :class:`~stroke_helpers.model.CrossAttentionAutoencoder`, with its two switches
  (cross-attention and multilevel refinement; both on unless switched off).
- ``monai-attention-unet``: MONAI's ``AttentionUnet`` (Oktay et al. 2018, "Attention U-Net:
  learning where to look for the pancreas"), the field's standard attention U-Net, as a
  baseline at the preset's widths (:class:`MonaiAttentionUnet`). It has no switches: its
  attention gates are always on and it has one output, trained with the same loss as a model
  without multilevel refinement. Its gates return no similarities, so it cannot be a cascade's
  stage 1 (docs/decisions.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .model import LESION_PRIOR, CrossAttentionAutoencoder, Output

DEFAULT = "cross-attention"


class MonaiAttentionUnet(nn.Module):
    """MONAI's ``AttentionUnet`` with our interface: ``forward(x, levels=False, attention=False)
    -> Output(logits, [], {})``.

    ``AttentionUnet(spatial_dims=2, in_channels, out_channels=1, channels=widths,
    strides=(2,) * (len(widths) - 1))``, the network in ``self.net``. How it differs from
    :class:`~stroke_helpers.model.CrossAttentionAutoencoder` at the same widths (``smoke``:
    23,721 parameters against 24,127 for 5 inputs; ``cpu``: 1,991,833 against 2,034,835):

    - **down**sampling by stride-2 3x3 convolutions (no max-pooling), **up**sampling by
      stride-2 transposed convolutions (no bilinear interpolation);
    - Oktay's **attention gates**: ``x * sigmoid(BN(psi(relu(BN(W_g g) + BN(W_x x)))))`` with
      ``F_int`` half the skip's width, gating the skip with the upsampled decoder features;
    - conv blocks of two x (3x3 conv with bias, BatchNorm, ReLU); the layer that merges the
      gated skip with the decoder features is MONAI's default convolution: 3x3 conv,
      InstanceNorm without affine parameters, PReLU;
    - **one output**: no multilevel heads, so ``levels`` is always empty (as for our model
      without MR), and no similarities, so ``attention`` is always empty (as without ATT).

    Dropout is off (MONAI's default ``dropout=0.0``); BatchNorm behaves as ours in ``train()``
    and ``eval()``. It runs in channels_last like ours. ``H`` and ``W`` must be divisible by
    ``2 ** (len(widths) - 1)`` (the ``smoke`` preset's 64 px and the ``cpu`` preset's 96 px are).

    **Output bias at the lesion prior**, as our heads (:data:`~stroke_helpers.model.LESION_PRIOR`,
    docs/decisions.md §2): the final 1x1 convolution's bias starts at ``logit(0.01)`` instead of
    PyTorch's default, so both architectures start from the same prediction, background.
    """

    # what code that reads CrossAttentionAutoencoder's switches finds: no cross-attention
    # similarities (the cascade needs them) and one output
    use_attention = False
    multilevel = False

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        from monai.networks.nets import AttentionUnet

        self.in_channels, self.widths = in_channels, tuple(widths)
        self.net = AttentionUnet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=1,
            channels=self.widths,
            strides=(2,) * (len(self.widths) - 1),
        )
        nn.init.constant_(self.net.model[-1].conv.bias, math.log(LESION_PRIOR / (1 - LESION_PRIOR)))

    @property
    def depth(self) -> int:
        return len(self.widths)

    def forward(self, x: torch.Tensor, levels: bool = False, attention: bool = False) -> Output:
        """Full-resolution logits ``(B, 1, H, W)``; ``levels`` and ``attention`` are accepted
        and stay empty (one output, no similarities)."""
        size = x.shape[-2:]
        if size[0] % 2 ** (self.depth - 1) or size[1] % 2 ** (self.depth - 1):
            raise ValueError(f"input size {tuple(size)} is not divisible by {2 ** (self.depth - 1)}")
        return Output(self.net(x), [], {})


@dataclass(frozen=True)
class Architecture:
    """A named model builder.

    ``make(in_channels, widths, attention, multilevel)`` builds the model. ``fixed`` names the
    switches the architecture does not have and the value it behaves as; asking for the other
    value is refused (:meth:`switches`). ``cascade``: whether its level-1 similarities can make
    a cascade's synthetic map.
    """

    name: str
    summary: str
    make: Callable[[int, tuple[int, ...], bool, bool], nn.Module]
    fixed: tuple[tuple[str, bool], ...] = ()
    cascade: bool = True

    def switches(self, attention: bool | None, multilevel: bool | None) -> tuple[bool, bool]:
        """``(attention, multilevel)`` for a run of this architecture; None means its default
        (on, or the fixed value); a fixed switch asked for the other way is a ValueError."""
        asked = {"attention": attention, "multilevel": multilevel}
        for switch, value in self.fixed:
            if asked[switch] is not None and bool(asked[switch]) != value:
                raise ValueError(
                    f"the {self.name} architecture has no {switch} switch: it is always {'on' if value else 'off'}"
                )
            asked[switch] = value
        return tuple(True if v is None else bool(v) for v in (asked["attention"], asked["multilevel"]))


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            DEFAULT,
            "the paper's cross-attention autoencoder with multilevel refinement",
            lambda c, w, att, mr: CrossAttentionAutoencoder(c, w, att, mr),
        ),
        Architecture(
            "monai-attention-unet",
            "MONAI's AttentionUnet (Oktay et al. 2018) at the preset's widths, one output",
            lambda c, w, att, mr: MonaiAttentionUnet(c, w),
            fixed=(("attention", True), ("multilevel", False)),
            cascade=False,
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name``; an unknown name is a one-line ValueError."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build(name: str, in_channels: int, widths: tuple[int, ...], attention: bool, multilevel: bool) -> nn.Module:
    """A fresh model of architecture ``name``."""
    return get_architecture(name).make(in_channels, tuple(widths), attention, multilevel)
