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


#: Words a student may use for a direction, mapped to the two the checks compare.
_DIRECTIONS = {
    "lower": ("lower", "low", "less", "smaller", "down", "decreases", "decrease", "falls", "drops", "lowered"),
    "higher": ("higher", "high", "more", "larger", "bigger", "up", "increases", "increase", "rises", "raised"),
}


def _direction(answer: str) -> str | None:
    """``"lower"`` or ``"higher"`` for any of the words in :data:`_DIRECTIONS`, else None."""
    word = str(answer).strip().lower().rstrip(".!")
    return next((d for d, words in _DIRECTIONS.items() if word in words), None)


# --- chapter 1 -------------------------------------------------------------------------------------


def check_largest_lesion(data: str | Path, case: str | float, onset_min: float) -> bool:
    """Chapter 1, exercise 1: which training study has the largest lesion, and its time from
    onset to CT (within 10 min), from the phantom's truth table. ``case`` is the study
    (``"case_12"``, ``"TRAINING/case_12"`` or its number ``12``); a volume in mL (within 10 %)
    is accepted too, as in the first version of the exercise."""
    rows = [r for r in read_cases(data) if r["split"] == "TRAINING"]
    largest = max(rows, key=lambda r: float(r["lesion_ml"]))
    ml, onset = float(largest["lesion_ml"]), float(largest["onset_to_ct_min"])
    name = str(largest["case"])
    if isinstance(case, str):
        given = case.strip().split("/")[-1]
        right_case = given == name or given == name.split("_")[-1]
    elif isinstance(case, (int, np.integer)):
        right_case = str(case) == name.split("_")[-1]
    else:
        right_case = _close(case, ml, 0.1 * ml)
    ok = right_case and _close(onset_min, onset, 10)
    return _say(ok, f"the largest lesion is TRAINING/{name}: {ml:.1f} mL, scanned {onset:.0f} min after onset")


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
    block-circulant SVD where the bolus arrives late? Measured where it arrives latest (Tmax > 10 s,
    the severe zone): the longer the delay, the more plain SVD mistakes it for a slow residue,
    while a few seconds' delay moves it little."""
    series, brain = study.pwi.astype(np.float32), brain_mask(study)
    aif = select_aif(series, brain)[0]
    tissue = tissue_mask(study.CT, brain)
    late = tissue & (study.Tmax > 10)
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
    return _say(_direction(answer) == right, why)


def check_voxel_noise(study: Study, answer_hu: float) -> bool:
    """Chapter 1, exercise 4: the standard deviation (HU) of a single tissue voxel's baseline
    frames (the first four, before the bolus arrives).

    Four frames give a noisy estimate: one voxel's SD varies by about 40 % around the noise level
    from voxel to voxel, so the answer of *any* tissue voxel must be right. Accepted: anything
    between the 2.5th and the 97.5th percentile of the voxels' SDs (with ``ddof=1`` or numpy's
    default ``ddof=0``). The variance or the generator's white-noise level before its smoothing
    lie outside."""
    tissue = tissue_mask(study.CT, brain_mask(study))
    baseline = study.pwi[tissue][:, :4].astype(np.float32)
    sds = np.concatenate([baseline.std(axis=1, ddof=1), baseline.std(axis=1, ddof=0)])
    lo, hi = (float(v) for v in np.percentile(sds, [2.5, 97.5]))
    median = float(np.median(baseline.std(axis=1, ddof=1)))
    ok = lo <= float(answer_hu) <= hi
    return _say(
        ok,
        f"a tissue voxel's baseline SD is {median:.1f} HU at the median, and 95 % of voxels give "
        f"{lo:.1f}-{hi:.1f} HU (four frames make a rough estimate)",
    )


def check_short_acquisition_mtt(study: Study, answer: str, frames: int = 35) -> bool:
    """Chapter 1, exercise 6: recomputed from the series' first ``frames`` frames only, is MTT
    ``"lower"`` or ``"higher"`` where the bolus arrives late (Tmax > 10 s, the severe zone),
    relative to normal tissue (Tmax < 4 s), than from the whole series? Lower: a late, long curve
    outlasts the shorter acquisition, so CBV loses its tail and MTT = CBV / CBF shrinks
    (docs/decisions.md §6, "Why MTT misses its range")."""
    series, brain = study.pwi.astype(np.float32), brain_mask(study)
    tissue = tissue_mask(study.CT, brain)
    late, normal = tissue & (study.Tmax > 10), tissue & (study.Tmax < 4)
    if not frames < series.shape[-1]:
        raise ValueError(f"{study.name}: its series has {series.shape[-1]} frames; cut it to fewer, not {frames}")
    if not late.any():
        raise ValueError(f"{study.name}: no tissue with Tmax > 10 s to measure; take a study with a larger lesion")
    ratio = {}
    for n in (series.shape[-1], frames):
        cut = series[..., :n]
        mtt = compute_maps(cut, study.pwi_time_step, brain, aif=select_aif(cut, brain)[0])[0].MTT
        ratio[n] = np.median(mtt[late]) / np.median(mtt[normal])
    whole, short = ratio[series.shape[-1]], ratio[frames]
    right = "lower" if short < whole else "higher"
    why = (
        f"late / normal MTT is {short:.2f} from the first {frames} frames and {whole:.2f} from all "
        f"{series.shape[-1]}: the late curves outlast the short acquisition, and CBV loses their tail"
    )
    return _say(_direction(answer) == right, why)


