"""CT perfusion by indicator dilution: forward model, SVD deconvolution, maps, thresholds.

The indicator-dilution model (Østergaard 1996) relates the tissue enhancement ``C(t)`` (HU) to
the arterial input function ``AIF(t)`` (HU)::

    C(t) = rho / k_H * CBF / 6000 * (AIF ⊗ R)(t - delay)

with ``CBF`` in ml/100 g/min, ``rho = 1.04`` g/ml, ``k_H = 0.73`` (large/small-vessel
haematocrit), and ``R`` the residue function (here exponential, ``R(t) = exp(-t / MTT)``),
optionally convolved with a dispersion kernel ``exp(-t / tau) / tau`` in ischaemic tissue. The
central volume theorem links the three: ``MTT = 60 * CBV / CBF`` (s, ml/100 g, ml/100 g/min).

Deconvolution recovers ``CBF * R(t)`` from the sampled curves:

- :func:`ssvd_inverse`, plain truncated SVD of the lower-triangular (causal) convolution matrix;
  a tissue delay makes it underestimate CBF;
- :func:`bsvd_inverse`, block-circulant SVD (Wu 2003): zero-pad to ``2N`` so the circular
  convolution can absorb a delay, which makes CBF delay-insensitive;
- ``method="osvd"`` in :func:`deconvolve`, block-circulant with a per-voxel truncation chosen by
  the oscillation index.

Every function is vectorised over voxels (curves are the last axis, or rows of a 2D array):
``python benchmarks/perfusion_bench.py`` measures voxel curves per second.

A caveat worth teaching: truncating the SVD smooths the recovered residue, and an exponential
residue peaks sharply at ``t = 0``, so ``max R`` (hence CBF) comes out 30-45 % low in absolute
terms. The bias is similar across tissues, so relative CBF (to normal tissue) is what to use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

RHO = 1.04  # brain tissue density, g/ml
K_H = 0.73  # haematocrit correction, large vs small vessels


# --- forward model -------------------------------------------------------------------------


def gamma_variate(t, t0: float = 6.0, alpha: float = 3.0, beta: float = 2.0, peak: float = 350.0) -> np.ndarray:
    """Gamma-variate bolus ``((t - t0)/(alpha beta))^alpha exp(alpha - (t - t0)/beta)``, max = ``peak``.

    It peaks at ``t0 + alpha * beta`` (12 s for the defaults) and is 0 before ``t0``.
    """
    s = np.clip((np.asarray(t, dtype=np.float64) - t0) / (alpha * beta), 0, None)
    return peak * s**alpha * np.exp(alpha * (1 - s))


def arterial_input(
    t, t0=6.0, alpha=3.0, beta=2.0, peak=350.0, recirculation: float = 0.0, recirculation_delay: float = 10.0
) -> np.ndarray:
    """AIF: a gamma-variate first pass plus an optional recirculation bump, twice as broad, of
    relative height ``recirculation`` (e.g. 0.15), starting ``recirculation_delay`` s after the first."""
    aif = gamma_variate(t, t0, alpha, beta, peak)
    if recirculation:
        aif = aif + gamma_variate(t, t0 + recirculation_delay, alpha, 2 * beta, recirculation * peak)
    return aif


def residue(t, mtt, dispersion: float = 0.0) -> np.ndarray:
    """Exponential residue ``exp(-t/MTT)``, convolved with ``exp(-t/tau)/tau`` when ``dispersion = tau > 0``.

    ``t`` must be a uniform grid starting at 0. The dispersed residue keeps unit area per MTT
    (its integral is still ``MTT``), so CBV is unchanged by dispersion.
    """
    t = np.asarray(t, dtype=np.float64)
    r = np.exp(-t / mtt)
    if dispersion > 0:
        dt = t[1] - t[0]
        kernel = np.exp(-t / dispersion) / dispersion * dt
        r = np.convolve(r, kernel / kernel.sum())[: len(t)]
    return r


def tissue_curve(t_fine, aif_fine, cbf, mtt, delay=0.0, dispersion=0.0) -> np.ndarray:
    """Tissue enhancement (HU) on the fine grid ``t_fine`` for one voxel's CBF (ml/100 g/min),
    MTT (s), delay (s) and dispersion (s) — the forward model of docs/decisions.md §6, by direct convolution."""
    dt = t_fine[1] - t_fine[0]
    r = residue(t_fine, mtt, dispersion)
    conv = np.convolve(aif_fine, r)[: len(t_fine)] * dt
    shifted = np.interp(t_fine - delay, t_fine, conv, left=0.0)
    return RHO / K_H * cbf / 6000.0 * shifted


# --- deconvolution -------------------------------------------------------------------------


def _truncated_pinv(matrix: np.ndarray, threshold: float) -> np.ndarray:
    u, s, vt = np.linalg.svd(matrix)
    s_inv = np.where(s >= threshold * s.max(), 1.0 / s, 0.0)
    return (vt.T * s_inv) @ u.T


def ssvd_inverse(aif: np.ndarray, dt: float, threshold: float = 0.2) -> np.ndarray:
    """Truncated pseudo-inverse ``(N, N)`` of the causal convolution matrix ``A_ij = dt AIF_{i-j}``."""
    n = len(aif)
    idx = np.arange(n)[:, None] - np.arange(n)[None, :]
    a = np.where(idx >= 0, np.asarray(aif, np.float64)[np.clip(idx, 0, None)], 0.0) * dt
    return _truncated_pinv(a, threshold)


def bsvd_inverse(aif: np.ndarray, dt: float, threshold: float = 0.1) -> np.ndarray:
    """Block-circulant truncated pseudo-inverse ``(2N, N)``: apply it to unpadded curves.

    The AIF is zero-padded to ``L = 2N`` and the circulant ``D_ij = dt AIF_{(i-j) mod L}`` inverted;
    only the first ``N`` columns are kept because the padded half of a tissue curve is zero.
    """
    n = len(aif)
    padded = np.concatenate([np.asarray(aif, np.float64), np.zeros(n)])
    idx = (np.arange(2 * n)[:, None] - np.arange(2 * n)[None, :]) % (2 * n)
    return _truncated_pinv(padded[idx] * dt, threshold)[:, :n]


def oscillation_index(r: np.ndarray) -> np.ndarray:
    """Wu 2003's oscillation index of residues ``r`` (..., L): second differences over the peak."""
    peak = np.abs(r).max(axis=-1)
    second = np.abs(r[..., 2:] - 2 * r[..., 1:-1] + r[..., :-2]).sum(axis=-1)
    return second / (r.shape[-1] * np.maximum(peak, 1e-12))


