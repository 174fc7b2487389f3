"""Ischaemia: an occlusion site, its territory, penumbra, core, time since onset and the OT.

Occlusion sites (probability; level-1 atlas labels of the occluded side, see :mod:`.territories`),
after the distribution of large-vessel occlusions in thrombectomy-era cohorts:

======================  ====  ===============================================
M1 MCA                  0.38  lateral lenticulostriate + every MCA branch
M2 superior division    0.16  MCA frontal + insular
M2 inferior division    0.12  MCA parietal + temporal + occipital
ICA terminus            0.05  ACA + medial/lateral lenticulostriate + MCA
ACA                     0.07  ACA + medial lenticulostriate
PCA                     0.14  PCA temporal + occipital + posterior choroidal/thalamoperforators
perforator (lacunar)    0.08  lateral lenticulostriate or thalamoperforators, tiny lesions
======================  ====  ===============================================

Within the occluded territory (tissue only), the hypoperfused region grows from the occlusion's
deep origin (lenticulostriate and insular for the MCA, the territory's deepest part otherwise)
outward; a smooth collateral field (SD 0.35, ~15 mm) makes its border irregular. It is graded
(docs/decisions.md §6): a severe zone (Tmax > 10 s) around the origin inside a milder rim (Tmax
6-10 s), the severe share being the hypoperfusion intensity ratio ``HIR = 0.2 + 0.45 (1 - g)``
(collateral grade ``g ~ U(0, 1)``: good collaterals, a wide mild rim; DEFUSE 2's median ~0.4).

The territory is the atlas's widened by 12 mm into the same side's tissue (:func:`borderzone`).
Volumes: the OT of a slab is drawn log-normal, median 30 mL, sigma 1.1 (0.1-150 mL), then capped at
30 % of the territory in view, so the median the slab shows is smaller (the realism scorecard's
``lesion_ml``); 0.2-2 mL for perforators. The hypoperfusion is ``r`` times the OT, ``r``
log-normal, median 9, sigma 0.5 (2-30; capped by the territory): DEFUSE 3's DWI lesions are a
small part of Tmax > 6 s. The core on CTP is 35-85 % of the OT (the OT is drawn 36 min later, so
most of it is already core: rCBF < 38 % is about unbiased against early DWI, Cereda 2016), in the
severe zone, with a rougher border.

Time (per patient): onset-to-CT ``t_ct`` ~ log-normal, median 150 min, sigma 0.6, 30-720 min;
CT-to-DWI ``t_dwi`` ~ log-normal, median 36 min, sigma 0.5. NCCT: net water uptake of the core
grows 5.5 %/h up to 30 %, so its hypodensity is ``HU_tissue * NWU`` (faint early: ~4 HU at 2 h;
obvious late: ~10 HU from 5.5 h on). Published rates are 2.5-2.6 %/h (Minnerup 2016, Broocks 2018); the
phantom's is set higher so that, after partial volume with CSF and the core's ragged border, the
measured hypodensity 2-4 h after onset lies in the upper half of the published 2-5 HU, where the
`cpu` preset's short training can learn it (:mod:`stroke_helpers.difficulty`). OT (drawn on DWI ``t_dwi`` after the CTP):
the core plus the severe penumbra that infarcts in that interval: the part nearest the core where
flow is lowest (the patient's ``flow`` field, which also makes the severe zone's perfusion patchy in
:mod:`.series`: the lower the flow, the sooner tissue dies, Jones 1981), plus, in 60 % of the
patients, a reperfused part (5-35 % of the OT): tissue already infarcted outside the hypoperfusion,
where a branch recanalised before the CTP, invisible on the perfusion maps (real DWI lesions are
not always inside Tmax > 6 s).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy import smooth_field

SITES = {
    "M1 MCA": (0.38, (5, 7, 9, 11, 13, 15)),
    "M2 superior": (0.16, (7, 15)),
    "M2 inferior": (0.12, (9, 11, 13)),
    "ICA terminus": (0.05, (1, 3, 5, 7, 9, 11, 13, 15)),
    "ACA": (0.07, (1, 3)),
    "PCA": (0.14, (17, 19, 21)),
    "perforator": (0.08, (5, 21)),
}
DEEP_ORIGIN = (3, 5, 15, 21)  # labels where the hypoperfusion starts when the territory has them
NWU_PER_HOUR, NWU_MAX = 0.055, 0.30
OT_MEDIAN_ML = 30.0  # the OT's log-normal median per slab (sigma 1.1)
CORE_FRACTION = (0.35, 0.85)  # of the OT already core on CTP
HYPOPERFUSION_RATIO = (9.0, 0.5, 2.0, 30.0)  # Tmax > 6 s volume / OT: log-normal median, sigma, clip
REPERFUSED = (0.6, 0.05, 0.35)  # probability of a reperfused part, its share of the OT (uniform)
BORDERZONE_MM = 12.0  # how far (mm) the atlas territory is widened into the same side's tissue
FLOW_MM, GROWTH_FLOW_MM = 4.0, 3.0  # the flow field's smoothness; how far (mm) 1 SD lower flow pulls the growth


def intensity_ratio(collaterals: float) -> float:
    """Severe (Tmax > 10 s) share of the hypoperfusion: 0.65 behind poor collaterals, 0.2 behind
    good ones (the hypoperfusion intensity ratio; DEFUSE 2 median ~0.4, Olivot 2014)."""
    return 0.2 + 0.45 * (1 - collaterals)


def onset_times(rng) -> dict:
    """Onset-to-CT and CT-to-DWI times (minutes) and the collateral grade of one patient."""
    return {
        "onset_to_ct_min": float(np.clip(rng.lognormal(np.log(150), 0.6), 30, 720)),
        "ct_to_dwi_min": float(np.clip(rng.lognormal(np.log(36), 0.5), 5, 180)),
        "collaterals": float(rng.uniform(0, 1)),
    }


def core_hypodensity(onset_to_ct_min: float, tissue_hu: float = 34.0) -> float:
    """HU by which the core is darker than healthy tissue ``onset_to_ct_min`` after onset."""
    return tissue_hu * min(NWU_PER_HOUR * onset_to_ct_min / 60, NWU_MAX)


def territory_mask(labels: np.ndarray, site: str, side: int, rng=None) -> np.ndarray:
    """Voxels of ``labels`` in the occluded territory on ``side`` (-1 left: odd labels)."""
    chosen = SITES[site][1]
    if site == "perforator" and rng is not None:
        chosen = (chosen[rng.integers(len(chosen))],)
    wanted = [c if side < 0 else c + 1 for c in chosen]
    return np.isin(labels, wanted)


def _top_k(score: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros(score.shape, bool)
    k = int(min(max(k, 0), candidates.sum()))
    if k:
        flat = np.flatnonzero(candidates)
        out.flat[flat[np.argpartition(-score.flat[flat], k - 1)[:k]]] = True
    return out


def choose_site(rng, labels: np.ndarray, tissue: np.ndarray, min_voxels: int = 50) -> tuple[str, int, np.ndarray]:
    """An occlusion site by its frequency, whose territory the slab sees (``min_voxels``)."""
    names = list(SITES)
    p = np.array([SITES[n][0] for n in names])
    for _ in range(40):
        site, side = names[rng.choice(len(names), p=p / p.sum())], int(rng.choice([-1, 1]))
        terr = territory_mask(labels, site, side, rng) & tissue
        if terr.sum() >= min_voxels:
            return site, side, terr
    side = int(rng.choice([-1, 1]))
    return "M1 MCA", side, (labels > 0) & tissue & (np.sign(labels % 2 - 0.5) == -side)


def _origin_distance(labels: np.ndarray, terr: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from the occlusion's deep origin inside the territory."""
    deep = terr & np.isin(labels, [d + s for d in DEEP_ORIGIN for s in (0, 1)])
    if deep.sum() < 5:  # no deep part in view: the territory's deepest voxels
        inner = ndimage.distance_transform_edt(terr, sampling=spacing)
        deep = terr & (inner >= np.percentile(inner[terr], 90))
    return ndimage.distance_transform_edt(~deep, sampling=spacing).astype(np.float32)


