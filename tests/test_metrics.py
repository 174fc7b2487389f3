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


def _lesion_case(name):
    """Hand-made cases for the lesion-wise metrics; each expected value was also computed with
    panoptica 2.1.7 as the ISLES 2024 challenge's utils/eval_utils.py calls it (semantic input,
    connected components, NaiveThresholdMatching), which agreed."""
    if name == "one_of_two_and_a_false_one":  # TP 1, FP 1, FN 1
        t = np.zeros((12, 12, 3), bool)
        t[1:3, 1:3, 1] = t[8:10, 8:10, 1] = True
        p = np.zeros_like(t)
        p[1:3, 1:3, 1] = p[1:3, 8:10, 1] = True
    elif name == "iou_0.3":  # 3 of a 10-voxel lesion predicted
        t = np.zeros((12, 4, 3), bool)
        t[0:10, 1, 1] = True
        p = np.zeros_like(t)
        p[0:3, 1, 1] = True
    elif name == "corner_touch":  # two voxels meeting at a corner: one lesion in 3D; IoU 1/2
        t = np.zeros((6, 6, 3), bool)
        t[1, 1, 0] = t[2, 2, 1] = True
        p = np.zeros_like(t)
        p[1, 1, 0] = True
    else:  # "one_over_two": one predicted lesion over two true ones (IoU 4/9 each): matched once
        t = np.zeros((12, 3, 3), bool)
        t[0:4, 1, 1] = t[5:9, 1, 1] = True
        p = np.zeros_like(t)
        p[0:9, 1, 1] = True
    return p, t


@pytest.mark.parametrize(
    "name, f1_at_02, f1_at_05, count_diff",
    [
        ("one_of_two_and_a_false_one", 0.5, 0.5, 0),  # 1 / (1 + (1 + 1) / 2)
        ("iou_0.3", 1.0, 0.0, 0),  # matched at the challenge's IoU 0.2, not at panoptica's default 0.5
        ("corner_touch", 1.0, 1.0, 0),  # 26-connectivity; IoU exactly 0.5 still matches (>=)
        ("one_over_two", 2 / 3, 0.0, 1),  # one to one: 1 / (1 + (0 + 1) / 2)
    ],
)
def test_lesion_wise_metrics_on_hand_made_cases(name, f1_at_02, f1_at_05, count_diff):
    p, t = _lesion_case(name)
    assert metrics.LESION_IOU == 0.2
    assert metrics.lesion_f1(p, t) == pytest.approx(f1_at_02)
    assert metrics.lesion_f1(p, t, iou=0.5) == pytest.approx(f1_at_05)
    assert metrics.lesion_count_diff(p, t) == count_diff
    assert metrics.lesion_metrics(p, t) == {"lesion_f1": pytest.approx(f1_at_02), "lesion_count_diff": count_diff}


def test_lesion_wise_empty_masks_and_summary():
    empty, lesion = np.zeros((5, 5, 2), bool), np.zeros((5, 5, 2), bool)
    lesion[1:3, 1:3, 0] = True
    lesion[4, 4, 1] = True  # a second lesion, not touching the first
    assert metrics.lesion_metrics(empty, empty) == {"lesion_f1": 1.0, "lesion_count_diff": 0}
    assert metrics.lesion_metrics(empty, lesion) == {"lesion_f1": 0.0, "lesion_count_diff": 2}
    assert metrics.lesion_metrics(lesion, empty) == {"lesion_f1": 0.0, "lesion_count_diff": 2}
    # 2D masks are cut by face neighbours, as scipy's default (what panoptica uses below 3D)
    assert metrics.lesions(np.eye(3, dtype=bool))[1] == 3 and metrics.lesions(np.eye(3, dtype=bool)[..., None])[1] == 1
    rows = [{**metrics.study_metrics(lesion, lesion, (1, 1, 1)), **metrics.lesion_metrics(lesion, lesion)}]
    rows.append({**metrics.study_metrics(empty, lesion, (1, 1, 1)), **metrics.lesion_metrics(empty, lesion)})
    summary = metrics.summarise(rows)
    assert summary["lesion_f1"] == {"mean": 0.5, "std": 0.5, "n": 2}
    assert summary["lesion_count_diff"]["mean"] == 1.0
    assert "lesion_f1" not in metrics.summarise([metrics.study_metrics(lesion, lesion, (1, 1, 1))])