def deconvolution_matrices(
    aif: np.ndarray, dt: float, method: str = "bsvd", threshold: float = 0.1
) -> list[np.ndarray]:
    """The truncated inverse(s) :func:`deconvolve` applies: one for ``ssvd``/``bsvd``, a ladder
    of truncations (least smoothing first) for ``osvd``. Compute once per AIF, reuse per slice."""
    if method == "ssvd":
        return [ssvd_inverse(aif, dt, threshold).astype(np.float32)]
    if method == "bsvd":
        return [bsvd_inverse(aif, dt, threshold).astype(np.float32)]
    if method == "osvd":
        return [bsvd_inverse(aif, dt, p).astype(np.float32) for p in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)]
    raise ValueError(f"unknown deconvolution method {method!r}; use 'ssvd', 'bsvd' or 'osvd'")


def deconvolve(
    curves: np.ndarray,
    aif: np.ndarray,
    dt: float,
    method: str = "bsvd",
    threshold: float = 0.1,
    oi_limit: float = 0.095,
    chunk: int = 65536,
    matrices: list[np.ndarray] | None = None,
) -> np.ndarray:
    """``CBF * R(t)`` (scaled by ``rho/k_H/6000``) for every curve: ``curves`` (V, N) -> (V, N or 2N).

    ``method``: ``"ssvd"`` (causal, delay-sensitive), ``"bsvd"`` (block-circulant, truncation
    ``threshold`` relative to the largest singular value) or ``"osvd"`` (block-circulant, the
    smallest of a ladder of truncations whose residue has an oscillation index below
    ``oi_limit``, per voxel). ``matrices`` from :func:`deconvolution_matrices` skip the SVD.
    """
    curves = np.asarray(curves, dtype=np.float32)
    inverses = matrices if matrices is not None else deconvolution_matrices(aif, dt, method, threshold)
    out = np.empty((curves.shape[0], inverses[0].shape[0]), np.float32)
    for start in range(0, len(curves), chunk):
        block = curves[start : start + chunk]
        if len(inverses) == 1:
            out[start : start + chunk] = block @ inverses[0].T
            continue
        chosen = block @ inverses[-1].T
        done = np.zeros(len(block), bool)
        for inv in inverses[:-1]:  # least smoothing first
            r = block @ inv.T
            ok = ~done & (oscillation_index(r) < oi_limit)
            chosen[ok] = r[ok]
            done |= ok
        out[start : start + chunk] = chosen
    return out