# --- chapter 2 -------------------------------------------------------------------------------------


def attention_parameters(widths=PAPER_WIDTHS, in_channels: int = 5) -> int:
    """Parameters of the five attention modules of a network of ``widths``."""
    with_att = CrossAttentionAutoencoder(in_channels, widths, attention=True)
    return count_parameters(with_att) - count_parameters(
        CrossAttentionAutoencoder(in_channels, widths, attention=False)
    )


def _gate_parameters(widths, inner_of=lambda c_e: c_e, decoder_of=None) -> int:
    """Parameters of the gates of ``widths`` counted from eq. (1): ``W_e (C_e -> F)``,
    ``W_d (C_d -> F)``, ``W_phi (F -> 1)``, each with a bias; ``C_d`` = ``decoder_of(i)``."""
    total = 0
    for i in range(len(widths) - 1):
        c_e, f = widths[i], inner_of(widths[i])
        c_d = widths[i + 1] if decoder_of is None else decoder_of(i)
        total += (c_e * f + f) + (c_d * f + f) + (f + 1)
    return total


def check_attention_parameters(answer: int) -> bool:
    """Chapter 2, exercise 1: how many parameters the five attention modules of the paper's
    network hold (within 1 %: forgetting the biases is within it). At level ``l`` the skip ``X_e``
    has ``w_l`` channels and ``X_d``, the level below upsampled, ``w_(l+1) = 2 w_l`` (the exercise
    says so); a count with ``X_d`` as wide as ``X_e`` is refused with that reason."""
    n = attention_parameters()
    total = count_parameters(CrossAttentionAutoencoder(5, PAPER_WIDTHS))
    ok = _close(answer, n, 0.01 * n)
    why = f"{n:,} parameters, {100 * n / total:.1f} % of the network's {total:,}"
    same_width = _gate_parameters(PAPER_WIDTHS, decoder_of=lambda i: PAPER_WIDTHS[i])
    if not ok and _close(answer, same_width, 0.01 * same_width):
        why += f"; {same_width:,} counts X_d with C_e channels, but X_d comes from the level below: 2 C_e"
    return _say(ok, why)


