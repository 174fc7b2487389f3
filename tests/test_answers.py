"""The exercise checks: each accepts the right answer, refuses a wrong one and says why."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
    small = min(rows, key=lambda r: float(r["lesion_ml"]))
    onset = float(big["onset_to_ct_min"])
    assert answers.check_largest_lesion(phantom_root, big["case"], onset)
    assert f"TRAINING/{big['case']}" in capsys.readouterr().out
    # the study named any reasonable way, or its volume (the first version of the exercise)
    assert answers.check_largest_lesion(phantom_root, f"TRAINING/{big['case']}", onset + 5)
    assert answers.check_largest_lesion(phantom_root, int(big["case"].split("_")[-1]), onset)
    assert answers.check_largest_lesion(phantom_root, float(big["lesion_ml"]), onset)
    capsys.readouterr()
    assert not answers.check_largest_lesion(phantom_root, small["case"], float(small["onset_to_ct_min"]))
    assert not answers.check_largest_lesion(phantom_root, big["case"], onset + 60)
    assert not answers.check_largest_lesion(phantom_root, 2 * float(big["lesion_ml"]), onset)
    assert all(line.startswith("not quite: ") for line in capsys.readouterr().out.splitlines())

    scores = {
        t: np.mean([r["dice"] for r in classical_baseline(phantom_root, threshold=t, progress=False)])
        for t in (0.2, 0.4)
    }
    best, worst = sorted(scores, key=scores.get, reverse=True)
    assert answers.check_best_rcbf_threshold(phantom_root, best, thresholds=(0.2, 0.4))
    assert not answers.check_best_rcbf_threshold(phantom_root, worst, thresholds=(0.2, 0.4))

    # the physics: plain SVD mistakes the late arrival for a slow residue and lowers CBF there
    assert answers.check_plain_svd_in_delayed_tissue(study, "lower")
    assert answers.check_plain_svd_in_delayed_tissue(study, "Lower.")
    assert not answers.check_plain_svd_in_delayed_tissue(study, "higher")
    # a shorter acquisition cuts the late curves' tails: CBV, and so MTT, falls where the bolus is late
    assert answers.check_short_acquisition_mtt(study, "lower")
    assert not answers.check_short_acquisition_mtt(study, "higher")
    with pytest.raises(ValueError, match=f"its series has {study.pwi.shape[-1]} frames; cut it to fewer"):
        answers.check_short_acquisition_mtt(study, "lower", frames=study.pwi.shape[-1])
    # the chapter's exercise and the instructor guide name the check's default cut
    frames = inspect.signature(answers.check_short_acquisition_mtt).parameters["frames"].default
    root = Path(__file__).resolve().parents[1]
    cells = json.loads((root / "notebooks" / "01_data_exploration.ipynb").read_text())["cells"]
    chapter = next("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("## Exercises"))
    guide = " ".join((root / "docs" / "instructor-guide.md").read_text().split())
    assert f"from the first {frames}" in " ".join(chapter.split()) and f"from the first {frames} frames" in guide
    share = float(
        chapters.truth_regions(phantom_root, study, chapters.lesion_slice(study))[1].split("; ")[-1].split(" %")[0]
    )
    assert answers.check_truth_in_penumbra(phantom_root, study, share)
    assert not answers.check_truth_in_penumbra(phantom_root, study, share - 20)


def test_voxel_noise_accepts_every_voxel_a_student_may_pick(study):
    """Four baseline frames make a rough SD: whichever tissue voxel a student takes, with numpy's
    ddof=0 or ddof=1, the answer is accepted; the variance, the SD over the whole series (bolus
    included) and the generator's white-noise level (8 HU, before smoothing) are not."""
    from stroke_helpers.datasets import brain_mask
    from stroke_helpers.perfusion import tissue_mask

    tissue = tissue_mask(study.CT, brain_mask(study))
    voxels = np.argwhere(tissue)
    rng = np.random.default_rng(0)
    picks = voxels[rng.choice(len(voxels), 40, replace=False)]
    sds = [study.pwi[x, y, z, :4].astype(float).std(ddof=d) for (x, y, z), d in zip(picks, [0, 1] * 20)]
    inner = [sd for sd in sds if np.percentile(sds, 10) <= sd <= np.percentile(sds, 90)]
    assert all(answers.check_voxel_noise(study, sd) for sd in inner)  # the central 80 % of picks, at least
    accepted = np.mean([answers.check_voxel_noise(study, sd) for sd in sds])
    assert accepted >= 0.9  # the old check (median +- 30 %) took about half
    median = float(np.median(study.pwi[tissue][:, :4].astype(float).std(axis=1, ddof=1)))
    assert answers.check_voxel_noise(study, median)
    assert not answers.check_voxel_noise(study, median**2 * 1.5)  # a variance
    # (the SD over the whole series, bolus included, is about twice the noise: inside the range one
    # voxel's four frames can give, so no check on four frames can refuse it; it refuses what lies beyond)
    assert not answers.check_voxel_noise(study, 8.0) and not answers.check_voxel_noise(study, 0.0)


