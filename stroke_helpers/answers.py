"""Answer checks for the chapters' exercises.

Each ``check_*`` takes the student's answer, computes the right one from the data, the phantom's
truth or the results (never a stored number), prints one line saying whether the answer is
right and why, and returns ``True`` or ``False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .baseline import classical_baseline
from .datasets import brain_mask
from .isles import Study
from .model import PAPER_WIDTHS, CrossAttentionAutoencoder, count_parameters
from .perfusion import compute_maps, select_aif, tissue_mask
from .report import load_run_metrics
from .truth import read_cases, read_truth


def _say(right: bool, why: str) -> bool:
    print(("right: " if right else "not quite: ") + why)
    return right


def _close(answer: float, value: float, tolerance: float) -> bool:
    return abs(float(answer) - value) <= tolerance


# --- chapter 1 -------------------------------------------------------------------------------------


def check_largest_lesion(data: str | Path, volume_ml: float, onset_min: float) -> bool:
    """Chapter 1, exercise 1: the largest training lesion's volume (within 10 %) and its time
    from onset to CT (within 10 min), from the phantom's truth table."""
    rows = [r for r in read_cases(data) if r["split"] == "TRAINING"]
    largest = max(rows, key=lambda r: float(r["lesion_ml"]))
    ml, onset = float(largest["lesion_ml"]), float(largest["onset_to_ct_min"])
    ok = _close(volume_ml, ml, 0.1 * ml) and _close(onset_min, onset, 10)
    return _say(
        ok, f"the largest lesion is TRAINING/{largest['case']}: {ml:.1f} mL, scanned {onset:.0f} min after onset"
    )


def check_best_rcbf_threshold(data: str | Path, answer: float, thresholds=(0.2, 0.3, 0.4)) -> bool:
    """Chapter 1, exercise 2: which rCBF threshold gives the highest mean Dice over the training
    studies (about 20 s per threshold on 2 cores)."""
    scores = {
        t: np.mean([r["dice"] for r in classical_baseline(data, threshold=t, progress=False)]) for t in thresholds
    }
    best = max(scores, key=scores.get)
    table = ", ".join(f"rCBF < {100 * t:.0f} %: {d:.3f}" for t, d in scores.items())
    return _say(_close(answer, best, 1e-9), f"mean Dice {table}")


def check_plain_svd_in_delayed_tissue(study: Study, answer: str) -> bool:
    """Chapter 1, exercise 3: does plain SVD give ``"lower"`` or ``"higher"`` CBF than
    block-circulant SVD where the bolus arrives late (Tmax > 6 s)?"""
    series, brain = study.pwi.astype(np.float32), brain_mask(study)
    aif = select_aif(series, brain)[0]
    tissue = tissue_mask(study.CT, brain)
    late = tissue & (study.Tmax > 6)
    normal = tissue & (study.Tmax < 4)
    ratio = {}
    for method in ("bsvd", "ssvd"):
        cbf = compute_maps(series, study.pwi_time_step, brain, aif=aif, method=method)[0].CBF
        ratio[method] = np.median(cbf[late]) / np.median(cbf[normal])
    right = "lower" if ratio["ssvd"] < ratio["bsvd"] else "higher"
    why = (
        f"delayed / normal CBF is {ratio['ssvd']:.2f} with plain SVD and {ratio['bsvd']:.2f} with "
        "block-circulant SVD: plain SVD reads the delay as a slower residue"
    )
    return _say(answer.strip().lower() == right, why)


def check_voxel_noise(study: Study, answer_hu: float) -> bool:
    """Chapter 1, exercise 4: the standard deviation (HU) of a single tissue voxel's baseline
    frames, before the bolus arrives (within 30 %)."""
    tissue = tissue_mask(study.CT, brain_mask(study))
    baseline = study.pwi[tissue][:, :4].astype(np.float32)
    sd = float(np.median(baseline.std(axis=1, ddof=1)))
    return _say(_close(answer_hu, sd, 0.3 * sd), f"the median voxel's baseline SD is {sd:.1f} HU")


# --- chapter 2 -------------------------------------------------------------------------------------


def attention_parameters(widths=PAPER_WIDTHS, in_channels: int = 5) -> int:
    """Parameters of the five attention modules of a network of ``widths``."""
    with_att = CrossAttentionAutoencoder(in_channels, widths, attention=True)
    return count_parameters(with_att) - count_parameters(
        CrossAttentionAutoencoder(in_channels, widths, attention=False)
    )


