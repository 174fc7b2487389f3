"""The cross-attention autoencoder with multilevel refinement, in one file.

Hold this beside §2 of the paper (and ``docs/decisions.md`` §1, which turns it into decisions):

- **Encoder**: 6 levels of :class:`ConvBlock` (two x (3x3 conv, BatchNorm, ReLU)), widths
  ``w1 .. w6`` (paper: 32 .. 1024), 2x2 max-pooling between levels: 224 px -> 7 px at level 6,
  the bottleneck.
- **Decoder**: levels 5 .. 1. Each upsamples the features below it x2 by **bilinear
  interpolation** (:func:`upsample`), gates the encoder's skip features with :class:`AdditiveCrossAttention`, and
  runs a conv block on ``concat[refined skip, upsampled features]``.
- **Multilevel refinement (MR)**: a 1x1-conv head on the bottleneck and on every decoder level:
  6 logit maps, each interpolated bilinearly to the input size. The paper interpolates first
  and convolves second; both orders are the same linear map (a 1x1 conv mixes channels, the
  interpolation mixes pixels), and conv-first interpolates one channel instead of up to 1024.
  The heads feed the loss only; inference uses the level-1 (full-resolution) head.
- **Head bias at the lesion prior** (an initialisation the paper does not specify): every
  head's bias starts at ``logit(prior)`` (``prior = 0.01``, about the lesion share of a slice),
  so the network starts by predicting background and must learn *positive* evidence for a
  lesion (Lin et al. 2017, focal loss §3.3). With PyTorch's default (bias about 0), a narrow
  level-1 block (8 channels in the ``cpu`` preset) can settle with every head weight negative:
  the logit is then at most the bias, which the background pixels pull below 0, and no pixel
  ever reaches 0.5. Measured: the ``cpu``-preset base All model, seed 1, collapsed to Dice 0.00
  from epoch 3 with the default bias and reached 0.63 with this one (synthetic v2 validation).

Levels are numbered as in the paper: **level 1 is full resolution**, level 6 the bottleneck.
Outputs are logits (the sigmoid lives in the loss and at thresholding, which is numerically
stable); ``torch.sigmoid`` gives probabilities.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

PAPER_WIDTHS = (32, 64, 128, 256, 512, 1024)
LESION_PRIOR = 0.01  # the heads' initial sigmoid output


def _linear_weights(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """``(n_in, n_out)``: column ``j`` holds the weights of the inputs of output ``j`` of 1D
    linear interpolation (``align_corners=False``), exactly as ``F.interpolate`` weighs them."""
    eye = torch.eye(n_in, device=like.device, dtype=torch.float32)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].to(like.dtype)


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of ``x (B, C, H, W)`` to ``size`` (``align_corners=False``).

    ``F.interpolate``, except on CUDA with deterministic algorithms asked for
    (``torch.use_deterministic_algorithms``, the trainer's ``--deterministic``): the backward
    of bilinear upsampling has no deterministic CUDA kernel, so it is then computed as the
    same linear map written as two matmuls, ``W_h^T x W_w``, whose backward is deterministic.
    The results agree to rounding; the matmuls cost more, so only when asked."""
    size = tuple(size)
    if x.is_cuda and torch.are_deterministic_algorithms_enabled():
        return bilinear_matmul(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def bilinear_matmul(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) as two matmuls, ``W_h^T x W_w``."""
    with torch.no_grad():
        w_h, w_w = _linear_weights(x.shape[-2], size[0], x), _linear_weights(x.shape[-1], size[1], x)
    return torch.matmul(w_h.T, torch.matmul(x, w_w))


class ConvBlock(nn.Sequential):
    """Two x (3x3 conv, BatchNorm, ReLU): ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    The convolutions have no bias: the BatchNorm that follows would cancel it.
    """

    def __init__(self, in_channels: int, out_channels: int):
        layers = []
        for c in (in_channels, out_channels):
            layers += [
                nn.Conv2d(c, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(True),
            ]
        super().__init__(*layers)


class Attention(NamedTuple):
    """What :class:`AdditiveCrossAttention` returns (shapes for ``F_int`` inner channels)."""

    refined: torch.Tensor  # (B, C_e, H, W): X_e gated by the attention map
    attention: torch.Tensor  # (B, 1, H, W): sigma2(W_phi q), in [0, 1]
    similarities: torch.Tensor  # (B, F_int, H, W): q = sigma1(W_e X_e + W_d X_d) >= 0


class AdditiveCrossAttention(nn.Module):
    """Additive cross-attention between encoder (skip) and decoder features, paper eq. (1):

    ``X'_e = X_e * sigmoid(W_phi relu(W_e X_e + W_d X_d))``

    ``W_e: C_e -> F_int``, ``W_d: C_d -> F_int`` and ``W_phi: F_int -> 1`` are 1x1 convolutions
    (with bias). ``X_e (B, C_e, H, W)`` and ``X_d (B, C_d, H, W)`` share their spatial size
    (``X_d`` is the upsampled decoder feature map). ``F_int`` defaults to ``C_e`` (docs/decisions.md §1).
    The positive similarities ``relu(W_e X_e + W_d X_d)`` are what the cascade averages into its
    synthetic map.
    """

    def __init__(self, skip_channels: int, decoder_channels: int, inner_channels: int | None = None):
        super().__init__()
        inner = inner_channels or skip_channels
        self.w_e = nn.Conv2d(skip_channels, inner, 1)
        self.w_d = nn.Conv2d(decoder_channels, inner, 1)
        self.w_phi = nn.Conv2d(inner, 1, 1)

    def forward(self, x_e: torch.Tensor, x_d: torch.Tensor) -> Attention:
        q = F.relu(self.w_e(x_e) + self.w_d(x_d))
        a = torch.sigmoid(self.w_phi(q))
        return Attention(x_e * a, a, q)


class Output(NamedTuple):
    """What :class:`CrossAttentionAutoencoder` returns.

    ``logits (B, 1, H, W)``: level 1, full resolution. ``levels``: the deep-supervision logits
    at input size ordered **from the bottleneck (level 6) to level 1**, the order of the loss
    weights; empty unless asked for. ``attention``: ``{level: Attention}`` for decoder levels
    5 .. 1; empty unless asked for (or when attention is off).
    """

    logits: torch.Tensor
    levels: list[torch.Tensor]
    attention: dict[int, Attention]


class CrossAttentionAutoencoder(nn.Module):
    """U-shaped autoencoder: ``(B, in_channels, H, W) -> logits (B, 1, H, W)``.

    ``H`` and ``W`` must be divisible by ``2 ** (len(widths) - 1)`` (32 for 6 levels).
    ``attention=False`` gives plain skip connections (``X'_e = X_e``); ``multilevel=False``
    keeps only the level-1 head (the paper's "base" model has neither).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] = PAPER_WIDTHS,
        attention: bool = True,
        multilevel: bool = True,
    ):
        super().__init__()
        self.in_channels, self.widths = in_channels, tuple(widths)
        self.use_attention, self.multilevel = attention, multilevel
        w = self.widths
        self.encoder = nn.ModuleList(ConvBlock(c_in, c) for c_in, c in zip((in_channels, *w[:-1]), w))
        # decoder[i] produces level i + 1 from level i + 2 (index 0 = level 1)
        self.decoder = nn.ModuleList(ConvBlock(w[i] + w[i + 1], w[i]) for i in range(len(w) - 1))
        self.attention = nn.ModuleList(
            AdditiveCrossAttention(w[i], w[i + 1]) if attention else nn.Identity() for i in range(len(w) - 1)
        )
        # heads[i] reads level i + 1; without MR only the level-1 head exists
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in (w if multilevel else w[:1]))
        for head in self.heads:
            nn.init.constant_(head.bias, math.log(LESION_PRIOR / (1 - LESION_PRIOR)))

    @property
    def depth(self) -> int:
        return len(self.widths)

    def forward(self, x: torch.Tensor, levels: bool = False, attention: bool = False) -> Output:
        """``levels=True`` also returns the 6 deep-supervision logits (MR only; used for the
        loss), ``attention=True`` every decoder level's :class:`Attention`."""
        size = x.shape[-2:]
        if size[0] % 2 ** (self.depth - 1) or size[1] % 2 ** (self.depth - 1):
            raise ValueError(f"input size {tuple(size)} is not divisible by {2 ** (self.depth - 1)}")
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        features = {self.depth: x}
        gates: dict[int, Attention] = {}
        for i in reversed(range(self.depth - 1)):  # level i + 1, from 5 down to 1
            x_d = upsample(x, (2 * x.shape[-2], 2 * x.shape[-1]))
            x_e = skips[i]
            if self.use_attention:
                gate = self.attention[i](x_e, x_d)
                x_e = gate.refined
                if attention:
                    gates[i + 1] = gate
            x = self.decoder[i](torch.cat([x_e, x_d], dim=1))
            features[i + 1] = x
        logits = self.heads[0](x)
        deep = []
        if levels and self.multilevel:
            for level in range(self.depth, 1, -1):
                y = self.heads[level - 1](features[level])
                deep.append(upsample(y, size))
            deep.append(logits)
        return Output(logits, deep, gates)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