def test_attention_parameter_count_and_its_hint(capsys):
    w = PAPER_WIDTHS  # W_e (w_i -> w_i), W_d (w_i+1 -> w_i), W_phi (w_i -> 1), with biases
    n = sum(w[i] * w[i] + w[i] + w[i + 1] * w[i] + w[i] + w[i] + 1 for i in range(len(w) - 1))
    assert answers.check_attention_parameters(n) and not answers.check_attention_parameters(int(n * 1.1))
    without_biases = sum(w[i] * w[i] + w[i + 1] * w[i] + w[i] for i in range(len(w) - 1))
    assert answers.check_attention_parameters(without_biases)  # biases are 0.02 %: within the tolerance
    capsys.readouterr()
    same = sum(2 * (w[i] * w[i] + w[i]) + w[i] + 1 for i in range(len(w) - 1))  # X_d guessed as wide as X_e
    assert not answers.check_attention_parameters(same)
    assert "X_d comes from the level below" in capsys.readouterr().out


def test_most_lesion_shaped_level_scores_in_the_brain_either_direction(capsys):
    masks = np.zeros((2, 32, 32))
    masks[:, 12:18, 12:18] = 1
    brains = np.zeros((2, 32, 32), bool)
    brains[:, 4:28, 4:28] = True
    rng = np.random.default_rng(0)
    noise = rng.random((2, 32, 32)) * 0.1
    # level 1 is *lower* inside the lesion and 0.5 in the brain, 0.5 + noise in the air: it
    # separates lesion from brain perfectly; level 2 is higher inside but only a little above the
    # brain, and far above the air (which a whole-slice score would reward)
    level1 = np.where(masks > 0, 0.1, np.where(brains, 0.5, 0.5)) + noise
    level2 = np.where(masks > 0, 0.6, np.where(brains, 0.55, 0.0)) + rng.random((2, 32, 32)) * 0.2
    maps = {1: level1, 2: level2, 3: np.full((2, 8, 8), 0.5)}
    assert answers.check_most_lesion_shaped_level(masks, maps, 1, brains)
    assert "(lower inside)" in capsys.readouterr().out.split("level 2")[0]
    assert not answers.check_most_lesion_shaped_level(masks, maps, 2, brains)
    assert not answers.check_most_lesion_shaped_level(masks, maps, 3, brains)
    # near-ties are each right
    tie = {1: level1, 4: level1 + 1e-3 * rng.random((2, 32, 32))}
    assert answers.check_most_lesion_shaped_level(masks, tie, 1, brains)
    assert answers.check_most_lesion_shaped_level(masks, tie, 4, brains)


# --- the write-the-gate exercise: right answers written several ways, and wrong ones -----------------


class ConvGate(nn.Module):
    """The textbook answer: three 1x1 convolutions."""

    def __init__(self, skip_channels, decoder_channels):
        super().__init__()
        self.w_e = nn.Conv2d(skip_channels, skip_channels, 1)
        self.w_d = nn.Conv2d(decoder_channels, skip_channels, 1)
        self.w_phi = nn.Conv2d(skip_channels, 1, 1)

    def forward(self, x_e, x_d):
        a = torch.sigmoid(self.w_phi(F.relu(self.w_e(x_e) + self.w_d(x_d))))
        return x_e * a, a


class LinearGate(nn.Module):
    """nn.Linear over channels (channels last), another order of the same operations, one bias
    for W_e and W_d together (they add), the sigmoid written out."""

    def __init__(self, skip_channels, decoder_channels):
        super().__init__()
        self.w_e = nn.Linear(skip_channels, skip_channels, bias=False)
        self.w_d = nn.Linear(decoder_channels, skip_channels)
        self.w_phi = nn.Linear(skip_channels, 1)

    def forward(self, x_e, x_d):
        e, d = x_e.permute(0, 2, 3, 1), x_d.permute(0, 2, 3, 1)
        q = torch.clamp(self.w_d(d) + self.w_e(e), min=0)
        a = 1 / (1 + torch.exp(-self.w_phi(q)))
        return a.permute(0, 3, 1, 2) * x_e


class EinsumGate(nn.Module):
    """Raw parameters stored (in, out) and einsum."""

    def __init__(self, skip_channels, decoder_channels):
        super().__init__()
        self.w_e = nn.Parameter(torch.zeros(skip_channels, skip_channels))
        self.w_d = nn.Parameter(torch.zeros(decoder_channels, skip_channels))
        self.w_phi = nn.Parameter(torch.zeros(skip_channels, 1))
        self.b_e, self.b_d, self.b_phi = (nn.Parameter(torch.zeros(n)) for n in (skip_channels, skip_channels, 1))

    def forward(self, x_e, x_d):
        pre = torch.einsum("bchw,cf->bfhw", x_e, self.w_e) + torch.einsum("bchw,cf->bfhw", x_d, self.w_d)
        q = F.relu(pre + (self.b_e + self.b_d)[:, None, None])
        a = torch.sigmoid(torch.einsum("bfhw,fo->bohw", q, self.w_phi) + self.b_phi[:, None, None])
        return x_e * a


