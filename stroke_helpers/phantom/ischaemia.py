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

Within the occluded territory (tissue only), the hypoperfused region (penumbra plus core) grows
from the occlusion's deep origin (lenticulostriate and insular for the MCA, the territory's
deepest part otherwise) outward; a per-patient collateral grade ``g ~ U(0, 1)`` and a smooth
collateral field (SD 0.35, ~15 mm) make its border irregular. The core grows the same way inside
it with a rougher border. Volumes: the OT seen by the slab is log-normal, median 14 mL, sigma 1.1
(0.1-150 mL, at most 80 % of the territory in view), 0.2-2 mL for perforators; the core on CTP is
10-50 % of it (CTP cores underestimate the DWI lesion: this sets the classical baseline's Dice near
real ISLES's 0.29); the penumbra is what the OT's growth implies (below), capped by the territory.

Time (per patient): onset-to-CT ``t_ct`` ~ log-normal, median 150 min, sigma 0.6, 30-720 min;
CT-to-DWI ``t_dwi`` ~ log-normal, median 36 min, sigma 0.5. NCCT: net water uptake of the core
grows 2.6 %/h (Broocks et al. 2018) up to 30 %, so its hypodensity is ``HU_tissue * NWU`` (faint
early: ~2-3 HU at 2 h; obvious late: ~8 HU at 8 h). OT (drawn on DWI ``t_dwi`` after the CTP):
the core plus the penumbra lost in that interval, nearest the core; the fraction lost is
``1 - exp(-t_dwi / tau)``, ``tau = 15 * 10 ** (1.5 g)`` min (poor collaterals: fast growth), so
the penumbra is ``(OT - core) / lost``: small behind poor collaterals, wide behind good ones.
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
NWU_PER_HOUR, NWU_MAX = 0.026, 0.30
CORE_FRACTION = (0.1, 0.5)  # of the OT already core on CTP


def lost_fraction(times: dict) -> float:
    """Fraction of the penumbra infarcted between CTP and DWI: ``1 - exp(-t_dwi / tau)``, with
    ``tau = 15 * 10 ** (1.5 g)`` min (collateral grade ``g``: poor 15 min, good 470 min)."""
    return float(1 - np.exp(-times["ct_to_dwi_min"] / (15 * 10 ** (1.5 * times["collaterals"]))))


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


def ischaemia(rng, labels: np.ndarray, tissue: np.ndarray, spacing: tuple, times: dict, n_slabs: int = 1) -> dict:
    """Core, penumbra and OT masks and the occluded territory of one patient's slices (the OT
    target scales with the number of slabs, each of which sees about one slab's worth)."""
    site, side, terr = choose_site(rng, labels, tissue)
    ot_ml = rng.uniform(0.2, 2.0) if site == "perforator" else np.clip(rng.lognormal(np.log(14), 1.1), 0.1, 150)
    return _lesion(rng, labels, terr, spacing, times, ot_ml * n_slabs) | {
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
    extra = _lesion(rng, labels, terr, spacing, times, float(rng.uniform(0.5, 5)))
    for k in ("core", "ot"):
        les[k] = les[k] | extra[k]
    les["penumbra"] = (les["penumbra"] | extra["penumbra"]) & ~les["core"] & les["occluded"]
    return les


def _lesion(rng, labels, terr: np.ndarray, spacing, times: dict, ot_ml: float) -> dict:
    """Hypoperfused region, core and OT of ``ot_ml`` inside ``terr``, grown from its deep origin."""
    voxel_ml = float(np.prod(spacing)) / 1000
    n_ot = min(max(int(round(ot_ml / voxel_ml)), 3), int(0.8 * terr.sum()))
    n_core = max(int(n_ot * rng.uniform(*CORE_FRACTION)), 2)
    lost = lost_fraction(times)
    n_hyp = int(np.clip(n_core + (n_ot - n_core) / lost, n_ot + 1, 0.95 * terr.sum()))
    dist = _origin_distance(labels, terr, spacing)
    scale = (n_hyp * voxel_ml * 1000) ** (1 / 3)
    field = lambda mm: smooth_field(rng, terr.shape, mm / spacing[0])  # noqa: E731
    collateral = 0.35 * field(15)
    hyp = _top_k(-dist / scale + collateral, terr, n_hyp)
    core = _top_k(-dist / scale + collateral + 0.5 * field(5), hyp, n_core)
    from_core = ndimage.distance_transform_edt(~core, sampling=spacing)
    grow = _top_k(-from_core + 1.5 * field(4), hyp & ~core, min(n_ot - n_core, int(hyp.sum() - core.sum()) - 1))
    return {"core": core, "penumbra": hyp & ~core, "ot": core | grow, "occluded": terr}


def _group(label: int) -> str:
    odd = int(label) - (1 - int(label) % 2)
    return "ACA" if odd in (1, 3) else "MCA" if odd <= 16 else "PCA" if odd <= 24 else "VB"
