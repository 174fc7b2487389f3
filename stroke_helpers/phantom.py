"""Digital perfusion phantom: a synthetic ISLES 2018 dataset generated the way real maps arise.

For each patient (seeded, SPEC §3):

1. **Anatomy** on the slices of one or two slabs (5 mm thick): head outline, scalp, skull, a
   folded grey-matter ribbon, white matter, caudate / lentiform / thalamus, ventricles changing
   with height, interhemispheric fissure; small rotation, shift and scale; ACA / MCA / PCA
   territories per hemisphere.
2. **Ischaemia**: an occlusion in one territory (mostly MCA) gives a delayed, hypoperfused
   region (penumbra) and a smaller irregular core inside it, sized around the ISLES median
   (15 mL), tiny lesions included.
3. **Tissue values** of SPEC §3 (CBF, CBV, delay per grey/white matter and normal / penumbra /
   core), a smooth ±10 % perfusion texture, partial volumes at every boundary.
4. **4D CT perfusion** by indicator dilution on a 0.05 s grid (gamma-variate AIF, exponential
   residue, extra dispersion in ischaemic tissue), sampled every second for 43-60 frames, on top
   of the NCCT, plus arteries and a vein, plus spatially correlated noise (8 HU per frame).
   A voxel's curve is a partial-volume mix of six tissue curves, so the forward model is one
   small matrix product per slab.
5. **Maps computed from the noisy series** (:func:`stroke_helpers.perfusion.compute_maps`,
   automatic AIF, block-circulant SVD), written in ISLES dtypes with an uncalibrated per-study
   scale for CBF and CBV, as RAPID's maps are.
6. **NCCT**: GM 38, WM 30, CSF 8 HU, skull 1000-1800 HU, a constant background, core 2-8 HU
   darker, noise 4 HU.
7. **OT**: the core grown into part of the adjacent penumbra, as a DWI lesion drawn 36 min later.

The dataset goes to ``OUT/TRAINING``, ``OUT/TESTING`` through :func:`stroke_helpers.isles.write_case`
(the loader cannot tell it from the real archives), ``OUT/patients.csv`` maps cases to patients,
and ``OUT/truth/`` holds the true maps, delay, core and penumbra masks and ``cases.csv``.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from . import perfusion
from .isles import ID_ORDER, PATIENTS_FILE, write_case

#: (CBF ml/100g/min, CBV ml/100g, delay s, dispersion s) per (state, tissue), SPEC §3.
TISSUE = {
    ("normal", "GM"): (55.0, 4.0, 0.5, 0.0),
    ("normal", "WM"): (22.0, 2.0, 0.5, 0.0),
    ("penumbra", "GM"): (25.0, 4.0, 8.0, 2.0),
    ("penumbra", "WM"): (15.0, 2.4, 8.0, 2.0),
    ("core", "GM"): (6.0, 1.2, 12.0, 3.0),
    ("core", "WM"): (4.0, 0.8, 12.0, 3.0),
}
HU = {"GM": 38.0, "WM": 30.0, "CSF": 8.0, "deepGM": 36.0, "scalp": 35.0, "blood": 45.0, "background": -23.0}
#: ISLES 2018 training slab sizes: slices -> number of cases (SPEC §2).
ISLES_SLICES = {2: 51, 4: 19, 8: 9, 16: 13, 22: 2}
SLICE_MM = 5.0003
TERRITORIES = ("ACA", "MCA", "PCA")


@dataclass
class PhantomConfig:
    """Knobs of the generator; the defaults are SPEC §3's."""

    noise_hu: float = 8.0  # CTP noise per frame: SD of white noise before in-plane correlation
    noise_sigma: float = 0.8  # voxels, in-plane correlation of the CTP noise
    ct_noise_hu: float = 4.0  # NCCT noise SD
    fine_step: float = 0.05  # s, forward-model grid
    frame_step: float = 1.0  # s, CTP sampling
    method: str = "bsvd"  # deconvolution for the written maps
    svd_threshold: float = 0.1
    smooth_sigma: float = 1.5  # voxels, in-plane smoothing before deconvolution
    temporal_sigma: float = 2.0  # frames, smoothing in time of tissue curves and AIF
    write_pwi: bool = True  # write the 4D series (about 5 GB for 94 + 62 studies)
    size: int = 256


