"""Classical baselines, per study: the RAPID-style core (relative CBF < 30 %) and the
hypoperfused region (Tmax > 6 s) from the provided maps, and an NCCT-only hypodensity (the
lesion darker than its mirror across the midline).

    python -m stroke_helpers baseline DATA_DIR [--split TRAINING|TESTING] [--out FILE.json]

Works on real ISLES 2018 and on the phantom alike (it reads the maps through the loader). On real
ISLES 2018 this baseline scores Dice 0.29 over the 94 training cases (docs/decisions.md §5); learned models
must beat it clearly.

The experiment grid scores all three (:data:`THRESHOLDS`, :func:`score_thresholds`) on the
networks' own validation and test studies with the networks' metrics
(:func:`~stroke_helpers.metrics.study_metrics`, native resolution), so the report sets them
beside the networks and compares them paired.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from . import files
from .datasets import brain_mask
from .isles import SPLITS, IslesError, Study, check_cases, discover_cases, load_study
from .isles24 import NO_TEST_LABELS, is_converted
from .metrics import dice, lesion_metrics, precision, study_metrics, summarise
from .perfusion import core_rcbf, hypoperfusion_tmax, tissue_mask
from .truth import has_test_truth, truth_mask


def classical_baseline(
    root: str | Path, split: str = "TRAINING", threshold: float = 0.3, progress: bool = True
) -> list[dict]:
    """Per study: Dice and precision of the rCBF < ``threshold`` core against OT, those of the
    Tmax > 6 s hypoperfusion (which overestimates the OT), and volumes (mL). CSF and vessels are
    excluded from the thresholded region and from the reference (:func:`perfusion.tissue_mask`).

    ``TESTING`` is scored against the phantom's truth folder (its cases carry no OT); real ISLES
    2018 keeps those masks private, which is refused in one line before any work, as is any
    case :func:`~stroke_helpers.isles.check_study` finds a problem in."""
    cases = baseline_cases(root, split)
    rows = []
    for case in tqdm(cases, desc="rCBF core", disable=not progress):
        study = load_study(case)
        if study.mask is None:  # TESTING: the expert mask is in truth/
            study.mask = truth_mask(root, study)
        tissue = tissue_mask(study.CT, brain_mask(study), cbv=study.CBV)  # no CSF, no vessels
        core = core_rcbf(study.CBF, tissue, study.Tmax, threshold)
        ot = study.mask.astype(bool)
        hypo = hypoperfusion_tmax(study.Tmax, tissue)
        rows.append(
            {
                "study": study.name,
                "dice": dice(core, ot),
                "precision": precision(core, ot),
                "tmax_dice": dice(hypo, ot),
                "tmax_precision": precision(hypo, ot),
                "core_ml": float(core.sum()) * study.voxel_ml,
                "lesion_ml": study.lesion_ml,
            }
        )
    return rows


def baseline_cases(root: str | Path, split: str) -> list[Path]:
    """The case folders of ``split``, each checked, and with an expert mask to score against."""
    if split not in SPLITS:
        raise ValueError(f"split must be {' or '.join(SPLITS)}, not {split!r}")
    if split == "TESTING" and is_converted(root):
        raise IslesError(f"{root}: {NO_TEST_LABELS.replace('--split val', 'TRAINING')}")
    if split == "TESTING" and not has_test_truth(root):
        raise IslesError(
            f"{root}: cannot score TESTING: no truth/TESTING folder with its expert masks "
            "(real ISLES 2018 keeps them private; only the synthetic dataset has them); score TRAINING"
        )
    cases = discover_cases(root, split)
    if not cases:
        raise IslesError(f"{Path(root) / split}: no case_N folders")
    check_cases(cases)
    return cases


def ncct_hypodensity(ct: np.ndarray, brain: np.ndarray, drop_hu: float = 2.0, sigma: float = 2.0) -> np.ndarray:
    """NCCT-only lesion estimate: parenchyma whose CT, smoothed in-plane (``sigma`` voxels, tissue
    only), is more than ``drop_hu`` below the same point mirrored across the midline (the brain's
    centre of mass along the left-right axis). Ischaemic tissue takes up water and darkens by a
    few HU over hours, which is why this finds late lesions and misses early ones."""
    tissue = tissue_mask(ct, brain).astype(np.float32)
    weight = ndimage.gaussian_filter(tissue, (sigma, sigma, 0))
    smooth = ndimage.gaussian_filter(ct.astype(np.float32) * tissue, (sigma, sigma, 0)) / np.maximum(weight, 1e-6)
    x = np.arange(ct.shape[0])[:, None, None]
    centre = float((x * brain).sum() / max(brain.sum(), 1))
    mirror = ndimage.shift(smooth[::-1], (2 * centre - (ct.shape[0] - 1), 0, 0), order=1, mode="nearest")
    mirror_tissue = ndimage.shift(tissue[::-1], (2 * centre - (ct.shape[0] - 1), 0, 0), order=0) > 0
    return (tissue > 0) & mirror_tissue & (smooth < mirror - drop_hu)


def ncct_baseline(root: str | Path, studies: list[str], drop_hu: float = 2.0) -> dict[str, float]:
    """``{study: Dice}`` of :func:`ncct_hypodensity` against the expert mask, for ``studies``
    (``"TRAINING/case_N"``; TESTING masks come from the phantom's truth folder)."""
    out = {}
    for name in studies:
        study = load_study(Path(root) / name, modalities=("CT",), require_mask=not name.startswith("TESTING/"))
        if study.mask is None:
            study.mask = truth_mask(root, study)
        out[name] = dice(ncct_hypodensity(study.CT, brain_mask(study), drop_hu), study.mask.astype(bool))
    return out


#: The classical threshold methods set beside the networks: folder name -> label. The folder
#: names are those of :meth:`~stroke_helpers.runs.ResultsFolder.threshold`.
THRESHOLDS = {
    "rcbf_below_30": "rCBF < 30 %",
    "tmax_above_6s": "Tmax > 6 s",
    "ncct_hypodensity": "NCCT hypodensity",
}
#: What each method reads: the modalities loaded for :func:`threshold_masks`.
THRESHOLD_INPUTS = ("CT", "CBV", "CBF", "Tmax")


def threshold_masks(study: Study, drop_hu: float = 2.0) -> dict[str, np.ndarray]:
    """Each of :data:`THRESHOLDS` on one study (``CT``, ``CBV``, ``CBF`` and ``Tmax`` loaded),
    exactly as :func:`classical_baseline` (rCBF < 30 %, Tmax > 6 s, CSF and vessels excluded)
    and :func:`ncct_baseline` (the brain found on CT alone: an NCCT-only method) compute them."""
    tissue = tissue_mask(study.CT, brain_mask(study), cbv=study.CBV)
    ct_only = dataclasses.replace(study, images={"CT": study.CT})
    return {
        "rcbf_below_30": core_rcbf(study.CBF, tissue, study.Tmax),
        "tmax_above_6s": hypoperfusion_tmax(study.Tmax, tissue),
        "ncct_hypodensity": ncct_hypodensity(study.CT, brain_mask(ct_only), drop_hu),
    }


def score_thresholds(root: str | Path, studies: list[str], progress: bool = True) -> dict[str, list[dict]]:
    """``{method: rows}`` for each of :data:`THRESHOLDS` on ``studies`` (``"TRAINING/case_N"``;
    TESTING masks come from the phantom's truth folder): per study, the rows
    :func:`~stroke_helpers.inference.evaluate` writes for a network (every metric at native
    resolution, on a converted ISLES 2024 dataset the lesion-wise scores too, the lesion and
    predicted volumes), so both are scored by the same code."""
    rows: dict[str, list[dict]] = {name: [] for name in THRESHOLDS}
    lesionwise = is_converted(root)  # as evaluate does
    for name in tqdm(studies, desc="threshold baselines", disable=not progress):
        study = load_study(Path(root) / name, modalities=THRESHOLD_INPUTS, require_mask=not name.startswith("TESTING/"))
        if study.mask is None:
            study.mask = truth_mask(root, study)
        truth = study.mask.astype(bool)
        for method, pred in threshold_masks(study).items():
            row = {"study": name, **study_metrics(pred, truth, study.spacing)}
            if lesionwise:
                row |= lesion_metrics(pred, truth)
            row["lesion_ml"], row["predicted_ml"] = study.lesion_ml, float(pred.sum()) * study.voxel_ml
            rows[method].append(row)
    return rows


def threshold_result(method: str, split: str, rows: list[dict]) -> dict:
    """One method's scores in the layout of a run's ``metrics*.json`` (what
    :func:`~stroke_helpers.runs.read_metrics` reads)."""
    return {
        "run": f"thresholds/{method}",
        "name": THRESHOLDS[method],
        "split": split,
        "studies": rows,
        "summary": summarise(rows),
    }


def report_baseline(data: str | Path, split: str = "TRAINING", out: Path | None = None, force: bool = False) -> dict:
    """Score the baseline over a split, print its summary, and write it to ``out`` (JSON) if
    given: an existing ``out`` is kept unless ``force``, a folder refused, before any work."""
    if out:
        files.check_output(out, force)
    rows = classical_baseline(data, split)
    d = np.array([r["dice"] for r in rows])
    p = np.array([r["precision"] for r in rows])
    summary = {
        "studies": len(rows),
        "dice_mean": float(d.mean()),
        "dice_std": float(d.std()),
        "precision_mean": float(p.mean()),
        "precision_std": float(p.std()),
        "rows": rows,
    }
    print(f"rCBF < 30 % core vs OT on {data} {split}: {len(rows)} studies")
    print(f"  Dice      {d.mean():.3f} ± {d.std():.3f}  (median {np.median(d):.3f})")
    print(f"  precision {p.mean():.3f} ± {p.std():.3f}")
    td, tp = (np.array([r[k] for r in rows]) for k in ("tmax_dice", "tmax_precision"))
    summary |= {"tmax_dice_mean": float(td.mean()), "tmax_precision_mean": float(tp.mean())}
    ml = np.array([r["lesion_ml"] for r in rows])
    summary["lesion_ml_median"] = float(np.median(ml))
    print(f"Tmax > 6 s vs OT (overestimates): Dice {td.mean():.3f} ± {td.std():.3f}, precision {tp.mean():.3f}")
    print(f"median lesion {np.median(ml):.1f} mL")
    if out:
        files.write_text(out, json.dumps(summary, indent=2) + "\n")
    return summary
