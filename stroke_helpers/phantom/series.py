"""The forward model: tissue values, the 4D CT perfusion series, the NCCT, and the maps computed
from the noisy series; :func:`simulate_patient` ties anatomy, territories and ischaemia together.

Tissue values (ml/100g/min, ml/100g, s): healthy grey and white matter (:data:`HEALTHY`), and for
each ischaemic state (mild and severe penumbra, core, reperfused infarct) the ranges of the factors
on both tissues' CBF and CBV and of Tmax, drawn per patient (:data:`STATES`; the core's relative to
its own severe penumbra's). docs/decisions.md §6 tabulates them, with sources, and a test holds
that table to these. Within a patient the core is darker than its penumbra on CBF and CBV (bar
the odd patient whose jitter reverses one); across patients one core can have another's
penumbral flow, so no single rCBF threshold is right for all. The penumbra's CBV is
raised (autoregulation dilates its vessels) and the core's falls further than its flow, so MTT is
longest in the severe penumbra and shorter in the core inside it: a phantom assumption (real MTT
is prolonged in the core too), docs/decisions.md §6 item 3. MTT = 60 CBV/CBF; each
value jittered +-8 % per patient, with a smooth +-10 % texture. The arrival delay is what puts the
residue's maximum (later for a dispersed one) at that Tmax.

Series: indicator dilution on a 0.05 s grid (gamma-variate AIF, t0 3-8 s, alpha 2.5-3.5, beta
1.5-2.5 s, peak 280-420 HU, recirculation in half the patients; exponential residue, extra
dispersion 2-3 s in ischaemic tissue), sampled every second for 43-60 frames on top of the NCCT,
with arteries (~45 HU at baseline) in the healthy hemisphere, a sinus, and spatially correlated
noise (8 HU per frame before in-plane correlation, 2.8 HU per voxel). No patient motion yet:
shifting the skull by a fraction of a voxel throws hundreds of HU into edge voxels, which the
automatic AIF then picks; real software registers the frames first.

OT: drawn on DWI (:mod:`.ischaemia`), registered to the CTP with a small rigid in-plane error
(:func:`registration_error`); the truth folder keeps it unshifted as ``ot_dwi``.

Maps: :func:`stroke_helpers.perfusion.compute_maps` on the noisy series (automatic AIF,
block-circulant SVD truncated at 10 %, in-plane smoothing 1.5 voxels, temporal 2 frames), with its
bias correction at a 4 s reference MTT: uncorrected, the truncation puts healthy Tmax at ~3.3 s
(true 0.5 s) and MTT at ~8.9 s (true 4.5 s); corrected, ~1.3 s and ~4.8 s, in the ranges real
software reports (Tmax 0-2 s, MTT 3-5 s).

NCCT: the anatomy's HU (:mod:`.anatomy`), the core darkened by its net water uptake
(:func:`.ischaemia.core_hypodensity`, growing with onset-to-CT time), noise 4 HU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .. import perfusion
from .anatomy import HU, SLICE_MM, SPACING_XY, anatomy, patient_pose, slab_heights
from .ischaemia import core_hypodensity, ischaemia, onset_times, second_focus
from .territories import load_territories


def _mid(bounds) -> float:
    return sum(bounds) / 2


#: Healthy (CBF ml/100g/min, CBV ml/100g) per tissue, docs/decisions.md §6.
HEALTHY = {"GM": (55.0, 4.0), "WM": (22.0, 2.0)}
#: Per ischaemic state, the ranges (uniform, per patient) of CBF and CBV relative to healthy tissue,
#: the true Tmax (s) and the extra dispersion (s). The core's CBF and CBV are fractions of its own
#: severe penumbra's and its Tmax is added to it: within a patient the core is (nearly) always the darker
#: on CBF and CBV, across patients its absolute values overlap other patients' penumbra.
STATES = {
    "normal": ((1.0, 1.0), (1.0, 1.0), (0.5, 0.5), 0.0),
    "mild": ((0.7, 0.95), (1.0, 1.2), (7.0, 9.5), 1.5),
    "severe": ((0.25, 0.6), (1.05, 1.35), (11.5, 16.0), 2.5),
    "core": ((0.3, 0.95), (0.15, 0.45), (0.0, 1.0), 3.0),  # CBF, CBV and Tmax relative to the severe penumbra's
    "reperfused": ((0.9, 1.3), (1.0, 1.2), (0.5, 2.0), 0.5),
}
#: (CBF, CBV, Tmax, dispersion) per (state, tissue) at the middle of each range: the median patient.
TISSUE = {
    (state, tissue): (
        cbf * _mid(f_cbf) * (_mid(STATES["severe"][0]) if state == "core" else 1),
        cbv * _mid(f_cbv) * (_mid(STATES["severe"][1]) if state == "core" else 1),
        _mid(tmax) + (_mid(STATES["severe"][2]) if state == "core" else 0),
        disp,
    )
    for state, (f_cbf, f_cbv, tmax, disp) in STATES.items()
    for tissue, (cbf, cbv) in HEALTHY.items()
}


#: Frames per series, 1 s apart (drawn per patient; ISLES 2018's series have 43-64).
FRAMES = (43, 60)
#: SD of the extra patchiness of perfusion in the severe penumbra and the core (smooth over ~4 mm).
ISCHAEMIC_TEXTURE = 0.25
#: SD (mm, per in-plane axis) of the OT's registration error (:func:`registration_error`).
REGISTRATION_SD_MM = 2.5


def tissue_values(rng) -> dict:
    """One patient's (CBF, CBV, Tmax, dispersion) per (state, tissue): :data:`STATES`' factors
    drawn once per patient, each value then jittered +-8 %."""
    draw = {state: [rng.uniform(*f_cbf), rng.uniform(*f_cbv), rng.uniform(*delay), disp]
            for state, (f_cbf, f_cbv, delay, disp) in STATES.items()}  # fmt: skip
    draw["core"][0] *= draw["severe"][0]
    draw["core"][1] *= draw["severe"][1]
    draw["core"][2] += draw["severe"][2]
    values = {}
    for (state, tissue), _ in TISSUE.items():
        f_cbf, f_cbv, tmax, disp = draw[state]
        cbf, cbv = HEALTHY[tissue]
        jitter = rng.uniform(0.92, 1.08, 2)
        values[(state, tissue)] = (cbf * f_cbf * jitter[0], cbv * f_cbv * jitter[1], tmax, disp)
    return values


@dataclass
class PhantomConfig:
    """Knobs of the generator; the defaults are docs/decisions.md §6's."""

    noise_hu: float = 8.0  # CTP noise per frame: SD of white noise before in-plane correlation
    noise_sigma: float = 0.8  # voxels, in-plane correlation of the CTP noise
    ct_noise_hu: float = 4.0  # NCCT noise SD
    fine_step: float = 0.05  # s, forward-model grid
    frame_step: float = 1.0  # s, CTP sampling
    method: str = "bsvd"  # deconvolution for the written maps
    svd_threshold: float = 0.1
    smooth_sigma: float = 1.5  # voxels, in-plane smoothing before deconvolution
    temporal_sigma: float = 2.0  # frames, smoothing in time of tissue curves and AIF
    reference_mtt: float | None = 4.0  # s: correct the deconvolution's Tmax and CBF bias (perfusion.compute_maps)
    write_pwi: bool = True  # write the 4D series
    compress: bool = True  # write .nii.gz (the loader reads them like the real .nii)
    atlas: str | None = None  # arterial territory atlas folder; None: geometric territories
    size: int = 256