def borderzone(
    labels: np.ndarray, tissue: np.ndarray, terr: np.ndarray, spacing, mm: float = BORDERZONE_MM
) -> np.ndarray:
    """``terr`` widened by ``mm`` into the same side's tissue: an atlas territory is a population's
    average, and an individual's border with its neighbours lies up to a centimetre or more away
    (the borderzone), which a proximal occlusion's hypoperfusion reaches."""
    same_side = tissue & (labels > 0) & (labels % 2 == int(labels[terr].flat[0]) % 2)
    return same_side & (ndimage.distance_transform_edt(~terr, sampling=spacing) <= mm)


def ischaemia(rng, labels: np.ndarray, tissue: np.ndarray, spacing: tuple, times: dict, n_slabs: int = 1) -> dict:
    """Core, penumbra and OT masks and the occluded territory of one patient's slices (the OT
    target scales with the number of slabs, each of which sees about one slab's worth)."""
    site, side, terr = choose_site(rng, labels, tissue)
    if site != "perforator":
        terr = borderzone(labels, tissue, terr, spacing)
    ot_ml = (
        rng.uniform(0.2, 2.0) if site == "perforator" else np.clip(rng.lognormal(np.log(OT_MEDIAN_ML), 1.1), 0.1, 150)
    )
    flow = smooth_field(rng, labels.shape, FLOW_MM / spacing[0])
    return _lesion(rng, labels, terr, spacing, times, ot_ml * n_slabs, flow) | {
        "flow": flow,
        "site": site,
        "side": "left" if side < 0 else "right",
        "territory": "+".join(sorted({_group(v) for v in np.unique(labels[terr])})),
    }


