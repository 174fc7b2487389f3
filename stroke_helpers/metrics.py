"""Per-study segmentation metrics at the study's native resolution (docs/decisions.md §1, Evaluation).

All take boolean ``(X, Y, Z)`` volumes of one study; distances use the voxel spacing (mm) and
volumes the voxel volume (mL). The ISLES challenge ranks on these five.

Empty-mask conventions (real ISLES 2018 training studies all have a lesion, but a model may
predict nothing, and a hand-made study may have no lesion):

- **Dice**: 1 when both masks are empty (nothing to find, nothing found), else
  ``2|P & T| / (|P| + |T|)``.
- **precision** ``|P & T| / |P|``: 1 when both are empty, 0 when only the prediction is empty
  (a model that finds nothing gets no credit).
- **recall** ``|P & T| / |T|``: 1 when the truth is empty.
- **HD95**: symmetric 95th-percentile Hausdorff distance between the two surfaces, as MONAI
  computes it: the larger of the two directed 95th percentiles of surface-to-surface distance.
  0 when both are empty, NaN when exactly one is (summaries average the finite values and say
  how many there were).
- **AVD**: absolute volume difference ``| |P| - |T| |`` in mL.

Lesion-wise, as the ISLES 2024 challenge scores (:func:`lesion_metrics`, docs/decisions.md §7):

- **lesion F1**: each mask cut into connected lesions, predicted and true lesions matched one
  to one, F1 = ``TP / (TP + (FP + FN) / 2)`` over lesions; 1 when both masks are empty.
- **lesion-count difference**: ``| #true lesions - #predicted lesions |``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

METRICS = ("dice", "precision", "recall", "hd95", "avd")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth.astype(bool)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * (p & t).sum() / total)


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any():
        return 1.0 if not t.any() else 0.0
    return float((p & t).sum() / p.sum())


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth.astype(bool)
    return 1.0 if not t.any() else float((p & t).sum() / t.sum())


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: in the mask, with a face neighbour outside it (or at the array edge)."""
    return mask & ~ndimage.binary_erosion(mask)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (see the module docstring)."""
    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return math.nan
    sp, st = surface(p), surface(t)
    # every surface voxel lies in the box around both surfaces, so the distances between them are
    # the same in that box: transform only the box (exact, and 5-20x less work for small lesions)
    box = ndimage.find_objects((sp | st).astype(np.uint8))[0]
    sp, st = sp[box], st[box]
    to_t = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


def avd(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """Absolute volume difference in mL."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return abs(int(pred.astype(bool).sum()) - int(truth.astype(bool).sum())) * voxel_ml


#: Lesion-wise scores of the ISLES 2024 challenge (:func:`lesion_metrics`).
LESION_METRICS = ("lesion_f1", "lesion_count_diff")
#: IoU a predicted and a true lesion need to be matched. The challenge's ``utils/eval_utils.py``
#: (ezequieldlrosa/isles24) sets 0.2 since its commit 94b3486 (16 Dec 2025); before it, panoptica's
#: default of 0.5 applied.
LESION_IOU = 0.2


def lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected lesions of a mask: labels and count. Voxels touching by a face, an edge or a
    corner are one lesion in 3D (26-connectivity, cc3d's default, which the challenge's panoptica
    uses for 3D arrays); a 2D mask is cut by its 4 face neighbours (scipy's default, likewise)."""
    mask = np.asarray(mask).astype(bool)
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim if mask.ndim >= 3 else 1)
    return ndimage.label(mask, structure=structure)


def match_lesions(pred: np.ndarray, truth: np.ndarray, iou: float = LESION_IOU) -> tuple[int, int, int]:
    """``(matched, predicted, true)`` lesion counts. Every pair of overlapping lesions is scored by
    its IoU; pairs are taken greedily from the highest IoU down, each lesion matched at most once,
    while the IoU is at least ``iou`` (panoptica's ``NaiveThresholdMatching``)."""
    p_lab, n_pred = lesions(pred)
    t_lab, n_true = lesions(truth)
    both = (p_lab > 0) & (t_lab > 0)
    if not both.any():
        return 0, n_pred, n_true
    p_size = np.bincount(p_lab.ravel(), minlength=n_pred + 1)
    t_size = np.bincount(t_lab.ravel(), minlength=n_true + 1)
    pairs, overlap = np.unique(np.stack([t_lab[both], p_lab[both]]), axis=1, return_counts=True)
    scores = overlap / (t_size[pairs[0]] + p_size[pairs[1]] - overlap)
    matched_t, matched_p = set(), set()
    for k in sorted(range(len(scores)), key=lambda k: -scores[k]):  # stable: ties keep (true, pred) order
        t, p = int(pairs[0, k]), int(pairs[1, k])
        if t in matched_t or p in matched_p or scores[k] < iou:
            continue
        matched_t.add(t)
        matched_p.add(p)
    return len(matched_t), n_pred, n_true


