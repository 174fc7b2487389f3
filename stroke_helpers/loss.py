"""Class-weight maps and the multilevel refinement loss (paper §2.2, docs/decisions.md §1).

``loss = sum_l W_l * mean(C * BCE(Y_hat_l, Y))`` over the 6 deep-supervision outputs, with
``W = (.03, .045, .05, .125, .25, .5)`` from the bottleneck (level 6) to full resolution
(level 1) and the class-weight map ``C`` = .7 on lesion pixels and .3 on background (lesions
cover ~1-5 % of a slice). The BCE is computed from logits, which is numerically stable where
``log(sigmoid(x))`` is not. Without MR only the full-resolution term counts, with weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEVEL_WEIGHTS = (0.03, 0.045, 0.05, 0.125, 0.25, 0.5)
LESION_WEIGHT, BACKGROUND_WEIGHT = 0.7, 0.3


def class_weights(mask: torch.Tensor, lesion: float = LESION_WEIGHT, background: float = BACKGROUND_WEIGHT):
    """``C``: ``lesion`` where ``mask > 0.5``, ``background`` elsewhere (same shape as ``mask``)."""
    return torch.where(mask > 0.5, lesion, background).to(mask.dtype)


def weighted_bce(logits: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean(C * BCE(sigmoid(logits), mask))``, computed in float32 from logits."""
    return F.binary_cross_entropy_with_logits(logits.float(), mask.float(), weight=weights.float())


def multilevel_loss(
    levels: list[torch.Tensor],
    mask: torch.Tensor,
    weights=LEVEL_WEIGHTS,
    classes: tuple[float, float] = (LESION_WEIGHT, BACKGROUND_WEIGHT),
) -> torch.Tensor:
    """Multilevel refinement loss.

    ``levels``: logits ``(B, 1, H, W)`` at input size ordered bottleneck -> full resolution
    (as :class:`~stroke_helpers.model.Output` gives them); one tensor means "no MR" and gets
    weight 1. ``mask (B, 1, H, W)`` in {0, 1}. ``classes``: the class weights ``(lesion,
    background)`` of the map ``C``.
    """
    c = class_weights(mask, *classes)
    if len(levels) == 1:
        return weighted_bce(levels[0], mask, c)
    if len(levels) != len(weights):
        raise ValueError(f"{len(levels)} outputs but {len(weights)} level weights")
    return sum(w * weighted_bce(y, mask, c) for w, y in zip(weights, levels))


def full_resolution_term(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The loss's full-resolution term, ``mean(C * BCE)`` of the level-1 logits: the whole loss of a
    model without MR, and the one term every configuration shares (so learning curves of base and
    MR runs compare on it, not on their totals)."""
    return weighted_bce(logits, mask, class_weights(mask))