@lru_cache(maxsize=2)
def _territories(atlas: str | None):
    return load_territories(atlas, warn=False)


def tissue_table(t_frames, aif_fine, t_fine, tissue: dict) -> tuple[np.ndarray, list, dict]:
    """The unit-fraction tissue curves ``(K, T)`` sampled at ``t_frames``, one per (state, tissue)
    of ``tissue`` (:func:`tissue_values`), their keys, and per key (CBF, CBV, delay, true Tmax):
    the delay is the Tmax less the time of the dispersed residue's maximum."""
    keys = list(tissue)
    curves, values = [], {}
    for key in keys:
        cbf, cbv, tmax, disp = tissue[key]
        mtt = 60 * cbv / cbf
        delay = max(tmax - t_fine[np.argmax(perfusion.residue(t_fine, mtt, disp))], 0.0)
        c = perfusion.tissue_curve(t_fine, aif_fine, cbf, mtt, delay, disp)
        curves.append(np.interp(t_frames, t_fine, c))
        values[key] = (cbf, cbv, delay, delay + t_fine[np.argmax(perfusion.residue(t_fine, mtt, disp))])
    return np.array(curves, np.float32), keys, values


def correlated_noise(rng, out: np.ndarray, sd: float, sigma: float = 0.8) -> np.ndarray:
    """Fill ``out`` (float32, in-plane axes first) with white Gaussian noise of SD ``sd``, then
    correlate it in-plane with a Gaussian of ``sigma`` voxels (a reconstruction kernel). The
    per-voxel SD that results is ``sd / (2 sigma sqrt(pi))`` (2.8 HU for 8 HU and ``sigma = 0.8``)."""
    rng.standard_normal(out=out, dtype=np.float32)
    out *= np.float32(sd)
    ndimage.gaussian_filter(out, (sigma, sigma) + (0,) * (out.ndim - 2), output=out, truncate=3.0)
    return out