def check_attention_parameters(answer: int) -> bool:
    """Chapter 2, exercise 1: how many parameters the five attention modules of the paper's
    network hold (within 1 %)."""
    n = attention_parameters()
    total = count_parameters(CrossAttentionAutoencoder(5, PAPER_WIDTHS))
    return _say(_close(answer, n, 0.01 * n), f"{n:,} parameters, {100 * n / total:.1f} % of the network's {total:,}")


def check_most_lesion_shaped_level(masks: np.ndarray, maps: dict[int, np.ndarray], answer: int) -> bool:
    """Chapter 2, exercise 2: the decoder level whose attention (resized to the slice) separates
    lesion from background best (largest mean-attention difference, over the example slices)."""
    import torch
    import torch.nn.functional as F

    contrast = {}
    for level, a in maps.items():
        up = F.interpolate(torch.as_tensor(a)[:, None].float(), size=masks.shape[-2:], mode="bilinear")[:, 0].numpy()
        lesion = masks.astype(bool)
        contrast[level] = float(up[lesion].mean() - up[~lesion].mean()) if lesion.any() else 0.0
    best = max(contrast, key=contrast.get)
    table = ", ".join(f"level {k}: {v:+.3f}" for k, v in sorted(contrast.items()))
    return _say(int(answer) == best, f"lesion minus background attention, {table}")


# --- chapter 3 -------------------------------------------------------------------------------------


def check_balanced_weights_loss(model, image, mask, answer: str) -> bool:
    """Chapter 3, exercise 2: with class weights 0.5 / 0.5 instead of 0.7 / 0.3, does the loss of
    the trained model on this slice go ``"up"`` or ``"down"``?"""
    import torch

    from .loss import LEVEL_WEIGHTS, class_weights, weighted_bce

    with torch.no_grad():
        levels = model.eval()(image, levels=True).levels
    loss = {
        w: sum(lw * weighted_bce(y, mask, class_weights(mask, *w)) for lw, y in zip(LEVEL_WEIGHTS, levels)).item()
        for w in ((0.7, 0.3), (0.5, 0.5))
    }
    right = "up" if loss[(0.5, 0.5)] > loss[(0.7, 0.3)] else "down"
    why = (
        f"{loss[(0.7, 0.3)]:.4f} at 0.7/0.3 and {loss[(0.5, 0.5)]:.4f} at 0.5/0.5: the background, which the "
        "model gets right, now weighs more than the lesion it finds harder"
    )
    return _say(answer.strip().lower() == right, why)


# --- chapters 4 and 5 ------------------------------------------------------------------------------


def check_leak(leak: dict[str, float], answer: str) -> bool:
    """Chapter 4: which synthetic map hands stage 2 more of the answer on the training slices,
    ``"in-sample"`` or ``"out-of-fold"`` (from :func:`stroke_helpers.chapters.leakage`)?"""
    missing = {"in-sample", "out-of-fold"} - set(leak)
    if missing:
        raise ValueError(
            f"leak has no {' or '.join(sorted(missing))} figure: `python -m stroke_helpers reproduce` trains both cascades"
        )
    right = max(("in-sample", "out-of-fold"), key=lambda k: leak[k])
    table = ", ".join(f"{k} {v:.3f}" for k, v in leak.items())
    return _say(answer.strip().lower() == right, f"Dice of Ms > 0.5 against the lesions: {table}")


def check_volume_effect(results: str | Path, run: str, answer: str) -> bool:
    """Chapter 5, exercise 1: do small lesions score ``"lower"`` or ``"higher"`` Dice than large
    ones (a run's validation studies, split at their median lesion volume)?"""
    metrics = load_run_metrics(Path(results), run, "val")
    if metrics is None:
        raise FileNotFoundError(f"{results}: no evaluated run {run}")
    dice = np.array([r["dice"] for r in metrics["studies"]])
    volume = np.array([r["lesion_ml"] for r in metrics["studies"]])
    median = np.median(volume)
    small, large = dice[volume <= median].mean(), dice[volume > median].mean()
    right = "lower" if small < large else "higher"
    why = f"mean Dice {small:.2f} for lesions up to {median:.1f} mL, {large:.2f} above: one voxel of error weighs more in a small lesion"
    return _say(answer.strip().lower() == right, why)


def check_truth_in_penumbra(data: str | Path, study: Study, answer_percent: float) -> bool:
    """Chapter 1: what share of the expert mask lies inside the true core + penumbra (within 5 points)?"""
    truth = read_truth(data, study.name)
    ot = study.mask.astype(bool)
    share = 100 * float((ot & (truth["core"] | truth["penumbra"]).astype(bool)).sum()) / max(int(ot.sum()), 1)
    return _say(_close(answer_percent, share, 5), f"{share:.0f} % of {study.name}'s expert mask")