# --- maps ----------------------------------------------------------------------------------


@dataclass
class PerfusionMaps:
    """Maps on the grid of the series: CBF (ml/100 g/min), CBV (ml/100 g), MTT (s), Tmax (s)."""

    CBF: np.ndarray
    CBV: np.ndarray
    MTT: np.ndarray
    Tmax: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"CBF": self.CBF, "CBV": self.CBV, "MTT": self.MTT, "Tmax": self.Tmax}


def bolus_arrival(curve: np.ndarray, fraction: float = 0.1) -> int:
    """First frame where ``curve`` (minus its first frame) exceeds ``fraction`` of its peak (>= 1)."""
    c = np.asarray(curve, np.float64) - curve[0]
    return max(int(np.argmax(c > fraction * c.max())), 1)


def select_aif(series: np.ndarray, mask: np.ndarray, n_voxels: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Pick an arterial input function automatically from a 4D series ``(X, Y, Z, T)``.

    Arteries enhance early, strongly and briefly. Candidates are voxels of ``mask`` whose peak
    enhancement (on a 3-frame moving average, to ignore noise spikes) reaches half the highest;
    among them keep those peaking within two frames of the earliest and not broader (area over
    peak) than 1.25 times the median, then the ``n_voxels`` highest (the vessel's centre, least
    diluted by partial volume), and average them. The baseline is the mean of the frames before
    the AIF's own arrival (the earliest in the brain). Returns the baseline-subtracted AIF
    ``(T,)`` and the boolean map of voxels used.
    """
    n_baseline = 2  # for ranking only: arteries rise by hundreds of HU
    raw = series[mask]
    rise = raw.max(axis=1).astype(np.float32) - raw[:, :n_baseline].mean(axis=1)
    keep = np.flatnonzero(rise >= 0.25 * rise.max())  # cheap pre-selection of bright voxels
    curves = raw[keep].astype(np.float32)
    curves -= curves[:, :n_baseline].mean(axis=1, keepdims=True)
    smooth = ndimage.uniform_filter1d(curves, 3, axis=1)
    peak = smooth.max(axis=1)
    candidates = np.flatnonzero(peak >= 0.5 * peak.max())
    ttp = smooth[candidates].argmax(axis=1)
    early = candidates[ttp <= ttp.min() + 2]
    width = np.clip(smooth[early], 0, None).sum(axis=1) / np.maximum(peak[early], 1e-6)
    narrow = early[width <= 1.25 * np.median(width)]  # drop broad (venous, dispersed) curves
    chosen = narrow[np.argsort(-peak[narrow])[:n_voxels]]  # the highest: least partial volume
    used = np.zeros(mask.shape, bool)
    used[tuple(np.argwhere(mask)[keep[chosen]].T)] = True
    aif = raw[keep[chosen]].astype(np.float32).mean(axis=0)
    return aif - aif[: bolus_arrival(aif, 0.05)].mean(), used


def bounding_box(mask2d: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """In-plane slices of the smallest box holding ``mask2d``, grown by ``margin`` voxels."""
    if not mask2d.any():
        return (slice(0, 0), slice(0, 0))
    box = []
    for axis in (1, 0):
        idx = np.flatnonzero(mask2d.any(axis=axis))
        box.append(slice(max(idx[0] - margin, 0), min(idx[-1] + margin + 1, mask2d.shape[1 - axis])))
    return tuple(box)


def deconvolution_bias(aif, dt: float, method: str, threshold: float, mtt: float, matrices=None):
    """(Tmax bias in s, CBF gain) of the deconvolution on a noise-free healthy curve built from
    ``aif`` itself: ``dt * (AIF conv exp(-t / mtt))``, whose true Tmax is 0 and CBF scale 1."""
    n = len(aif)
    t = np.arange(n) * dt
    r = np.exp(-t / mtt)
    curve = np.convolve(aif, r)[:n] * dt
    est = deconvolve(curve[None].astype(np.float32), aif, dt, method, threshold, matrices=matrices)[0]
    k = int(np.argmax(est[:n]))
    return k * dt, 1.0 / max(float(est[k]), 1e-6)


def compute_maps(
    series: np.ndarray,
    dt: float,
    mask: np.ndarray,
    aif: np.ndarray | None = None,
    method: str = "bsvd",
    threshold: float = 0.1,
    smooth_sigma: float = 1.5,
    temporal_sigma: float = 2.0,
    reference_mtt: float | None = None,
) -> tuple[PerfusionMaps, np.ndarray]:
    """Perfusion maps from a 4D series ``(X, Y, Z, T)`` in HU, within ``mask`` (0 outside).

    ``reference_mtt`` (s): correct the bias of the regularised deconvolution, measured on the
    study's own AIF (:func:`deconvolution_bias`): Tmax minus the Tmax it returns for a healthy
    curve (exponential residue of that MTT, no delay), CBF times the ratio of true to recovered
    CBF on that curve. Truncation smooths the residue's sharp peak, which moves Tmax ~3 s late
    and lowers CBF ~40 % (so MTT comes out ~2x long); the correction brings healthy tissue back to
    its true values while keeping every ratio. ``None``: uncorrected (the textbook maps).

    Steps: baseline subtraction (mean of the frames before the AIF arrives); AIF from :func:`select_aif`
    unless given (baseline-subtracted), taken before any smoothing so arteries stay sharp; light
    in-plane Gaussian smoothing of every frame (``smooth_sigma`` voxels); Gaussian smoothing in
    time (``temporal_sigma`` frames) of the tissue curves *and* the AIF — convolution commutes,
    so the residue is unchanged while the noise drops; deconvolution; then CBF = max of the
    residue, CBV = area ratio of the smoothed curves (as vendor software does: unsmoothed,
    a voxel's CBV is mostly noise in white matter), MTT = 60 CBV / CBF and Tmax = time of the residue's maximum
    (parabolic sub-frame refinement), searched over ``[0, N)`` plus the last quarter of the
    padded period (wrapped: a tissue that leads the AIF). Returns the maps and the AIF used.
    """
    mask = mask.astype(bool)
    if aif is None:
        aif, _ = select_aif(series, mask)
    aif = np.asarray(aif, np.float64)
    n_base = bolus_arrival(aif, 0.05)  # frames before the earliest (arterial) arrival
    aif_area = aif.sum() * dt
    if temporal_sigma:
        aif = ndimage.gaussian_filter1d(aif, temporal_sigma, mode="nearest")
    matrices = deconvolution_matrices(aif, dt, method, threshold)
    tmax_bias, cbf_gain = (0.0, 1.0)
    if reference_mtt:
        tmax_bias, cbf_gain = deconvolution_bias(aif, dt, method, threshold, reference_mtt, matrices)
    out = {k: np.zeros(mask.shape, np.float32) for k in ("CBF", "CBV", "MTT", "Tmax")}
    scale = K_H / RHO * 6000.0
    n = series.shape[-1]
    box = bounding_box(mask.any(axis=2), margin=int(3 * smooth_sigma) + 1)
    for z in range(series.shape[2]):
        m = mask[box + (z,)]
        if not m.any():
            continue
        s = series[box + (z,)].astype(np.float32)
        s = s - s[..., :n_base].mean(axis=-1, keepdims=True)
        if smooth_sigma or temporal_sigma:
            s = ndimage.gaussian_filter(s, (smooth_sigma, smooth_sigma, temporal_sigma), mode="nearest", truncate=3.0)
        area = s[m].sum(axis=1) * dt
        r = deconvolve(s[m], aif, dt, method, threshold, matrices=matrices)
        rows = np.arange(len(r))
        search = r.copy()
        if r.shape[1] == 2 * n:
            search[:, n : 2 * n - n // 4] = -np.inf
        k = search.argmax(axis=1)
        rmax = r[rows, k]
        left, right = r[rows, (k - 1) % r.shape[1]], r[rows, (k + 1) % r.shape[1]]
        denom = left - 2 * rmax + right
        offset = np.where(denom < 0, 0.5 * (left - right) / np.where(denom < 0, denom, -1.0), 0.0)
        tmax = np.where(k >= n, k - r.shape[1], k) + np.clip(offset, -0.5, 0.5)
        cbf = np.clip(rmax * scale * cbf_gain, 0, None)
        cbv = np.clip(K_H / RHO * 100.0 * area / aif_area, 0, None)
        out["CBF"][box + (z,)][m] = cbf
        out["CBV"][box + (z,)][m] = cbv
        out["MTT"][box + (z,)][m] = np.where(cbf > 1e-3, 60.0 * cbv / np.maximum(cbf, 1e-3), 0.0)
        out["Tmax"][box + (z,)][m] = np.clip(tmax * dt - tmax_bias, 0, None)
    return PerfusionMaps(**out), aif.astype(np.float32)


# --- classical thresholds ------------------------------------------------------------------


def tissue_mask(
    ct: np.ndarray, brain: np.ndarray, low: float = 15.0, high: float = 60.0, cbv: np.ndarray | None = None
) -> np.ndarray:
    """Brain parenchyma: the brain mask without CSF (< ``low`` HU) or calcifications (> ``high``),
    on CT smoothed in-plane by one voxel to tame its noise; with ``cbv``, also without vessels,
    whose blood (~45 HU) passes the CT window but whose CBV is several times tissue's (> 4 times
    the median)."""
    smooth = ndimage.gaussian_filter(ct.astype(np.float32), (1, 1, 0))
    tissue = brain.astype(bool) & (smooth >= low) & (smooth <= high)
    if cbv is not None and tissue.any():
        tissue &= cbv <= 4 * np.median(cbv[tissue])
    return tissue


def hemisphere_masks(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of ``brain`` split at its centre of mass along the first (left-right) axis."""
    x = np.arange(brain.shape[0])[:, None, None]
    mid = (x * brain).sum() / max(brain.sum(), 1)
    return brain & (x < mid), brain & (x >= mid)


def reference_hemisphere(cbf: np.ndarray, tissue: np.ndarray, tmax: np.ndarray, tie_s: float = 0.5) -> np.ndarray:
    """The contralateral (healthy) half of ``tissue``: the one with the lower median Tmax; when
    the medians are within ``tie_s`` seconds of each other (a small lesion, or none), the one
    with the higher median CBF, so a tie never picks the ischaemic side by accident."""
    a, b = hemisphere_masks(tissue)
    if not (a.any() and b.any()):
        return tissue
    ta, tb = np.median(tmax[a]), np.median(tmax[b])
    if abs(ta - tb) >= tie_s:
        return a if ta < tb else b
    return a if np.median(cbf[a]) >= np.median(cbf[b]) else b


def relative_cbf(cbf: np.ndarray, tissue: np.ndarray, tmax: np.ndarray | None = None) -> np.ndarray:
    """CBF relative to the mean of the contralateral (less delayed) hemisphere's tissue.

    The contralateral side is the half of ``tissue`` with the lower median Tmax; without Tmax,
    the mean of all tissue is the reference. The mean, not the median: the median of a mix of
    grey (CBF ~55) and more numerous white (~22) matter is close to white matter's value, which
    would put grey-matter core (~6) right at the 30 % threshold.
    """
    reference = tissue
    if tmax is not None:
        reference = reference_hemisphere(cbf, tissue, tmax)
    ref = float(np.mean(cbf[reference])) if reference.any() else 0.0
    return np.where(tissue, cbf / ref, 0.0) if ref > 0 else np.zeros_like(cbf, dtype=np.float64)


def core_rcbf(cbf, tissue, tmax=None, threshold: float = 0.3) -> np.ndarray:
    """Classical (RAPID-style) ischaemic core: relative CBF below ``threshold`` (30 %)."""
    return tissue & (relative_cbf(cbf, tissue, tmax) < threshold)


def hypoperfusion_tmax(tmax, tissue, threshold: float = 6.0) -> np.ndarray:
    """Classical hypoperfused tissue (core plus penumbra): Tmax above ``threshold`` seconds,
    within ``tissue`` (CSF has no perfusion, so its Tmax is noise)."""
    return tissue.astype(bool) & (tmax > threshold)