# --- random smooth fields -------------------------------------------------------------------


def smooth_field(rng, shape, sigma_px: float, coarse: int = 4) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field ``(X, Y, Z)``: Gaussian-filtered noise on a grid
    ``coarse`` times coarser in-plane, upsampled bilinearly."""
    small = (shape[0] // coarse, shape[1] // coarse, shape[2])
    f = ndimage.gaussian_filter(rng.standard_normal(small), (sigma_px / coarse, sigma_px / coarse, 0.6), mode="wrap")
    f = ndimage.zoom(f, (coarse, coarse, 1), order=1, grid_mode=True, mode="grid-wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


# --- anatomy --------------------------------------------------------------------------------


def _ellipse(u, v, cu, cv, au, av, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    du, dv = u - cu, v - cv
    return ((c * du + s * dv) / au) ** 2 + ((-s * du + c * dv) / av) ** 2 < 1


def anatomy(params: dict, heights_mm: np.ndarray, spacing: float, size: int = 256, rng=None) -> dict[str, np.ndarray]:
    """Hard label maps ``(X, Y, Z)`` for slices at heights ``heights_mm`` (0 = basal ganglia).

    Returns boolean masks ``head, skull, brain, GM, WM, CSF, deepGM`` plus ``territory``
    (0 none, 1 ACA, 2 MCA, 3 PCA), ``side`` (-1 / +1 for the image's left / right half of the
    head) and ``skull_hu`` (bone intensity). ``Y`` grows towards the face.
    """
    p = params
    n = size
    idx = (np.arange(n) - n / 2 + 0.5) * spacing
    x, y = np.meshgrid(idx - p["shift"][0], idx - p["shift"][1], indexing="ij")
    c, s = np.cos(p["rotation"]), np.sin(p["rotation"])
    u = (c * x + s * y) / p["scale"]  # head coordinates, mm: u left-right, v posterior-anterior
    v = (-s * x + c * y) / p["scale"]
    nz = len(heights_mm)
    fold = smooth_field(rng, (n, n, nz), 5.0 / spacing)
    jitter = smooth_field(rng, (n, n, nz), 30.0 / spacing)
    phi = np.arctan2(v, u)
    out = {k: np.zeros((n, n, nz), bool) for k in ("head", "skull", "brain", "GM", "WM", "CSF", "deepGM")}
    out["territory"] = np.zeros((n, n, nz), np.uint8)
    out["skull_hu"] = np.zeros((n, n, nz), np.float32)
    for k, w in enumerate(heights_mm):
        shrink = np.sqrt(max(1 - ((w - 10) / 105) ** 2, 0.05))
        au, av = p["head_u"] * shrink, p["head_v"] * shrink
        wobble = 1 + 0.025 * np.cos(2 * phi + p["wobble"][0]) + 0.015 * np.cos(3 * phi + p["wobble"][1])
        rho = np.sqrt((u / au) ** 2 + (v / av) ** 2) / wobble
        depth = (1 - rho) * 0.5 * (au + av)  # mm below the skin (approximately)
        head = depth > 0
        skull = (depth > p["scalp"]) & (depth <= p["scalp"] + p["bone"])
        inner = depth > p["scalp"] + p["bone"]
        brain = depth > p["scalp"] + p["bone"] + 1.2
        t = np.clip((depth - p["scalp"]) / p["bone"], 0, 1)
        out["skull_hu"][:, :, k] = p["bone_hu"] * (1 - 0.45 * np.sin(np.pi * t) ** 2)  # tables bright, diploe darker
        d_brain = depth - (p["scalp"] + p["bone"] + 1.2)
        ribbon = 2.5 + 1.6 * (fold[:, :, k] + 1.5)
        sulcus = brain & (np.abs(fold[:, :, k]) < 0.07) & (d_brain < ribbon + 4)
        gm = brain & (d_brain < ribbon)
        # interhemispheric fissure and medial cortex, away from the corpus callosum
        medial = brain & (np.abs(v) > 22 + 10 * max(0, 1 - abs(w - 15) / 25))
        fissure = medial & (np.abs(u) < 1.0)
        gm |= medial & (np.abs(u) < 1.0 + ribbon)
        csf = (inner & ~brain) | sulcus | fissure
        deep = np.zeros_like(brain)
        vent = np.zeros_like(brain)
        a = p["atrophy"]
        for sgn in (-1, 1):
            if -12 <= w <= 18:
                deep |= _ellipse(u, v, sgn * 22, 3, 6, 14, sgn * 0.3)  # lentiform
                deep |= _ellipse(u, v, sgn * (8 + 3 * a), 16, 4.5, 7)  # caudate head
            if -10 <= w <= 10:
                deep |= _ellipse(u, v, sgn * 9, -12, 7, 10)  # thalamus
            f = np.sin(np.pi * (w + 5) / 45) if -5 <= w <= 40 else 0.0
            if f > 0.15:  # lateral ventricle: body and frontal horn
                vent |= _ellipse(u, v, sgn * (6 + 2 * a), 2, 3.5 * a * f + 0.8, 24 * (0.6 + 0.4 * f), -sgn * 0.12)
        if -10 <= w <= 5:
            vent |= (np.abs(u) < 1.2 * a) & (np.abs(v + 2) < 11)  # third ventricle
        csf |= brain & vent
        deep &= brain & ~vent
        gm = (gm | deep) & ~csf
        wm = brain & ~gm & ~csf
        out["head"][:, :, k], out["skull"][:, :, k], out["brain"][:, :, k] = head, skull, inner
        out["GM"][:, :, k], out["WM"][:, :, k], out["CSF"][:, :, k], out["deepGM"][:, :, k] = gm, wm, csf, deep
        # vascular territories: angle from the anterior midline, with a jittered border
        ang = np.arctan2(np.abs(u), v) + 0.12 * jitter[:, :, k]
        terr = np.where(ang < 0.5, 1, np.where(ang > 2.45, 3, 2)).astype(np.uint8)
        terr[_ellipse(u, v, 9, -12, 7, 10) | _ellipse(u, v, -9, -12, 7, 10)] = 3
        out["territory"][:, :, k] = np.where(gm | wm, terr, 0)
    out["side"] = np.where(u < 0, -1, 1).astype(np.int8)[:, :, None] * np.ones((1, 1, nz), np.int8)
    out["u"], out["v"] = u, v
    return out


def patient_params(rng) -> dict:
    return {
        "rotation": np.deg2rad(rng.normal(0, 5)),
        "shift": rng.normal(0, 5, 2),
        "scale": rng.uniform(0.92, 1.08),
        "head_u": rng.uniform(78, 86),
        "head_v": rng.uniform(90, 98),
        "wobble": rng.uniform(0, 2 * np.pi, 2),
        "scalp": rng.uniform(3, 6),
        "bone": rng.uniform(5.5, 8.5),
        "bone_hu": rng.uniform(1300, 1900),
        "atrophy": rng.uniform(0.7, 1.6),
    }


# --- ischaemia ------------------------------------------------------------------------------


def _top_k(score: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros(score.shape, bool)
    k = int(min(max(k, 0), candidates.sum()))
    if k:
        flat = np.flatnonzero(candidates)
        out.flat[flat[np.argpartition(-score.flat[flat], k - 1)[:k]]] = True
    return out


def ischaemia(rng, anat: dict, spacing: tuple, ot_ml: float, focus_slices=None) -> dict:
    """Penumbra, core and OT masks in one territory of one hemisphere.

    Regions grow outward from a random focus in the territory, with an irregular border (a
    smooth random field added to the distance), to hit target volumes: the OT (DWI-like truth)
    is ``ot_ml``, the core 45-80 % of it, the hypoperfused region 1.6-3.5 times it. OT = core
    plus the penumbra voxels closest to the core.
    """
    territory = rng.choice(3, p=[0.1, 0.7, 0.2]) + 1
    side = rng.choice([-1, 1])
    tissue = anat["GM"] | anat["WM"]
    cand = tissue & (anat["territory"] == territory) & (anat["side"] == side)
    if focus_slices is not None:
        allowed = np.zeros(cand.shape[2], bool)
        allowed[focus_slices] = True
        focus_pool = cand & allowed[None, None, :]
    else:
        focus_pool = cand
    if not focus_pool.any():  # territory absent from these slices: take any tissue on that side
        cand = tissue & (anat["side"] == side)
        focus_pool = cand
    voxel_ml = float(np.prod(spacing)) / 1000
    n_ot = max(int(round(ot_ml / voxel_ml)), 4)
    n_hyp = min(int(n_ot * rng.uniform(1.6, 3.5)), int(0.9 * cand.sum()))
    n_ot = min(n_ot, int(0.8 * n_hyp))
    n_core = max(int(n_ot * rng.uniform(0.45, 0.8)), 2)
    focus = np.argwhere(focus_pool)[rng.integers(focus_pool.sum())]
    grid = np.indices(cand.shape, dtype=np.float32)
    dist = np.sqrt(sum(((g - f) * s) ** 2 for g, f, s in zip(grid, focus, spacing, strict=True)))
    scale = (n_hyp * voxel_ml * 1000) ** (1 / 3)  # mm, size of the region
    hyp = _top_k(-dist / scale + 0.35 * smooth_field(rng, cand.shape, 8 / spacing[0]), cand, n_hyp)
    core = _top_k(-dist / scale + 0.5 * smooth_field(rng, cand.shape, 5 / spacing[0]), hyp, n_core)
    from_core = ndimage.distance_transform_edt(~core, sampling=spacing)
    grow = _top_k(-from_core + 1.5 * smooth_field(rng, cand.shape, 4 / spacing[0]), hyp & ~core, n_ot - n_core)
    return {
        "core": core,
        "penumbra": hyp & ~core,
        "ot": core | grow,
        "territory": TERRITORIES[territory - 1],
        "side": "left" if side < 0 else "right",
    }


# --- curves and volumes ---------------------------------------------------------------------


def tissue_table(t_frames, aif_fine, t_fine, jitter: dict) -> tuple[np.ndarray, list, dict]:
    """The six unit-fraction tissue curves ``(6, T)`` sampled at ``t_frames``, their keys, and
    per-key (CBF, CBV, delay, true Tmax) after the patient's jitter."""
    keys = list(TISSUE)
    curves, values = [], {}
    for key in keys:
        cbf, cbv, delay, disp = TISSUE[key]
        cbf, cbv = cbf * jitter[key], cbv * jitter[key] * jitter["cbv"]
        mtt = 60 * cbv / cbf
        c = perfusion.tissue_curve(t_fine, aif_fine, cbf, mtt, delay, disp)
        curves.append(np.interp(t_frames, t_fine, c))
        r = perfusion.residue(t_fine, mtt, disp)
        values[key] = (cbf, cbv, delay, delay + t_fine[np.argmax(r)])
    return np.array(curves, np.float32), keys, values