def second_focus(rng, les: dict, labels, tissue, spacing, times, sl: slice) -> dict:
    """A small embolic focus (0.5-5 mL) in slab ``sl`` when the patient's lesion missed it: in the
    occluded territory where the slab sees it, else in the same side's MCA (then recorded)."""
    in_slab = np.zeros(labels.shape, bool)
    in_slab[:, :, sl] = True
    terr = les["occluded"] & in_slab
    if terr.sum() < 20:
        terr = territory_mask(labels, "M1 MCA", -1 if les["side"] == "left" else 1) & tissue & in_slab
        les["occluded"] = les["occluded"] | terr
        les["territory"] = "+".join(sorted(set(les["territory"].split("+")) | {"MCA"}))
    if terr.sum() < 20:
        return les
    extra = _lesion(rng, labels, terr, spacing, times, float(rng.uniform(0.5, 5)), les["flow"])
    for k in ("core", "ot", "reperfused"):
        les[k] = les[k] | extra[k]
    for k in ("penumbra", "severe"):
        les[k] = (les[k] | extra[k]) & ~les["core"] & les["occluded"]
    return les


def _lesion(rng, labels, terr: np.ndarray, spacing, times: dict, ot_ml: float, flow: np.ndarray) -> dict:
    """Graded hypoperfusion, core, OT and reperfused part of ``ot_ml`` inside ``terr``, grown from
    its deep origin (module docstring)."""
    voxel_ml = float(np.prod(spacing)) / 1000
    n_terr = int(terr.sum())
    n_ot = min(max(int(round(ot_ml / voxel_ml)), 3), int(0.3 * n_terr))
    median, sigma, lo, hi = HYPOPERFUSION_RATIO
    n_hyp = int(np.clip(n_ot * np.clip(rng.lognormal(np.log(median), sigma), lo, hi), n_ot + 2, 0.95 * n_terr))
    p_rep, *share = REPERFUSED
    n_rep = int(n_ot * rng.uniform(*share)) if rng.uniform() < p_rep else 0
    n_core = max(int((n_ot - n_rep) * rng.uniform(*CORE_FRACTION)), 2)
    n_severe = int(np.clip(n_hyp * intensity_ratio(times["collaterals"]), 1.2 * (n_ot - n_rep), n_hyp - 1))
    dist = _origin_distance(labels, terr, spacing)
    scale = (n_hyp * voxel_ml * 1000) ** (1 / 3)
    field = lambda mm: smooth_field(rng, terr.shape, mm / spacing[0])  # noqa: E731
    score = -dist / scale + 0.35 * field(15)
    hyp = _top_k(score, terr, n_hyp)
    severe = _top_k(score + 0.15 * field(8), hyp, n_severe)
    core = _top_k(score + 0.5 * field(5), severe, n_core)
    from_core = ndimage.distance_transform_edt(~core, sampling=spacing)
    grow = _top_k(-from_core - GROWTH_FLOW_MM * flow, severe & ~core, n_ot - n_rep - n_core)
    reperfused = _reperfused(rng, terr & ~hyp, hyp, spacing, n_rep)
    return {
        "core": core | reperfused,
        "penumbra": hyp & ~core,
        "severe": severe & ~core,
        "reperfused": reperfused,
        "ot": core | grow | reperfused,
        "occluded": terr,
    }


def _reperfused(rng, outside: np.ndarray, hyp: np.ndarray, spacing, n: int) -> np.ndarray:
    """``n`` voxels of ``outside`` next to the hypoperfusion, around one random point of its rim:
    an infarct whose branch recanalised before the CTP."""
    if n < 3 or outside.sum() < 2 * n:
        return np.zeros(outside.shape, bool)
    rim = outside & ndimage.binary_dilation(hyp, np.ones((3, 3, 1)), iterations=2)
    candidates = np.flatnonzero(rim if rim.any() else outside)
    seed = np.zeros(outside.shape, bool)
    seed.flat[candidates[rng.integers(len(candidates))]] = True
    return _top_k(-ndimage.distance_transform_edt(~seed, sampling=spacing), outside, n)


def _group(label: int) -> str:
    odd = int(label) - (1 - int(label) % 2)
    return "ACA" if odd in (1, 3) else "MCA" if odd <= 16 else "PCA" if odd <= 24 else "VB"