def lesion_f1(pred: np.ndarray, truth: np.ndarray, iou: float = LESION_IOU) -> float:
    """Lesion-wise F1 (:func:`match_lesions`): ``TP / (TP + (FP + FN) / 2)``; 1 when both masks
    are empty, 0 when no lesion is matched."""
    return lesion_metrics(pred, truth, iou)["lesion_f1"]


def lesion_count_diff(pred: np.ndarray, truth: np.ndarray) -> int:
    """``| #true lesions - #predicted lesions |`` (:func:`lesions`)."""
    return abs(lesions(truth)[1] - lesions(pred)[1])


def lesion_metrics(pred: np.ndarray, truth: np.ndarray, iou: float = LESION_IOU) -> dict[str, float]:
    """Both :data:`LESION_METRICS` for one study, with one connected-component pass per mask."""
    tp, n_pred, n_true = match_lesions(pred, truth, iou)
    f1 = 1.0 if n_pred + n_true == 0 else float(tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_true - tp)))
    return {"lesion_f1": f1, "lesion_count_diff": abs(n_true - n_pred)}


def study_metrics(pred: np.ndarray, truth: np.ndarray, spacing) -> dict[str, float]:
    """All of :data:`METRICS` for one study."""
    return {
        "dice": dice(pred, truth),
        "precision": precision(pred, truth),
        "recall": recall(pred, truth),
        "hd95": hd95(pred, truth, spacing),
        "avd": avd(pred, truth, spacing),
    }


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, std (population, as the paper's tables) and count of the finite values per metric
    (:data:`METRICS`, and :data:`LESION_METRICS` when the rows carry them)."""
    out = {}
    for m in (*METRICS, *(m for m in LESION_METRICS if rows and all(m in r for r in rows))):
        v = np.array([r[m] for r in rows], float)
        v = v[np.isfinite(v)]
        out[m] = {
            "mean": float(v.mean()) if len(v) else math.nan,
            "std": float(v.std()) if len(v) else math.nan,
            "n": int(len(v)),
        }
    return out


def threshold_sweep(probabilities: list[np.ndarray], truths: list[np.ndarray], thresholds: np.ndarray):
    """Mean per-study Dice and precision at each threshold: two arrays like ``thresholds``."""
    d = np.array([[dice(p > t, m) for p, m in zip(probabilities, truths)] for t in thresholds]).mean(axis=1)
    pr = np.array([[precision(p > t, m) for p, m in zip(probabilities, truths)] for t in thresholds]).mean(axis=1)
    return d, pr


# --- uncertainty over studies ------------------------------------------------------------------

BOOTSTRAP = 10_000  # resamples; the 2.5 / 97.5 percentiles vary by < 0.005 Dice between seeds at this count
MIN_STUDIES = 10  # below this a bootstrap interval says more about the resampling than the studies


def bootstrap_ci(values, n: int = BOOTSTRAP, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over studies (NaNs dropped)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (math.nan, math.nan)
    means = v[np.random.default_rng(seed).integers(0, len(v), (n, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_difference(a: dict[str, float], b: dict[str, float], n: int = BOOTSTRAP, seed: int = 0) -> dict:
    """The mean per-study difference ``a - b`` over the studies both score, with its paired
    bootstrap 95 % interval (studies resampled together, so between-study spread cancels).

    ``a``, ``b``: ``{study: value}``. ``resolved`` says whether the interval excludes 0."""
    studies = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in studies], float)
    lo, hi = bootstrap_ci(d, n, seed)
    mean = float(d.mean()) if len(d) else math.nan
    resolved = len(studies) >= MIN_STUDIES and bool(lo > 0 or hi < 0)
    return {"mean": mean, "low": lo, "high": hi, "n": len(studies), "resolved": resolved}
