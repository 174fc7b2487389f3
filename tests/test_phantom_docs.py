"""docs/decisions.md §6 states the phantom's parameters; each stated number is read here and
compared with the constant the generator uses, so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stroke_helpers.phantom import anatomy, ischaemia, series

DOC = (Path(__file__).resolve().parents[1] / "docs" / "decisions.md").read_text()
SECTION = DOC[DOC.index("## 6. The synthetic dataset") : DOC.index("**Realism scorecard**")]
DASH = "[–-]"


def _range(text: str) -> tuple[float, float]:
    lo, hi = re.fullmatch(rf"\s*([\d.]+){DASH}([\d.]+)\s*", text).groups()
    return float(lo), float(hi)


def test_tissue_table_is_the_generator_s():
    rows = {}
    for line in SECTION.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("mild penumbra", "severe penumbra", "core", "reperfused infarct"):
            rows[cells[0].split()[0]] = cells
    assert set(rows) == {"mild", "severe", "core", "reperfused"}
    for state, (_, cbf, cbv, tmax, disp) in rows.items():
        f_cbf, f_cbv, f_tmax, f_disp = series.STATES[state]
        assert _range(cbf.replace("severe ×", "")) == pytest.approx(f_cbf), state
        assert _range(cbv.replace("severe ×", "")) == pytest.approx(f_cbv), state
        assert _range(tmax.replace("severe +", "")) == pytest.approx(f_tmax), state
        assert float(disp) == pytest.approx(f_disp), state


def test_stated_constants_are_the_generator_s():
    text = " ".join(SECTION.split())
    median, sigma, lo, hi = ischaemia.HYPOPERFUSION_RATIO
    assert f"median {median:g}, sigma {sigma:g}, {lo:g}–{hi:g}" in text
    assert f"widened by {ischaemia.BORDERZONE_MM:g} mm" in text
    low, high = ischaemia.CORE_FRACTION
    assert f"{100 * low:g}–{100 * high:g} % of the lesion" in text
    p, lo, hi = ischaemia.REPERFUSED
    assert f"in {100 * p:g} % of the patients a **reperfused** part ({100 * lo:g}–{100 * hi:g} % of the lesion)" in text
    assert f"{100 * ischaemia.NWU_PER_HOUR:g} %/h" in text
    assert f"SD {100 * series.ISCHAEMIC_TEXTURE:g} %, ~{ischaemia.FLOW_MM:g} mm" in text
    assert f"median {ischaemia.OT_MEDIAN_ML:g} mL" in text
    assert f"(N(0, {series.REGISTRATION_SD_MM:g} mm) per axis;" in text
    assert f"GM ≈ {anatomy.HU['GM']:g}, WM ≈ {anatomy.HU['WM']:g}" in text
    assert "`0.2 + 0.45 (1 - g)`" in text and ischaemia.intensity_ratio(0.0) == pytest.approx(0.65)
    assert ischaemia.intensity_ratio(1.0) == pytest.approx(0.2)