def correlated_noise(rng, out: np.ndarray, sd: float, sigma: float = 0.8) -> np.ndarray:
    """Fill ``out`` (float32, in-plane axes first) with white Gaussian noise of SD ``sd``, then
    correlate it in-plane with a Gaussian of ``sigma`` voxels (a reconstruction kernel). The
    per-voxel SD that results is ``sd / (2 sigma sqrt(pi))`` (2.8 HU for 8 HU and ``sigma = 0.8``)."""
    rng.standard_normal(out=out, dtype=np.float32)
    out *= np.float32(sd)
    ndimage.gaussian_filter(out, (sigma, sigma) + (0,) * (out.ndim - 2), output=out, truncate=3.0)
    return out


def simulate_patient(seed: int, slabs: list[int], config: PhantomConfig) -> list[dict]:
    """Simulate one patient with one or two slabs of the given slice counts.

    Returns, per slab, the volumes to write (ISLES tokens), the truth arrays and a table row.
    """
    rng = np.random.default_rng(seed)
    params = patient_params(rng)
    spacing_xy = float(rng.choice([0.976562, 0.976562, 0.976562, 0.878906]))
    spacing = (spacing_xy, spacing_xy, SLICE_MM)
    total = sum(slabs)
    length = (total - 1) * 5.0
    start = float(np.clip(rng.normal(12 - length / 2, 10), -22, 78 - length))
    heights = start + 5.0 * np.arange(total)
    anat = anatomy(params, heights, spacing_xy, config.size, rng)
    ot_ml = len(slabs) * float(np.clip(rng.lognormal(np.log(22), 1.0), 0.2, 150))  # a slab sees ~2/3
    les = ischaemia(rng, anat, spacing, ot_ml)
    if len(slabs) == 2:  # a second embolic focus if one slab saw nothing
        bounds = [(0, slabs[0]), (slabs[0], total)]
        for lo, hi in bounds:
            if les["ot"][:, :, lo:hi].sum() < 5:
                extra = ischaemia(rng, anat, spacing, float(rng.uniform(0.5, 5)), focus_slices=slice(lo, hi))
                for k in ("core", "penumbra", "ot"):
                    les[k] = les[k] | extra[k]
                les["penumbra"] &= ~les["core"]

    # partial-volume fractions of tissue classes and ischaemic states
    pv = lambda m, s=0.6: ndimage.gaussian_filter(m.astype(np.float32), (s, s, 0))  # noqa: E731
    f_gm, f_wm = pv(anat["GM"]), pv(anat["WM"])
    w_core, w_pen = pv(les["core"]), pv(les["penumbra"])
    w_norm = np.clip(1 - w_core - w_pen, 0, 1)
    texture = 1 + 0.1 * smooth_field(rng, f_gm.shape, 6 / spacing_xy)
    jitter = {k: rng.uniform(0.92, 1.08) for k in TISSUE} | {"cbv": rng.uniform(0.95, 1.05)}
    weights = {}
    for state, w_s in (("normal", w_norm), ("penumbra", w_pen), ("core", w_core)):
        weights[(state, "GM")] = w_s * f_gm * texture
        weights[(state, "WM")] = w_s * f_wm * texture

    # the bolus
    n_frames = int(rng.integers(43, 61))
    t_fine = np.arange(0, n_frames + 20, config.fine_step)
    t_frames = np.arange(n_frames) * config.frame_step
    aif_params = {
        "t0": rng.uniform(3, 8),
        "alpha": rng.uniform(2.5, 3.5),
        "beta": rng.uniform(1.5, 2.5),
        "peak": rng.uniform(280, 420),
        "recirculation": float(rng.choice([0, rng.uniform(0.1, 0.2)])),
    }
    aif_fine = perfusion.arterial_input(t_fine, **aif_params)
    table, keys, values = tissue_table(t_frames, aif_fine, t_fine, jitter)

    # true maps (partial-volume weighted)
    wsum = sum(weights.values())
    true = {"CBF": sum(weights[k] * values[k][0] for k in keys), "CBV": sum(weights[k] * values[k][1] for k in keys)}
    safe = np.maximum(wsum, 1e-6)
    true["delay"] = sum(weights[k] * values[k][2] for k in keys) / safe
    true["Tmax"] = sum(weights[k] * values[k][3] for k in keys) / safe
    true["MTT"] = np.where(true["CBF"] > 1e-3, 60 * true["CBV"] / np.maximum(true["CBF"], 1e-3), 0)
    perfused = wsum > 0.05
    for k in ("CBF", "CBV", "MTT", "delay", "Tmax"):
        true[k] = np.where(perfused, true[k], 0).astype(np.float32)

    # NCCT
    ct = np.full(f_gm.shape, HU["background"], np.float32)
    ct[anat["head"]] = HU["scalp"]
    ct[anat["brain"]] = HU["CSF"]
    ct = np.where(anat["skull"], anat["skull_hu"], ct)
    darkening = rng.uniform(2, 8)
    tissue_hu = (
        f_gm * np.where(anat["deepGM"], HU["deepGM"], HU["GM"])
        + f_wm * HU["WM"]
        + pv(anat["CSF"]) * HU["CSF"]
        - darkening * w_core * (f_gm + f_wm)
    )
    inside = anat["brain"]
    ct = np.where(inside, tissue_hu, ct)
    ct = np.where(anat["head"], ndimage.gaussian_filter(ct, (0.5, 0.5, 0)), ct)

    # vessels: arteries in the healthy hemisphere (where the AIF is picked) and a sinus
    u, v = anat["u"], anat["v"]
    healthy = -1 if les["side"] == "right" else 1
    artery = np.zeros(f_gm.shape, np.float32)
    for k in range(total):
        for cu, cv in ((healthy * 34, 6), (healthy * 26, -4), (healthy * 3, 38)):
            disc = _ellipse(u, v, cu + rng.normal(0, 2), cv + rng.normal(0, 3), 1.8, 1.8) & inside[:, :, k]
            artery[:, :, k] = np.maximum(artery[:, :, k], disc)
    sinus = np.zeros(f_gm.shape, bool)
    for k in range(total):
        back = np.where(anat["brain"][:, :, k] & (np.abs(u) < 3))[1]
        if back.size:
            ymin = back.min()
            sinus[:, :, k] = _ellipse(u, v, 0, v[0, ymin] + 3, 3, 3) & inside[:, :, k]
    artery = np.clip(pv(artery > 0, 0.5) * 1.2, 0, 1) * inside
    ct = np.where(artery > 0.5, HU["blood"], ct)
    vof = perfusion.tissue_curve(t_fine, aif_fine, 6000 * perfusion.K_H / perfusion.RHO, 1.0, 4.0, 2.0)
    vof = np.interp(t_frames, t_fine, vof) * 1.1

    # the 4D series, slice by slice (reused buffers): tissue mix + vessels + baseline + noise
    keys_w = np.stack([weights[k] for k in keys], axis=-1)  # (X, Y, Z, 6)
    aif_frames = np.interp(t_frames, t_fine, aif_fine).astype(np.float32)
    vof = vof.astype(np.float32)
    series = np.empty(f_gm.shape + (n_frames,), np.int16)
    buf = np.empty(f_gm.shape[:2] + (n_frames,), np.float32)
    hbox = perfusion.bounding_box(anat["head"].any(axis=2), margin=3)
    noise = np.empty(buf[hbox].shape, np.float32)
    for z in range(total):
        buf[:] = ct[:, :, z, None]
        tis = np.nonzero(wsum[:, :, z] > 0.01)
        buf[tis] += keys_w[:, :, z][tis] @ table
        art = np.nonzero(artery[:, :, z])
        a = artery[:, :, z][art][:, None]
        base = ct[:, :, z][art][:, None]
        buf[art] = base + (buf[art] - base) * (1 - a) + a * aif_frames
        buf[sinus[:, :, z]] += vof
        if config.noise_hu:  # the background outside the head stays constant, as in the real files
            correlated_noise(rng, noise, config.noise_hu, config.noise_sigma)
            noise *= anat["head"][hbox + (z, None)]
            buf[hbox] += noise
        np.rint(buf, out=buf)
        np.clip(buf, -1024, 3071, out=buf)
        series[:, :, z] = buf
    if config.ct_noise_hu:
        ct = ct + rng.normal(0, config.ct_noise_hu, ct.shape).astype(np.float32) * anat["head"]

    maps, _ = perfusion.compute_maps(
        series,
        config.frame_step,
        anat["brain"],
        method=config.method,
        threshold=config.svd_threshold,
        smooth_sigma=config.smooth_sigma,
        temporal_sigma=config.temporal_sigma,
    )
    cbf_scale, cbv_scale = float(rng.uniform(7, 14)), float(rng.uniform(12, 25))

    results = []
    lo = 0
    for slab_index, n in enumerate(slabs):
        sl = slice(lo, lo + n)
        lo += n
        volumes = {
            "CT": ct[:, :, sl],
            "CBF": maps.CBF[:, :, sl] * cbf_scale,
            "CBV": maps.CBV[:, :, sl] * cbv_scale,
            "MTT": maps.MTT[:, :, sl],
            "Tmax": maps.Tmax[:, :, sl],
            "OT": les["ot"][:, :, sl],
        }
        if config.write_pwi:
            volumes["4DPWI"] = series[:, :, sl]
        truth = {k: true[k][:, :, sl] for k in ("CBF", "CBV", "MTT", "Tmax", "delay")}
        truth |= {
            "core": les["core"][:, :, sl],
            "penumbra": les["penumbra"][:, :, sl],
            "brain": anat["brain"][:, :, sl],
        }
        voxel_ml = float(np.prod(spacing)) / 1000
        row = {
            "slab": "AB"[slab_index] if len(slabs) == 2 else "A",
            "n_slices": n,
            "n_frames": n_frames,
            "spacing_xy": spacing_xy,
            "territory": les["territory"],
            "side": les["side"],
            "lesion_ml": round(float(les["ot"][:, :, sl].sum()) * voxel_ml, 3),
            "core_ml": round(float(les["core"][:, :, sl].sum()) * voxel_ml, 3),
            "penumbra_ml": round(float(les["penumbra"][:, :, sl].sum()) * voxel_ml, 3),
            "first_slice_mm": round(float(heights[sl][0]), 1),
            "ct_core_darkening_hu": round(darkening, 2),
            "cbf_scale": round(cbf_scale, 3),
            "cbv_scale": round(cbv_scale, 3),
            "noise_hu": config.noise_hu,
            "seed": seed,
        } | {f"aif_{k}": round(float(x), 3) for k, x in aif_params.items()}
        results.append({"volumes": volumes, "truth": truth, "spacing": spacing, "row": row})
    return results