def _slab_slices(slabs) -> list[slice]:
    bounds = np.cumsum([0, *slabs])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def patient_lesion(rng, anat: dict, spacing, times: dict, slabs) -> dict:
    """The patient's lesion (:func:`.ischaemia.ischaemia`); a slab it missed gets a second focus,
    so every slab has an OT, as every ISLES training case has."""
    tissue = (anat["GM"] + anat["WM"]) > 0.5
    les = ischaemia(rng, anat["territory"], tissue, spacing, times, len(slabs))
    for sl in _slab_slices(slabs):
        if les["ot"][:, :, sl].sum() < 5:
            les = second_focus(rng, les, anat["territory"], tissue, spacing, times, sl)
    return les


def registration_error(rng) -> np.ndarray:
    """In-plane shift (mm) of the OT, drawn on DWI and registered to the CTP: N(0, 2.5 mm) per
    axis (:data:`REGISTRATION_SD_MM`), about 3 mm in all: a rigid MRI-to-CT registration of 5 mm
    slabs is good to a few millimetres (an estimate; ISLES 2018 publishes none), and the slice
    thickness hides any through-plane error."""
    return rng.normal(0, REGISTRATION_SD_MM, 2)


def _pv(mask: np.ndarray, sigma: float = 0.6) -> np.ndarray:
    return ndimage.gaussian_filter(mask.astype(np.float32), (sigma, sigma, 0))


def tissue_weights(rng, anat: dict, les: dict) -> dict:
    """Partial-volume weight of each (state, tissue) curve per voxel, with the perfusion texture
    (+-10 %, ~6 mm) and, in the severe penumbra and the core, a patchier one: the patient's ``flow``
    field (:mod:`.ischaemia`) times :data:`ISCHAEMIC_TEXTURE`. A voxel's flow there is not its
    neighbour's, so no single threshold follows the core's border; and the severe penumbra that
    infarcts before the DWI is where that flow is lowest, which CBF and CBV show and Tmax does not."""
    masks = {
        "core": les["core"] & ~les["reperfused"],
        "severe": les["severe"],
        "mild": les["penumbra"] & ~les["severe"],
        "reperfused": les["reperfused"],
    }
    w = {state: _pv(m) for state, m in masks.items()}
    w["normal"] = np.clip(1 - sum(w.values()), 0, 1)
    texture = 1 + 0.1 * _smooth(rng, anat["GM"].shape, 6 / SPACING_XY)
    patchy = np.clip(1 + ISCHAEMIC_TEXTURE * les["flow"], 0.3, 1.7)
    return {
        (state, tissue): w[state] * anat[tissue] * texture * (patchy if state in ("severe", "core") else 1)
        for state, tissue in TISSUE
    }


def _smooth(rng, shape, sigma_px):
    from .anatomy import smooth_field

    return smooth_field(rng, shape, sigma_px)


def true_maps(weights: dict, values: dict) -> dict:
    """The partial-volume-weighted true CBF, CBV, MTT, delay and Tmax."""
    keys = list(weights)
    wsum = sum(weights.values())
    safe = np.maximum(wsum, 1e-6)
    true = {"CBF": sum(weights[k] * values[k][0] for k in keys), "CBV": sum(weights[k] * values[k][1] for k in keys)}
    true["delay"] = sum(weights[k] * values[k][2] for k in keys) / safe
    true["Tmax"] = sum(weights[k] * values[k][3] for k in keys) / safe
    true["MTT"] = np.where(true["CBF"] > 1e-3, 60 * true["CBV"] / np.maximum(true["CBF"], 1e-3), 0)
    perfused = wsum > 0.05
    return {k: np.where(perfused, v, 0).astype(np.float32) for k, v in true.items()}


def vessels(rng, anat: dict, healthy: int) -> tuple[np.ndarray, np.ndarray]:
    """Artery fraction (MCA branches in the healthy Sylvian fissure, an ACA) and a sinus mask."""
    x, y = anat["mni"][0], anat["mni"][1]
    inside = anat["brain"]
    artery = np.zeros(inside.shape, bool)
    for cx, cy in ((healthy * 40, 2), (healthy * 33, -8), (healthy * 3, 34)):
        cx, cy = cx + rng.normal(0, 2), cy + rng.normal(0, 3)
        artery |= ((x - cx) ** 2 + (y - cy) ** 2 < 1.8**2) & inside
    sinus = np.zeros(inside.shape, bool)
    for k in range(inside.shape[2]):
        mid = inside[:, :, k] & (np.abs(x[:, :, k]) < 3)
        if mid.any():
            back = y[:, :, k][mid].min()
            sinus[:, :, k] = ((x[:, :, k] ** 2 + (y[:, :, k] - back - 3) ** 2) < 9) & inside[:, :, k]
    return np.clip(_pv(artery, 0.5) * 1.2, 0, 1) * inside, sinus