def functional_gate(x_e, x_d, m):
    """A function of the package module's weights, with F.conv2d."""
    q = F.relu(F.conv2d(x_e, m.w_e.weight, m.w_e.bias) + F.conv2d(x_d, m.w_d.weight, m.w_d.bias))
    return x_e * torch.sigmoid(F.conv2d(q, m.w_phi.weight, m.w_phi.bias))


def test_a_right_gate_passes_however_it_is_written(capsys):
    for answer in (ConvGate, LinearGate, EinsumGate, functional_gate):
        assert answers.check_attention_gate(answer), answer
        assert capsys.readouterr().out.startswith("right: ")


def _wrong(forward):
    class Wrong(ConvGate):
        pass

    Wrong.forward = forward
    return Wrong


WRONG_GATES = {
    "no ReLU": lambda self, x_e, x_d: x_e * torch.sigmoid(self.w_phi(self.w_e(x_e) + self.w_d(x_d))),
    "softmax over pixels": lambda self, x_e, x_d: (
        x_e
        * torch.softmax(self.w_phi(F.relu(self.w_e(x_e) + self.w_d(x_d))).flatten(2), -1).view(
            x_e.shape[0], 1, *x_e.shape[2:]
        )
    ),
    "multiplicative": lambda self, x_e, x_d: x_e * torch.sigmoid(self.w_phi(F.relu(self.w_e(x_e) * self.w_d(x_d)))),
    "the map, not the gated skip": lambda self, x_e, x_d: torch.sigmoid(
        self.w_phi(F.relu(self.w_e(x_e) + self.w_d(x_d)))
    ),
    "adds the map": lambda self, x_e, x_d: x_e + torch.sigmoid(self.w_phi(F.relu(self.w_e(x_e) + self.w_d(x_d)))),
    "tanh": lambda self, x_e, x_d: x_e * torch.tanh(self.w_phi(F.relu(self.w_e(x_e) + self.w_d(x_d)))),
}


@pytest.mark.parametrize("name", list(WRONG_GATES))
def test_a_wrong_gate_fails(name, capsys):
    assert not answers.check_attention_gate(_wrong(WRONG_GATES[name]))
    assert capsys.readouterr().out.startswith("not quite: ")


def test_gate_check_says_what_is_wrong(capsys):
    assert not answers.check_attention_gate(_wrong(WRONG_GATES["no ReLU"]))
    assert "without the ReLU" in capsys.readouterr().out
    assert not answers.check_attention_gate(_wrong(WRONG_GATES["the map, not the gated skip"]))
    assert "that is the map a" in capsys.readouterr().out

    class NoBias(ConvGate):
        def __init__(self, c_e, c_d):
            super().__init__(c_e, c_d)
            self.w_e, self.w_d = nn.Conv2d(c_e, c_e, 1, bias=False), nn.Conv2d(c_d, c_e, 1, bias=False)

    assert not answers.check_attention_gate(NoBias)  # the package's gate has biases

    class Unnamed(nn.Module):
        def __init__(self, c_e, c_d):
            super().__init__()
            self.theta = nn.Conv2d(c_e, c_e, 1)

    assert not answers.check_attention_gate(Unnamed)
    assert "name its three projections w_e, w_d and w_phi" in capsys.readouterr().out
    assert not answers.check_attention_gate(ConvGate(8, 16))  # an instance, not the class
    assert not answers.check_attention_gate(
        lambda x_e, x_d, m: (functional_gate(x_e, x_d, m), torch.zeros(2, 1, 12, 10))
    )  # a wrong map returned beside a right X'_e
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    answers.check_attention_gate(ConvGate)
    assert torch.rand(1) == before  # the check leaves the student's random state alone


def test_chapter3_to_5_checks(tmp_path, capsys):
    torch.manual_seed(0)
    model = CrossAttentionAutoencoder(2, (4, 4, 8, 8, 16, 16))
    image, mask = torch.randn(1, 2, 64, 64), torch.zeros(1, 1, 64, 64)
    mask[..., 20:30, 20:30] = 1
    verdicts = [answers.check_balanced_weights_loss(model, image, mask, a) for a in ("up", "down")]
    assert sorted(verdicts) == [False, True]
    synonyms = [answers.check_balanced_weights_loss(model, image, mask, a) for a in ("higher", "lower")]
    assert synonyms == verdicts
    # the loss the student is asked to compute, with the chapter's imports
    from stroke_helpers.loss import multilevel_loss

    with torch.no_grad():
        levels = model.eval()(image, levels=True).levels
    balanced, default = multilevel_loss(levels, mask, classes=(0.5, 0.5)), multilevel_loss(levels, mask)
    assert verdicts[0] == bool(balanced > default)

    assert answers.check_leak({"in-sample": 0.6, "out-of-fold": 0.3}, "in-sample")
    assert not answers.check_leak({"in-sample": 0.6, "out-of-fold": 0.3}, "out-of-fold")
    assert answers.check_leak({"in-sample": 0.6, "out-of-fold": 0.3}, "In sample")

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