# --- the dataset ----------------------------------------------------------------------------


def slab_sizes(rng, n_cases: int) -> list[int]:
    """Slice counts for ``n_cases`` slabs in the ISLES proportions (exactly ISLES's 502 for 94)."""
    total = sum(ISLES_SLICES.values())
    quotas = {k: n_cases * v / total for k, v in ISLES_SLICES.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: quotas[k] - counts[k], reverse=True)[: n_cases - sum(counts.values())]:
        counts[k] += 1
    sizes = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(sizes)
    return sizes


def plan_split(rng, n_cases: int) -> list[list[int]]:
    """Group ``n_cases`` slabs into patients: about a third of the cases share a patient
    (ISLES: 63 training patients -> 94 cases). A two-slab patient's slabs have equal size, drawn
    in pairs from the ISLES slab-size multiset so the split keeps its slice distribution."""
    pool = Counter(slab_sizes(rng, n_cases))
    patients = []
    for _ in range(n_cases - int(round(n_cases * 63 / 94))):
        pairable = [k for k in sorted(pool) if pool[k] >= 2]
        if not pairable:
            break
        weights = np.array([pool[k] for k in pairable], float)
        k = pairable[rng.choice(len(pairable), p=weights / weights.sum())]
        pool[k] -= 2
        patients.append([k, k])
    patients += [[k] for k in sorted(pool) for _ in range(pool[k])]
    return [patients[i] for i in rng.permutation(len(patients))]