def bolus(rng, config: PhantomConfig) -> dict:
    """Frame times, the fine grid and the seeded gamma-variate AIF of one patient."""
    n_frames = int(rng.integers(FRAMES[0], FRAMES[1] + 1))
    t_fine = np.arange(0, n_frames + 20, config.fine_step)
    params = {
        "t0": rng.uniform(3, 8),
        "alpha": rng.uniform(2.5, 3.5),
        "beta": rng.uniform(1.5, 2.5),
        "peak": rng.uniform(280, 420),
        "recirculation": float(rng.choice([0, rng.uniform(0.1, 0.2)])),
    }
    aif = perfusion.arterial_input(t_fine, **params)
    vof = perfusion.tissue_curve(t_fine, aif, 6000 * perfusion.K_H / perfusion.RHO, 1.0, 4.0, 2.0)
    t_frames = np.arange(n_frames) * config.frame_step
    return {
        "n_frames": n_frames, "t_fine": t_fine, "t_frames": t_frames, "aif_fine": aif, "params": params,
        "aif": np.interp(t_frames, t_fine, aif).astype(np.float32),
        "vof": (np.interp(t_frames, t_fine, vof) * 1.1).astype(np.float32),
    }  # fmt: skip


def ncct(rng, anat: dict, les: dict, times: dict, config: PhantomConfig) -> tuple[np.ndarray, float]:
    """The NCCT before noise (the core darkened by its water uptake) and that darkening (HU)."""
    darkening = core_hypodensity(times["onset_to_ct_min"])
    tissue = anat["GM"] + anat["WM"]
    heterogeneity = np.clip(1 + 0.3 * _smooth(rng, tissue.shape, 4 / SPACING_XY), 0.3, 1.7)
    ct = anat["ct"] - darkening * heterogeneity * _pv(les["core"]) * tissue
    return ct.astype(np.float32), darkening


def render_series(rng, config: PhantomConfig, ct, weights, table, art, sinus, bol, head) -> np.ndarray:
    """The 4D series ``(X, Y, Z, T)`` int16, slice by slice: tissue mix + vessels + NCCT + noise."""
    keys_w = np.stack(list(weights.values()), axis=-1)
    wsum = keys_w.sum(axis=-1)
    series = np.empty(ct.shape + (bol["n_frames"],), np.int16)
    buf = np.empty(ct.shape[:2] + (bol["n_frames"],), np.float32)
    hbox = perfusion.bounding_box(head.any(axis=2), margin=3)
    noise = np.empty(buf[hbox].shape, np.float32)
    for z in range(ct.shape[2]):
        buf[:] = ct[:, :, z, None]
        tis = np.nonzero(wsum[:, :, z] > 0.01)
        buf[tis] += keys_w[:, :, z][tis] @ table
        a_idx = np.nonzero(art[:, :, z])
        a = art[:, :, z][a_idx][:, None]
        base = ct[:, :, z][a_idx][:, None]
        buf[a_idx] = base + (buf[a_idx] - base) * (1 - a) + a * bol["aif"]
        buf[sinus[:, :, z]] += bol["vof"]
        if config.noise_hu:  # the background outside the head stays constant, as in the real files
            correlated_noise(rng, noise, config.noise_hu, config.noise_sigma)
            noise *= head[hbox + (z, None)]
            buf[hbox] += noise
        np.rint(buf, out=buf)
        np.clip(buf, -1024, 3071, out=buf)
        series[:, :, z] = buf
    return series


def _slab_row(les, sl, n_slices, slab, spacing, extra: dict) -> dict:
    voxel_ml = float(np.prod(spacing)) / 1000
    return {
        "slab": slab,
        "n_slices": n_slices,
        "spacing_xy": spacing[0],
        "site": les["site"],
        "territory": les["territory"],
        "side": les["side"],
        "lesion_ml": round(float(les["ot"][:, :, sl].sum()) * voxel_ml, 3),
        "core_ml": round(float(les["core"][:, :, sl].sum()) * voxel_ml, 3),
        "penumbra_ml": round(float(les["penumbra"][:, :, sl].sum()) * voxel_ml, 3),
    } | extra