def separation(values: np.ndarray, lesion: np.ndarray) -> float:
    """How well ``values`` separate lesion from the rest: ``|AUC - 0.5| * 2`` in [0, 1] (1: a
    threshold splits them perfectly, higher or lower inside; 0: the same distribution)."""
    from scipy.stats import rankdata

    n1, n0 = int(lesion.sum()), int((~lesion).sum())
    if n1 == 0 or n0 == 0:
        return 0.0
    ranks = rankdata(values)
    auc = (ranks[lesion].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(abs(auc - 0.5) * 2)


def level_separation(masks: np.ndarray, maps: dict[int, np.ndarray], brains: np.ndarray | None = None) -> dict:
    """Per decoder level, how far its attention (resized to the slice) sets the lesion apart from
    the rest of the **brain** over the example slices: ``separation = |mean inside - mean
    outside|`` (higher *or* lower inside: a gate that dims the lesion separates it too), with the
    two means. ``brains (N, S, S)``: where to score (without it, the whole slice: the air around
    the head then counts as background, and a gate that is low outside the head wins)."""
    import torch
    import torch.nn.functional as F

    lesion = masks.astype(bool)
    region = np.ones_like(lesion) if brains is None else brains.astype(bool) | lesion
    out = {}
    for level, a in maps.items():
        up = F.interpolate(torch.as_tensor(a)[:, None].float(), size=masks.shape[-2:], mode="bilinear")[:, 0].numpy()
        v, les = up[region], lesion[region]
        inside = float(v[les].mean()) if les.any() else float("nan")
        outside = float(v[~les].mean()) if (~les).any() else float("nan")
        sep = abs(inside - outside) if les.any() and (~les).any() else 0.0
        out[level] = {"separation": sep, "inside": inside, "outside": outside}
    return out


#: Levels whose separations differ by less than this are a tie: each is a right answer.
LEVEL_TIE = 0.02


def check_most_lesion_shaped_level(
    masks: np.ndarray, maps: dict[int, np.ndarray], answer: int, brains: np.ndarray | None = None
) -> bool:
    """Chapter 2, exercise 2: the decoder level whose attention (resized to the slice) separates
    lesion from the rest of the brain best, over the example slices, whether it is higher or
    lower inside the lesion (:func:`level_separation`; levels within :data:`LEVEL_TIE` of the
    best are all right). Pass ``brains`` (``examples.brains``) to score inside the brain."""
    sep = level_separation(masks, maps, brains)
    best = max(v["separation"] for v in sep.values())
    right = [k for k, v in sep.items() if v["separation"] >= best - LEVEL_TIE]
    table = ", ".join(
        f"level {k}: {v['separation']:.3f} ({'higher' if v['inside'] > v['outside'] else 'lower'} inside)"
        for k, v in sorted(sep.items())
    )
    where = "within the brain" if brains is not None else "over the whole slice"
    return _say(int(answer) in right, f"|mean attention inside - outside the lesion| {where}: {table}")


def _gate_inputs(skip_channels: int, decoder_channels: int, seed: int):
    """The package's gate with random weights and biases, and a random ``(X_e, X_d)`` pair."""
    import torch

    from .model import AdditiveCrossAttention

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = AdditiveCrossAttention(skip_channels, decoder_channels).eval()
        with torch.no_grad():
            for conv in (ref.w_e, ref.w_d, ref.w_phi):
                conv.bias.normal_(0, 0.5)
        x_e = torch.randn(2, skip_channels, 12, 10)
        x_d = torch.randn(2, decoder_channels, 12, 10)
    return ref, x_e, x_d


def _as_matrix(weight):
    """A 1x1 convolution's weight ``(out, in, 1, 1)`` as ``(out, in)``."""
    return weight.reshape(weight.shape[0], weight.shape[1])


def _load_gate(student, ref, transpose: bool = False) -> str | None:
    """Copy ``ref``'s three projections into ``student``'s ``w_e``, ``w_d`` and ``w_phi`` (each an
    ``nn.Conv2d`` of kernel 1, an ``nn.Linear`` or a weight tensor ``(out, in)``, then with biases
    ``b_e``, ``b_d``, ``b_phi``; ``transpose``: tensors stored ``(in, out)``). ``W_e`` and ``W_d``
    add, so one bias on either of them holds both. A message when it cannot, else None."""
    import torch
    from torch import nn

    missing = [n for n in ("w_e", "w_d", "w_phi") if getattr(student, n, None) is None]
    if missing:
        return f"your module has no {', '.join(missing)}: name its three projections w_e, w_d and w_phi"
    biases = {}
    with torch.no_grad():
        for name in ("w_e", "w_d", "w_phi"):
            layer, conv = getattr(student, name), getattr(ref, name)
            w = _as_matrix(conv.weight)
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                target, bias = layer.weight, layer.bias
            elif isinstance(layer, torch.Tensor):
                target, bias = layer, getattr(student, "b" + name[1:], None)
                w = w.T if transpose else w
            else:
                return f"{name} is a {type(layer).__name__}: make it an nn.Conv2d(kernel 1), nn.Linear or a tensor"
            if target.numel() != w.numel():
                return f"{name} holds {target.numel()} weights, the package's {w.numel()}: check its channels"
            target.copy_(w.reshape(target.shape))
            biases[name] = bias
        sums = {"w_e": ref.w_e.bias + ref.w_d.bias, "w_d": ref.w_e.bias + ref.w_d.bias, "w_phi": ref.w_phi.bias}
        if biases["w_e"] is not None and biases["w_d"] is not None:
            sums["w_e"], sums["w_d"] = ref.w_e.bias, ref.w_d.bias
        for name, bias in biases.items():
            if bias is not None:
                if bias.numel() != sums[name].numel():
                    return f"{name}'s bias holds {bias.numel()} values, the package's {sums[name].numel()}"
                bias.copy_(sums[name].reshape(bias.shape))
    return None


def _first(out):
    """The refined skip of a gate's output: the tensor itself, or the first of a tuple."""
    return out[0] if isinstance(out, (tuple, list)) else out


def check_attention_gate(answer, skip_channels: int = 8, decoder_channels: int = 16, seed: int = 0) -> bool:
    """Chapter 2, exercise 3: your additive cross-attention gate against the package's
    :class:`~stroke_helpers.model.AdditiveCrossAttention`, with the same weights, on random
    ``X_e (2, 8, 12, 10)`` and ``X_d (2, 16, 12, 10)``.

    ``answer`` is either

    - a module class ``Gate(skip_channels, decoder_channels)`` with projections named ``w_e``,
      ``w_d``, ``w_phi`` (``nn.Conv2d`` of kernel 1, ``nn.Linear`` over channels, or weight
      tensors ``(out, in)`` with biases ``b_e``, ``b_d``, ``b_phi``); the check builds it and
      copies the package module's weights into it, or
    - a function ``gate(x_e, x_d, m)`` that computes the gate from the package module ``m``'s
      weights (``m.w_e.weight``, ``m.w_e.bias``, ...), e.g. with ``F.conv2d`` or ``einsum``.

    Either returns ``X'_e``, or a tuple that starts with it (and may go on with the map ``a``).
    Any order of the operations that computes eq. (1) passes (to rounding: 1e-5). The student's
    random state is left as it was."""
    import torch

    with torch.random.fork_rng():
        return _check_attention_gate(answer, skip_channels, decoder_channels, seed)


def _check_attention_gate(answer, skip_channels: int, decoder_channels: int, seed: int) -> bool:
    import torch
    from torch import nn

    ref, x_e, x_d = _gate_inputs(skip_channels, decoder_channels, seed)
    with torch.no_grad():
        expected = ref(x_e, x_d)
    attempts = []
    if isinstance(answer, type) and issubclass(answer, nn.Module):
        for transpose in (False, True):
            try:
                student = answer(skip_channels, decoder_channels)
            except TypeError as exc:
                return _say(False, f"build it as Gate(skip_channels, decoder_channels): {exc}")
            problem = _load_gate(student, ref, transpose)
            if problem:
                return _say(False, problem)
            attempts.append(lambda s=student: s.eval()(x_e, x_d))
    elif callable(answer) and not isinstance(answer, nn.Module):
        attempts.append(lambda: answer(x_e, x_d, ref))
    else:
        return _say(False, "pass your module class (not an instance) or a function gate(x_e, x_d, m)")
    why = "the same weights give a different X'_e"
    for attempt in attempts:
        try:
            with torch.no_grad():
                out = attempt()
        except Exception as exc:  # the student's code: say what it raised, in one line
            return _say(False, f"it raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        refined = _first(out)
        if not isinstance(refined, torch.Tensor):
            return _say(False, f"it returned a {type(refined).__name__}; return X'_e (a tensor) first")
        if refined.shape != expected.refined.shape:
            why = f"X'_e has shape {tuple(refined.shape)}, the package's {tuple(expected.refined.shape)}"
            if refined.shape == expected.attention.shape:
                why += ": that is the map a; the gate returns X_e * a"
            elif refined.shape == x_d.shape:
                why += ": gate the skip X_e, not X_d"
            continue
        if torch.allclose(refined.float(), expected.refined, atol=1e-5, rtol=1e-4):
            extra = ""
            if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
                if out[1].shape == expected.attention.shape and not torch.allclose(
                    out[1].float(), expected.attention, atol=1e-5
                ):
                    return _say(False, "X'_e is right but the map you return second is not sigmoid(W_phi q)")
                extra = " (and your map a too)"
            return _say(True, f"X'_e matches the package's module to 1e-5 on random inputs{extra}")
        no_relu = x_e * torch.sigmoid(ref.w_phi(ref.w_e(x_e) + ref.w_d(x_d)))
        if torch.allclose(refined.float(), no_relu, atol=1e-5):
            why = "it matches the gate without the ReLU: q = relu(W_e X_e + W_d X_d)"
    return _say(False, why)


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
    right = "higher" if loss[(0.5, 0.5)] > loss[(0.7, 0.3)] else "lower"
    why = (
        f"{loss[(0.7, 0.3)]:.4f} at 0.7/0.3 and {loss[(0.5, 0.5)]:.4f} at 0.5/0.5: the background, which the "
        "model gets right, now weighs more than the lesion it finds harder"
    )
    return _say(_direction(answer) == right, why)


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
    text = str(answer).strip().lower()
    given = "out-of-fold" if ("fold" in text or text == "oof") else "in-sample" if "sample" in text else text
    return _say(given == right, f"Dice of Ms > 0.5 against the lesions: {table}")


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
    return _say(_direction(answer) == right, why)


def check_truth_in_penumbra(data: str | Path, study: Study, answer_percent: float) -> bool:
    """Chapter 1: what share of the expert mask lies inside the true core + penumbra (within 5 points)?"""
    truth = read_truth(data, study.name)
    ot = study.mask.astype(bool)
    share = 100 * float((ot & (truth["core"] | truth["penumbra"]).astype(bool)).sum()) / max(int(ot.sum()), 1)
    return _say(_close(answer_percent, share, 5), f"{share:.0f} % of {study.name}'s expert mask")