def _simulate_and_write(args):
    seed, slabs, config, out, split, first_case, patient, ids = args
    rows = []
    for k, res in enumerate(simulate_patient(seed, slabs, config)):
        case = first_case + k
        if split == "TESTING":  # no mask in the test split: keep it hidden in the truth folder
            res["truth"]["ot"] = res["volumes"].pop("OT")
        write_case(out / split, case, res["volumes"], res["spacing"], ids[k], time_step=config.frame_step)
        tdir = out / "truth" / split / f"case_{case}"
        tdir.mkdir(parents=True, exist_ok=True)
        for name, arr in res["truth"].items():
            dtype = np.uint8 if arr.dtype == bool else np.float32
            img = nib.Nifti1Image(arr.astype(dtype), np.diag([*res["spacing"], 1.0]))
            nib.save(img, tdir / f"{name}.nii.gz")
        rows.append({"split": split, "case": f"case_{case}", "patient": patient} | res["row"])
    return rows


def _die_with_parent() -> None:
    """Pool initializer: on Linux, the kernel kills this worker when its parent dies (even by
    SIGKILL), so an interrupted generation never leaves workers writing files."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool is still terminated on any exception
        pass


def _run_jobs(jobs: list, workers: int):
    """Each job's rows as it finishes; in ``workers`` spawned processes when more than one. On
    any exception, Ctrl-C included, the workers are terminated before it propagates."""
    if workers <= 1:
        yield from map(_simulate_and_write, jobs)
        return
    threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in threads}
    os.environ.update({k: "1" for k in threads})  # one thread per worker, inherited at spawn
    try:
        pool = get_context("spawn").Pool(workers, initializer=_die_with_parent)
    finally:
        for k, value in saved.items():
            if value is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = value
    try:
        yield from pool.imap_unordered(_simulate_and_write, jobs)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def generate_dataset(
    out: str | os.PathLike,
    train_cases: int = 94,
    test_cases: int = 62,
    seed: int = 0,
    config: PhantomConfig | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the synthetic ISLES-layout dataset to ``out`` and return it.

    An existing dataset in ``out`` is kept (error) unless ``force``. The dataset is built in a
    temporary sibling folder (``OUT.partial``) and moved into place at the end, so an interrupted
    run leaves nothing half-written in ``out``; its workers die with it (even on SIGKILL, on
    Linux), and the next run removes the partial folder and says that it starts again.
    """
    out = Path(out)
    config = config or PhantomConfig()
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} already exists and is not empty; pass force=True (--force) to replace it")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        print(f"{tmp}: left by an interrupted run; removed, starting again from scratch", flush=True)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    jobs = []
    for split_index, (split, n) in enumerate((("TRAINING", train_cases), ("TESTING", test_cases))):
        if n <= 0:
            continue
        case = 1
        plan = plan_split(rng, n)
        for p, slabs in enumerate(plan):
            ids = []
            for _ in slabs:
                if split == "TRAINING":  # consecutive ids: 4DPWI = n, CT = n + 1, ...
                    base = int(rng.integers(100000, 999000))
                    ids.append({t: base + i for i, t in enumerate(ID_ORDER)})
                else:
                    ids.append({t: int(rng.integers(100000, 999999)) for t in ID_ORDER[:-1]})  # no OT
            patient = f"{'train' if split == 'TRAINING' else 'test'}_{p + 1:03d}"
            jobs.append((seed * 1_000_003 + split_index * 10_007 + p, slabs, config, tmp, split, case, patient, ids))
            case += len(slabs)
    workers = workers or min(os.cpu_count() or 1, 8)
    rows = []
    for batch in tqdm(_run_jobs(jobs, workers), total=len(jobs), desc="phantom patients", disable=not progress):
        rows += batch
    rows.sort(key=lambda r: (r["split"], int(r["case"].split("_")[1])))
    with open(tmp / PATIENTS_FILE, "w", newline="") as f:
        w = csv.DictWriter(f, ["split", "case", "patient"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("split", "case", "patient")} for r in rows)
    with open(tmp / "truth" / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp / "truth" / "config.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "value"])
        w.writerows([*asdict(config).items(), ("seed", seed), ("train_cases", train_cases), ("test_cases", test_cases)])
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def read_truth(dataset: str | os.PathLike, case_name: str) -> dict[str, np.ndarray]:
    """True maps and masks of one synthetic case (``"TRAINING/case_3"``), as ``(X, Y, Z)`` arrays."""
    tdir = Path(dataset) / "truth" / case_name
    if not tdir.is_dir():
        raise FileNotFoundError(f"{tdir}: no truth folder (only synthetic datasets have one)")
    return {p.name[: -len(".nii.gz")]: np.asanyarray(nib.load(p).dataobj) for p in sorted(tdir.glob("*.nii.gz"))}


def read_cases(dataset: str | os.PathLike) -> list[dict]:
    """Rows of ``truth/cases.csv`` (patient, slab, lesion volume, territory, parameters, ...)."""
    with open(Path(dataset) / "truth" / "cases.csv", newline="") as f:
        return list(csv.DictReader(f))