def _slabs(slabs, vols: dict, truth: dict, les: dict, spacing, extra: dict, write_pwi: bool) -> list[dict]:
    """Cut the patient's volumes into its slabs, with their truth and table rows."""
    results, lo = [], 0
    for slab_index, n in enumerate(slabs):
        sl = slice(lo, lo + n)
        volumes = {k: v[:, :, sl] for k, v in vols.items() if write_pwi or k != "4DPWI"}
        slab = "AB"[slab_index] if len(slabs) == 2 else "A"
        row = _slab_row(les, sl, n, slab, spacing, extra | {"first_slice_mm": round(float(extra["_z"][lo]), 1)})
        row.pop("_z")
        results.append({"volumes": volumes, "truth": {k: v[:, :, sl] for k, v in truth.items()}, "spacing": spacing,
                        "row": row})  # fmt: skip
        lo += n
    return results


def simulate_patient(seed: int, slabs: list[int], config: PhantomConfig) -> list[dict]:
    """Simulate one patient with one or two (contiguous) slabs of the given slice counts.

    Returns, per slab, the volumes to write (ISLES tokens), the truth arrays and a table row.
    """
    rng = np.random.default_rng(seed)
    pose = patient_pose(rng)
    spacing = (SPACING_XY, SPACING_XY, SLICE_MM)
    heights = slab_heights(rng, sum(slabs))
    anat = anatomy(pose, heights, rng, _territories(config.atlas).labels)
    times = onset_times(rng)
    les = patient_lesion(rng, anat, spacing, times, slabs)
    les["ot_dwi"], shift_mm = les["ot"], registration_error(rng)
    les["ot"] = ndimage.shift(les["ot_dwi"].astype(np.float32), (*(shift_mm / SPACING_XY), 0), order=1) > 0.5
    if any(les["ot"][:, :, sl].sum() < max(1, les["ot_dwi"][:, :, sl].sum() // 2) for sl in _slab_slices(slabs)):
        les["ot"], shift_mm = les["ot_dwi"], np.zeros(2)  # too small to survive the shift
    weights = tissue_weights(rng, anat, les)
    bol = bolus(rng, config)
    table, _, values = tissue_table(bol["t_frames"], bol["aif_fine"], bol["t_fine"], tissue_values(rng))
    true = true_maps(weights, values)
    ct, darkening = ncct(rng, anat, les, times, config)
    art, sinus = vessels(rng, anat, -1 if les["side"] == "right" else 1)
    ct = np.where(art > 0.5, HU["blood"], ct)
    series = render_series(rng, config, ct, weights, table, art, sinus, bol, anat["head"])
    if config.ct_noise_hu:
        ct = ct + rng.normal(0, config.ct_noise_hu, ct.shape).astype(np.float32) * anat["head"]
    maps, _ = perfusion.compute_maps(
        series, config.frame_step, anat["brain"], method=config.method, threshold=config.svd_threshold,
        smooth_sigma=config.smooth_sigma, temporal_sigma=config.temporal_sigma, reference_mtt=config.reference_mtt,
    )  # fmt: skip
    cbf_scale, cbv_scale = float(rng.uniform(7, 14)), float(rng.uniform(12, 25))
    vols = {"CT": ct, "CBF": maps.CBF * cbf_scale, "CBV": maps.CBV * cbv_scale, "MTT": maps.MTT, "Tmax": maps.Tmax}
    vols |= {"OT": les["ot"], "4DPWI": series}
    truth = {k: true[k] for k in ("CBF", "CBV", "MTT", "Tmax", "delay")}
    truth |= {
        "core": les["core"],
        "penumbra": les["penumbra"],
        "severe": les["severe"],
        "brain": anat["brain"],
        "occluded": les["occluded"],
    }
    truth |= {"territory": anat["territory"], "ot_dwi": les["ot_dwi"]}
    extra = {"n_frames": bol["n_frames"], "ct_core_darkening_hu": round(darkening, 2)}
    extra |= {"ot_shift_x_mm": round(float(shift_mm[0]), 2), "ot_shift_y_mm": round(float(shift_mm[1]), 2)}
    extra |= {k: round(v, 3) for k, v in times.items()} | {"cbf_scale": round(cbf_scale, 3)}
    extra |= {"cbv_scale": round(cbv_scale, 3), "noise_hu": config.noise_hu, "seed": seed, "_z": heights}
    extra |= {f"aif_{k}": round(float(x), 3) for k, x in bol["params"].items()}
    return _slabs(slabs, vols, truth, les, spacing, extra, config.write_pwi)
