"""The exercise checks: each accepts the right answer, refuses a wrong one and says why."""

import json

import numpy as np
import pytest
import torch

from stroke_helpers import answers, chapters
from stroke_helpers.baseline import classical_baseline
from stroke_helpers.model import PAPER_WIDTHS, CrossAttentionAutoencoder
from stroke_helpers.truth import read_cases


@pytest.fixture(scope="module")
def study(phantom_root):
    return chapters.load_studies(phantom_root, 1)[0]


def test_chapter1_checks(phantom_root, study, capsys):
    rows = [r for r in read_cases(phantom_root) if r["split"] == "TRAINING"]
    big = max(rows, key=lambda r: float(r["lesion_ml"]))
    assert answers.check_largest_lesion(phantom_root, float(big["lesion_ml"]), float(big["onset_to_ct_min"]))
    assert f"TRAINING/{big['case']}" in capsys.readouterr().out
    assert not answers.check_largest_lesion(phantom_root, 2 * float(big["lesion_ml"]), float(big["onset_to_ct_min"]))
    assert capsys.readouterr().out.startswith("not quite: ")

    scores = {
        t: np.mean([r["dice"] for r in classical_baseline(phantom_root, threshold=t, progress=False)])
        for t in (0.2, 0.4)
    }
    best, worst = sorted(scores, key=scores.get, reverse=True)
    assert answers.check_best_rcbf_threshold(phantom_root, best, thresholds=(0.2, 0.4))
    assert not answers.check_best_rcbf_threshold(phantom_root, worst, thresholds=(0.2, 0.4))

    # the physics: plain SVD mistakes the late arrival for a slow residue and lowers CBF there
    assert answers.check_plain_svd_in_delayed_tissue(study, "lower")
    # the generator's noise: 8 HU white noise correlated in-plane (sigma 0.8 voxel) is ~2.8 HU a voxel
    assert answers.check_voxel_noise(study, 2.8) and not answers.check_voxel_noise(study, 8.0)
    share = float(
        chapters.truth_regions(phantom_root, study, chapters.lesion_slice(study))[1].split("; ")[-1].split(" %")[0]
    )
    assert answers.check_truth_in_penumbra(phantom_root, study, share)


def test_chapter2_checks():
    w = PAPER_WIDTHS  # W_e (w_i -> w_i), W_d (w_i+1 -> w_i), W_phi (w_i -> 1), with biases
    n = sum(w[i] * w[i] + w[i] + w[i + 1] * w[i] + w[i] + w[i] + 1 for i in range(len(w) - 1))
    assert answers.check_attention_parameters(n) and not answers.check_attention_parameters(int(n * 1.1))
    masks = np.zeros((2, 32, 32))
    masks[:, 8:16, 8:16] = 1
    maps = {1: np.full((2, 32, 32), 0.5), 2: masks[:, ::2, ::2].copy(), 3: np.random.default_rng(0).random((2, 8, 8))}
    assert answers.check_most_lesion_shaped_level(masks, maps, 2)
    assert not answers.check_most_lesion_shaped_level(masks, maps, 1)


def test_chapter3_to_5_checks(tmp_path, capsys):
    torch.manual_seed(0)
    model = CrossAttentionAutoencoder(2, (4, 4, 8, 8, 16, 16))
    image, mask = torch.randn(1, 2, 64, 64), torch.zeros(1, 1, 64, 64)
    mask[..., 20:30, 20:30] = 1
    verdicts = [answers.check_balanced_weights_loss(model, image, mask, a) for a in ("up", "down")]
    assert sorted(verdicts) == [False, True]

    assert answers.check_leak({"in-sample": 0.6, "out-of-fold": 0.3}, "in-sample")
    assert not answers.check_leak({"in-sample": 0.6, "out-of-fold": 0.3}, "out-of-fold")

    run = tmp_path / "runs" / "MR+ATT_All"
    run.mkdir(parents=True)
    studies = [
        {"study": f"TRAINING/case_{i}", "dice": d, "lesion_ml": v}
        for i, (d, v) in enumerate([(0.2, 1), (0.3, 2), (0.8, 30), (0.7, 40)])
    ]
    (run / "metrics.json").write_text(
        json.dumps({"run": "x", "name": "x", "split": "val", "studies": studies, "summary": {}})
    )
    assert answers.check_volume_effect(tmp_path, "MR+ATT_All", "lower")
    assert "0.25 for lesions up to" in capsys.readouterr().out
    assert not answers.check_volume_effect(tmp_path, "MR+ATT_All", "higher")


def test_seed_and_config_cell(capsys):
    """The first code cell of every chapter: seeded generators repeat, and the versions print."""
    import random

    from stroke_helpers.engine import print_config, seed_everything

    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a  # noqa: NPY002
    print_config()
    out = capsys.readouterr().out
    assert f"torch       {torch.__version__}" in out and "bf16 units:" in out and "stroke_helpers 0.1.0" in out
