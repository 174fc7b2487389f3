"""Loss and metrics: class weights, the multilevel loss, and metrics cross-checked with MONAI."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from stroke_helpers import metrics
from stroke_helpers.loss import LEVEL_WEIGHTS, class_weights, multilevel_loss


def test_level_weights_sum_to_one():
    assert sum(LEVEL_WEIGHTS) == pytest.approx(1.0)


def test_class_weights_map():
    mask = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert torch.equal(class_weights(mask), torch.tensor([[0.3, 0.7], [0.7, 0.3]]))


def test_multilevel_loss_matches_formula_and_is_stable():
    torch.manual_seed(0)
    mask = (torch.rand(2, 1, 8, 8) > 0.7).float()
    levels = [torch.randn(2, 1, 8, 8) * 3 for _ in range(6)]
    c = torch.where(mask > 0.5, 0.7, 0.3)
    p = [torch.sigmoid(y) for y in levels]
    direct = sum(
        w * (c * -(mask * torch.log(q) + (1 - mask) * torch.log(1 - q))).mean() for w, q in zip(LEVEL_WEIGHTS, p)
    )
    torch.testing.assert_close(multilevel_loss(levels, mask), direct)
    # without MR: one output, weight 1
    torch.testing.assert_close(
        multilevel_loss(levels[-1:], mask), (c * -(mask * torch.log(p[-1]) + (1 - mask) * torch.log(1 - p[-1]))).mean()
    )
    # logits far beyond float32's sigmoid range stay finite
    huge = [torch.full((2, 1, 8, 8), 200.0)] * 6
    assert torch.isfinite(multilevel_loss(huge, mask))
    with pytest.raises(ValueError, match="3 outputs"):
        multilevel_loss(levels[:3], mask)


def random_blobs(rng, shape, n=3):
    vol = np.zeros(shape, bool)
    for _ in range(n):
        c = rng.integers(2, np.array(shape) - 2)
        r = rng.uniform(2, 5)
        grid = np.indices(shape)
        vol |= sum((g - ci) ** 2 for g, ci in zip(grid, c)) < r**2
    return ndimage.binary_dilation(vol, iterations=int(rng.integers(0, 2)))


@pytest.mark.parametrize("seed", range(5))
def test_dice_and_hd95_agree_with_monai(seed):
    from monai.metrics import compute_dice, compute_hausdorff_distance

    rng = np.random.default_rng(seed)
    shape, spacing = (40, 36, 8), (0.9, 1.1, 5.0)
    pred, truth = random_blobs(rng, shape), random_blobs(rng, shape)
    as_onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
    ref_dice = compute_dice(as_onehot(pred), as_onehot(truth), include_background=False).item()
    ref_hd = compute_hausdorff_distance(as_onehot(pred), as_onehot(truth), percentile=95, spacing=spacing).item()
    assert metrics.dice(pred, truth) == pytest.approx(ref_dice, abs=1e-6)
    assert metrics.hd95(pred, truth, spacing) == pytest.approx(ref_hd, rel=1e-5)


def test_metrics_on_a_known_case():
    truth = np.zeros((10, 10, 2), bool)
    truth[2:6, 2:6, 0] = True  # 16 voxels
    pred = np.zeros_like(truth)
    pred[2:6, 4:8, 0] = True  # 16 voxels, 8 overlapping
    m = metrics.study_metrics(pred, truth, (1.0, 2.0, 5.0))
    assert (
        m["dice"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    )
    assert m["avd"] == 0.0
    pred[2:6, 8:10, 0] = True  # 8 more voxels of 10 mm^3
    assert metrics.avd(pred, truth, (1.0, 2.0, 5.0)) == pytest.approx(8 * 10 / 1000)
    # a shift of 2 voxels along y (2 mm each) shows in HD95
    shifted = np.roll(truth, 2, axis=1)
    assert metrics.hd95(shifted, truth, (1.0, 2.0, 5.0)) == pytest.approx(4.0)


def test_empty_mask_conventions():
    empty, lesion = np.zeros((5, 5, 2), bool), np.zeros((5, 5, 2), bool)
    lesion[1:3, 1:3, 0] = True
    both = metrics.study_metrics(empty, empty, (1, 1, 1))
    assert both == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0, "avd": 0.0}
    missed = metrics.study_metrics(empty, lesion, (1, 1, 1))
    assert missed["dice"] == 0.0 and missed["precision"] == 0.0 and missed["recall"] == 0.0
    assert math.isnan(missed["hd95"])
    summary = metrics.summarise([both, missed])
    assert summary["hd95"] == {"mean": 0.0, "std": 0.0, "n": 1}
    assert summary["dice"]["mean"] == 0.5 and summary["dice"]["n"] == 2
