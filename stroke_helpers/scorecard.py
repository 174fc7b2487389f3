"""How much information each map carries, measured against published real-data ranges: the
realism scorecard.

    python -m stroke_helpers realism DATA [--split TRAINING] [--out FILE] [--no-progress]

:data:`TARGETS` holds one :class:`Target` per quantity: its real-data range and where the range
comes from (short citations; the full references are in docs/decisions.md, References).
:func:`scorecard` measures every quantity per study of an ISLES-layout dataset, the phantom's
or real ISLES 2018, summarises it over the split (median or mean, as the target says) and says
pass or fail. It is a measurement, not a test: on the phantom it says how far each map is from
real data, which is what the phantom is calibrated against (docs/decisions.md §6). Calibrate on
TRAINING only; TESTING can be scored, never tuned on.

The thresholds are the package's own (:func:`~stroke_helpers.perfusion.tissue_mask`,
:func:`~stroke_helpers.perfusion.core_rcbf`, :func:`~stroke_helpers.perfusion.hypoperfusion_tmax`,
:func:`~stroke_helpers.baseline.ncct_hypodensity`), applied exactly as
:func:`~stroke_helpers.baseline.classical_baseline` applies them (CSF and vessels excluded), so
the scorecard scores what the chapters show.

What each measure needs:

- the images and the expert mask (OT): the threshold regions against the lesion, volumes, the
  NCCT baseline's Dice; they work on real data (TESTING masks come from the phantom's truth;
  real ISLES 2018 keeps them private, so there they read "n/a");
- the images only: the Tmax > 10 s / Tmax > 6 s ratio, the NCCT's noise and grey-white
  contrast, the CBV map's noise; they work on any ISLES case;
- the phantom's truth (:mod:`stroke_helpers.truth`): the core's NCCT hypodensity needs the true
  core and the onset time, which real data does not have ("n/a (needs the phantom's truth)").

Healthy tissue, where the noise and contrast are measured: the contralateral half of the
parenchyma (:func:`~stroke_helpers.perfusion.reference_hemisphere`, CSF and vessels excluded),
without Tmax > 6 s and without the lesion dilated by two voxels. See :func:`ct_noise`,
:func:`grey_white_contrast` and :func:`cbv_noise` for why each is measured the way it is.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from .baseline import ncct_hypodensity
from .datasets import brain_mask
from .files import check_output, write_csv
from .isles import IslesError, Study, discover_cases, load_study
from .metrics import dice, precision
from .perfusion import core_rcbf, hypoperfusion_tmax, reference_hemisphere, tissue_mask
from .truth import SCORECARD_FILE, TRUTH, has_truth, read_cases, read_truth

#: Onset-to-CT window (minutes) of the studies whose core hypodensity is compared with "about 3 h".
ONSET_WINDOW_MIN = (120.0, 240.0)
#: Fewest voxels a region needs before a noise, contrast or hypodensity is measured in it.
MIN_VOXELS = 50
NEEDS_TRUTH = "n/a (needs the phantom's truth)"
NO_MASK = "n/a (no expert mask)"
NONE_MEASURED = "n/a (no study measurable)"


@dataclass(frozen=True)
class Target:
    """One quantity of the scorecard and its real-data range.

    name : key of the per-study measurement (:func:`measure_study`) and of the table's row.
    low, high : the range, inclusive; ``None``: open on that side.
    source : short citation of the range (full references in docs/decisions.md).
    how : what is measured per study, in words.
    summary : ``"median"`` or ``"mean"`` over the split's studies (finite values only).
    unit : units of the value (``""`` for ratios and scores).
    needs : ``"mask"`` (images and OT), ``"images"`` (images only) or ``"truth"`` (the phantom's truth).
    """

    name: str
    low: float | None
    high: float | None
    source: str
    how: str
    summary: str = "median"
    unit: str = ""
    needs: str = "mask"

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    @property
    def range(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.low is None:
            return f"<= {self.high:g}{unit}"
        if self.high is None:
            return f">= {self.low:g}{unit}"
        return f"{self.low:g} - {self.high:g}{unit}"


_TMAX = "Tmax > 6 s (parenchyma, classical_baseline's)"
_CORE = "rCBF < {} % of the contralateral tissue mean (core_rcbf)"

#: The scorecard, in the order it prints (docs/decisions.md §6 says why each range).
TARGETS: tuple[Target, ...] = (
    Target("lesion_ml", 10, 20, "ISLES 2018: 15.2 mL, IQR 5.7-45 (Hakim 2021)",
           "expert mask (OT) volume", unit="mL"),
    Target("tmax6_dice", 0.10, 0.35, "DEFUSE 3 volumes (Christensen 2019); DWI 36 min after CTP (Hakim 2021)",
           f"Dice of {_TMAX} against OT", summary="mean"),
    Target("tmax6_precision", None, 0.30, "DEFUSE 3 volumes (Christensen 2019); DWI 36 min after CTP (Hakim 2021)",
           f"precision of {_TMAX} against OT", summary="mean"),
    Target("tmax6_over_lesion", 3, 12, "DEFUSE 3: DWI 7-17 mL, Tmax > 6 s 98-100 mL (Christensen 2019)",
           f"volume of {_TMAX} / OT volume"),
    Target("tmax10_over_tmax6", 0.2, 0.65, "hypoperfusion intensity ratio, median ~0.4 (Olivot 2014)",
           "volume Tmax > 10 s / volume Tmax > 6 s (parenchyma)", needs="images"),
    Target("lesion_outside_tmax6", 0.02, 0.30, "estimate, no single source: real DWI is not always inside Tmax > 6 s",
           f"fraction of OT outside {_TMAX}"),
    Target("core30_dice", 0.15, 0.40, "RAPID-style core vs DWI, ISLES 2018 training: 0.29 (Hakim 2021)",
           f"Dice of {_CORE.format(30)} against OT", summary="mean"),
    Target("core30_over_lesion", 0.4, 1.1, "rCBF < 30 % underestimates early DWI (Cereda 2016)",
           f"volume of {_CORE.format(30)} / OT volume"),
    Target("core38_over_lesion", 0.7, 1.4, "rCBF < 38 % about unbiased against early DWI (Cereda 2016)",
           f"volume of {_CORE.format(38)} / OT volume"),
    Target("ncct_dice", 0.10, 0.25, "NCCT-only Dice vs DWI ~0.20 (Florez 2024, Table 1)",
           "Dice of the NCCT hypodensity baseline (ncct_hypodensity) against OT", summary="mean"),
    Target("ct_core_hypodensity_hu", 2, 5, "net water uptake ~2.5 %/h of ~35 HU (Minnerup 2016)",
           "true core's CT below its mirror across the midline, studies 2-4 h after onset",
           unit="HU", needs="truth"),
    Target("ct_noise_hu", 3, 5, "NCCT SD 4.0 HU at 120 kV (Nakamura 2019)",
           "robust SD of CT minus its 5x5 in-plane mean, healthy deep white matter", unit="HU", needs="images"),
    Target("ct_grey_white_hu", 5, 9, "grey-white contrast 7.1 HU at 120 kV (Nakamura 2019)",
           "mean CT of healthy tissue in the top CBF quartile minus the bottom quartile", unit="HU",
           needs="images"),
    Target("cbv_wm_cov", 0.15, 0.35, "provisional: no published voxel CoV of RAPID CBV (§6)",
           "robust coefficient of variation of CBV in healthy deep white matter", needs="images"),
)  # fmt: skip


def targets() -> dict[str, Target]:
    """:data:`TARGETS` by name."""
    return {t.name: t for t in TARGETS}


# --- measures ------------------------------------------------------------------------------


def _robust_sd(x: np.ndarray) -> float:
    """1.4826 times the median absolute deviation: the SD of a Gaussian, unmoved by outliers."""
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` eroded in-plane by ``radius`` voxels (slices are 5 mm apart, so never across them)."""
    return ndimage.binary_erosion(mask, np.ones((2 * radius + 1, 2 * radius + 1, 1)))


def deep_white_matter(ct: np.ndarray, healthy: np.ndarray) -> np.ndarray:
    """Homogeneous white matter: ``healthy`` eroded by 2 voxels in-plane (so a 5x5 window stays
    inside it), where the CT smoothed over ~3 mm is at most its median there (white matter is
    the darker half of parenchyma). Chosen from the CT alone, so a map's noise measured in it is
    not selected by the map itself."""
    inner = _erode(healthy, 2)
    if inner.sum() < MIN_VOXELS:
        return np.zeros_like(inner)
    broad = ndimage.gaussian_filter(ct.astype(np.float32), (3, 3, 0))
    return inner & (broad <= np.median(broad[inner]))


def ct_noise(ct: np.ndarray, white: np.ndarray) -> float:
    """Voxel noise SD (HU) of the NCCT: the robust SD of CT minus its 5x5 in-plane mean over the
    homogeneous white matter ``white`` (:func:`deep_white_matter`), times ``sqrt(25/24)`` (the
    local mean holds 1/25 of the voxel's own noise). The local mean removes anatomy, the robust
    SD ignores the odd vessel or calcification, and it needs no second scan or air region, so it
    works on real CT, whose noise is correlated in-plane by the reconstruction kernel: that
    correlation lowers what a 5x5 residual sees, as it lowers what a reader's ROI SD sees."""
    if white.sum() < MIN_VOXELS:
        return math.nan
    ct = ct.astype(np.float32)
    residual = (ct - ndimage.uniform_filter(ct, (5, 5, 1)))[white]
    return _robust_sd(residual) * math.sqrt(25 / 24)


def grey_white_contrast(ct: np.ndarray, cbf: np.ndarray, healthy: np.ndarray) -> float:
    """Grey-white contrast (HU) of the NCCT: the mean CT of the healthy tissue in the top quartile
    of CBF minus that of the bottom quartile.

    Grey matter's CBF is about 2.5 times white matter's, and every ISLES case has a CBF map on
    the CT's grid, so CBF sorts the tissue without a segmentation, alike on the phantom and on
    real data. A two-Gaussian fit to the CT histogram (the "modes") does not: on 5 mm slices the
    thin cortex is mixed with white matter and CSF, the phantom's histogram is one peak and the
    fit splits off the partial-volume tail instead. Partial volume and the map's smoothing mix
    some white matter into the top quartile (and grey into the bottom), so this reads lower than
    hand-placed ROIs in pure grey and white matter (the published ~7 HU) would."""
    values = cbf[healthy]
    if values.size < 4 * MIN_VOXELS:
        return math.nan
    low, high = np.percentile(values, [25, 75])
    grey, white = healthy & (cbf >= high), healthy & (cbf <= low)
    if grey.sum() < MIN_VOXELS or white.sum() < MIN_VOXELS:
        return math.nan
    return float(ct[grey].mean() - ct[white].mean())


def cbv_noise(cbv: np.ndarray, white: np.ndarray) -> float:
    """Noise of the CBV map: its robust coefficient of variation (robust SD / median) over the
    homogeneous white matter ``white`` (:func:`deep_white_matter`). Relative, so the maps'
    uncalibrated scale cancels; robust, so a vessel's CBV (several times tissue's) does not
    dominate; in white matter, whose true CBV varies least, so what is left is mostly noise."""
    values = cbv[white]
    if values.size < MIN_VOXELS or np.median(values) <= 0:
        return math.nan
    return _robust_sd(values) / float(np.median(values))


def mirror(volume: np.ndarray, brain: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` mirrored across the brain's midline: the left-right axis (the first) flipped
    about the brain's centre of mass, as :func:`~stroke_helpers.baseline.ncct_hypodensity` does."""
    x = np.arange(volume.shape[0])[:, None, None]
    centre = float((x * brain).sum() / max(brain.sum(), 1))
    flipped = volume[::-1].astype(np.float32)
    return ndimage.shift(flipped, (2 * centre - (volume.shape[0] - 1), 0, 0), order=order, mode="nearest")


def core_hypodensity(ct: np.ndarray, brain: np.ndarray, core: np.ndarray) -> float:
    """How much darker (HU) the true ``core`` is than the same place across the midline: the mean
    of mirrored CT minus CT over the core's parenchyma whose mirror is parenchyma too (the way net
    water uptake is measured, against a mirrored region)."""
    parenchyma = tissue_mask(ct, brain)
    ct = ct.astype(np.float32)
    where = core.astype(bool) & parenchyma & (mirror(parenchyma, brain, order=0) > 0.5)
    where &= mirror(core, brain, order=0) < 0.5  # a core that crosses the midline is no reference
    if where.sum() < MIN_VOXELS:
        return math.nan
    return float((mirror(ct, brain) - ct)[where].mean())


def _ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.sum() / b.sum()) if b.any() else math.nan


def measure_study(study: Study, truth: dict | None = None, onset_min: float | None = None) -> dict[str, float]:
    """Every quantity of :data:`TARGETS` for one study (loaded with CT, CBV, CBF and Tmax), NaN
    where it cannot be measured: mask quantities without ``study.mask``, the core hypodensity
    without the phantom's ``truth`` arrays (:func:`stroke_helpers.truth.read_truth`) or outside
    :data:`ONSET_WINDOW_MIN` (``onset_min``, minutes). Also ``onset_to_ct_min`` and
    ``core_hypodensity_any_hu`` (the hypodensity whatever the onset time)."""
    ct = study.CT
    brain = brain_mask(study)
    tissue = tissue_mask(ct, brain, cbv=study.CBV)  # no CSF, no vessels: as classical_baseline
    hypo6 = hypoperfusion_tmax(study.Tmax, tissue)
    hypo10 = hypoperfusion_tmax(study.Tmax, tissue, 10.0)
    out = {t.name: math.nan for t in TARGETS}
    out["tmax10_over_tmax6"] = _ratio(hypo10, hypo6)

    lesion = np.zeros(ct.shape, bool)
    if study.mask is not None:
        ot = study.mask.astype(bool)
        lesion = ot
        core30 = core_rcbf(study.CBF, tissue, study.Tmax)
        core38 = core_rcbf(study.CBF, tissue, study.Tmax, 0.38)
        ct_only = dataclasses.replace(study, images={"CT": ct})  # the NCCT baseline sees the CT alone
        out |= {
            "lesion_ml": float(ot.sum()) * study.voxel_ml,
            "tmax6_dice": dice(hypo6, ot),
            "tmax6_precision": precision(hypo6, ot),
            "tmax6_over_lesion": _ratio(hypo6, ot),
            "lesion_outside_tmax6": _ratio(ot & ~hypo6, ot),
            "core30_dice": dice(core30, ot),
            "core30_over_lesion": _ratio(core30, ot),
            "core38_over_lesion": _ratio(core38, ot),
            "ncct_dice": dice(ncct_hypodensity(ct, brain_mask(ct_only)), ot),
        }

    healthy = reference_hemisphere(study.CBF, tissue, study.Tmax) & ~hypo6
    healthy &= ~ndimage.binary_dilation(lesion, np.ones((5, 5, 1)))
    white = deep_white_matter(ct, healthy)
    out["ct_noise_hu"] = ct_noise(ct, white)
    out["ct_grey_white_hu"] = grey_white_contrast(ct, study.CBF, healthy)
    out["cbv_wm_cov"] = cbv_noise(study.CBV, white)

    out["onset_to_ct_min"] = math.nan if onset_min is None else float(onset_min)
    out["core_hypodensity_any_hu"] = math.nan
    if truth is not None and "core" in truth:
        hu = core_hypodensity(ct, brain, truth["core"])
        out["core_hypodensity_any_hu"] = hu
        lo, hi = ONSET_WINDOW_MIN
        if onset_min is not None and lo <= onset_min <= hi:
            out["ct_core_hypodensity_hu"] = hu
    return out


# --- the scorecard -------------------------------------------------------------------------


def _onsets(data: Path) -> dict[str, float]:
    """``{"TRAINING/case_N": onset-to-CT minutes}`` from the phantom's case table."""
    out = {}
    for row in read_cases(data):
        try:
            out[f"{row['split']}/{row['case']}"] = float(row["onset_to_ct_min"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def measure(data: str | os.PathLike, split: str = "TRAINING", progress: bool = True) -> list[dict]:
    """Per study of ``split``: ``{"study": name, <quantity>: value, ...}`` (:func:`measure_study`),
    with the phantom's truth when ``data`` has it (TESTING masks come from there too)."""
    data = Path(data)
    truth = has_truth(data)
    onsets = _onsets(data) if truth else {}
    cases = discover_cases(data, split)
    if not cases:
        raise IslesError(f"{data / split}: no case_N folders")
    rows = []
    for case in tqdm(cases, desc="realism scorecard", disable=not progress):
        study = load_study(case, require_mask=False)
        arrays = None
        if truth and (data / TRUTH / study.name).is_dir():
            arrays = read_truth(data, study.name)
            if study.mask is None and "ot" in arrays:
                study.mask = arrays["ot"].astype(np.uint8)
        rows.append({"study": study.name} | measure_study(study, arrays, onsets.get(study.name)))
    return rows


def summarise(per_study: list[dict], truth: bool) -> list[dict]:
    """One row per target: the median or mean of the finite per-study values, the range, and
    ``result`` ``"pass"``, ``"FAIL"`` or ``"n/a (why)"`` (``passed`` True, False or None)."""
    out = []
    masks = any(math.isfinite(r.get("lesion_ml", math.nan)) for r in per_study)
    for t in TARGETS:
        values = np.array([r.get(t.name, math.nan) for r in per_study], float)
        values = values[np.isfinite(values)]
        value, passed = math.nan, None
        if t.needs == "truth" and not truth:
            result = NEEDS_TRUTH
        elif t.needs == "mask" and not masks:
            result = NO_MASK
        elif not values.size:
            result = NONE_MEASURED
        else:
            value = float(np.median(values) if t.summary == "median" else np.mean(values))
            passed = t.contains(value)
            result = "pass" if passed else "FAIL"
        out.append(
            {
                "quantity": t.name,
                "value": value,
                "summary": f"{t.summary} of {values.size}",
                "n": int(values.size),
                "low": t.low,
                "high": t.high,
                "target": t.range,
                "result": result,
                "passed": passed,
                "unit": t.unit,
                "source": t.source,
                "how": t.how,
            }
        )
    return out


def scorecard(data: str | os.PathLike, split: str = "TRAINING", progress: bool = True) -> list[dict]:
    """The realism scorecard of ``data``'s ``split``: one row per :data:`TARGETS` entry (see
    :func:`summarise`), measured per study (:func:`measure`)."""
    return summarise(measure(data, split, progress), has_truth(data))


def _value(row: dict) -> str:
    if not math.isfinite(row["value"]):
        return "n/a"
    return f"{row['value']:.3g}" + (f" {row['unit']}" if row["unit"] else "")


def format_table(rows: list[dict]) -> str:
    """The scorecard as an aligned text table: quantity, value (and over what), target range,
    result, source."""
    header = ("quantity", "value", "over", "target", "result", "source")
    lines = [(r["quantity"], _value(r), r["summary"], r["target"], r["result"], r["source"]) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


CSV_COLUMNS = ("quantity", "value", "unit", "summary", "n", "low", "high", "target", "result", "source", "how")


def write_table(rows: list[dict], path: str | os.PathLike, split: str = "TRAINING") -> Path:
    """Write the scorecard as CSV (``split`` and :data:`CSV_COLUMNS`), replacing ``path`` whole
    (:func:`stroke_helpers.files.write_csv`: a reader never sees half a table)."""
    table = [[split, *("" if r[c] is None else r[c] for c in CSV_COLUMNS)] for r in rows]
    return write_csv(path, ["split", *CSV_COLUMNS], table)


def read_table(path: str | os.PathLike) -> list[dict]:
    """A table :func:`write_table` wrote, its values back as floats (NaN for "n/a")."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["value"] = float(r["value"]) if r["value"] not in ("", "nan") else math.nan
    return rows


def markdown_table(tables: dict[str, list[dict]]) -> str:
    """Scorecards side by side as a Markdown table: one row per quantity, its target, then each
    table's value and result (``tables``: column title -> rows of :func:`summarise` or
    :func:`read_table`), then the source. README's phantom table is this, rendered from the
    scorecards of the default dataset and of a second seed (a test keeps them equal)."""
    first = next(iter(tables.values()))
    head = ["quantity", "target", *tables, "source"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(first):
        cells = []
        for rows in tables.values():
            r = rows[i]
            cells.append(f"{_value(r)} ({r['result']})")
        lines.append("| " + " | ".join([f"`{row['quantity']}`", row["target"], *cells, row["source"]]) + " |")
    return "\n".join(lines)


def default_output(data: str | os.PathLike, split: str = "TRAINING") -> Path | None:
    """Where the table goes without ``--out``: beside the phantom's truth (``truth/scorecard.csv``,
    ``truth/scorecard_TESTING.csv`` for TESTING), or None for data without a truth folder."""
    if not has_truth(data):
        return None
    name = SCORECARD_FILE if split == "TRAINING" else SCORECARD_FILE.replace(".csv", f"_{split}.csv")
    return Path(data) / TRUTH / name


def report_realism(
    data: str | os.PathLike,
    split: str = "TRAINING",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[dict]:
    """Measure the scorecard, print its table, and write it: to ``out`` when given (an existing
    file is kept unless ``force``, :func:`stroke_helpers.files.check_output`), else beside the
    phantom's truth (:func:`default_output`; real data without ``out``: printed only)."""
    path = check_output(out, force) if out else default_output(data, split)
    rows = scorecard(data, split, progress)
    passed, failed = (sum(r["passed"] is v for r in rows) for v in (True, False))
    print(f"realism scorecard of {data} {split}: {passed} pass, {failed} fail, {len(rows) - passed - failed} n/a")
    print(format_table(rows))
    if path is not None:
        print(f"written: {write_table(rows, path, split)}")
    return rows
