"""The classical baseline: RAPID-style core (relative CBF < 30 %) from the provided maps, per study.

    python -m stroke_helpers baseline DATA_DIR [--split TRAINING] [--out FILE.json]

Works on real ISLES 2018 and on the phantom alike (it reads the maps through the loader). On real
ISLES 2018 this baseline scores Dice 0.29 over the 94 training cases (docs/decisions.md §5); learned models
must beat it clearly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .datasets import brain_mask
from .isles import discover_cases, load_study
from .metrics import dice, precision
from .perfusion import core_rcbf, hypoperfusion_tmax, tissue_mask


def classical_baseline(
    root: str | Path, split: str = "TRAINING", threshold: float = 0.3, progress: bool = True
) -> list[dict]:
    """Per study: Dice and precision of the rCBF < ``threshold`` core against OT, those of the
    Tmax > 6 s hypoperfusion (which overestimates the OT), and volumes (mL). CSF and vessels are
    excluded from the thresholded region and from the reference (:func:`perfusion.tissue_mask`)."""
    rows = []
    for case in tqdm(discover_cases(root, split), desc="rCBF core", disable=not progress):
        study = load_study(case)
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


def report_baseline(data: str | Path, split: str = "TRAINING", out: Path | None = None) -> dict:
    """Score the baseline over a split, print its summary, and write it to ``out`` (JSON) if given."""
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
        Path(out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
