"""The realism scorecard: every target measured or n/a, verdicts that follow from the values, a
hand-built case whose answers are known, the command, and real data (no truth folder)."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
from conftest import make_case

from stroke_helpers.__main__ import main
from stroke_helpers.isles import load_study
from stroke_helpers.scorecard import (
    NEEDS_TRUTH,
    NO_MASK,
    TARGETS,
    Target,
    measure_study,
    scorecard,
    targets,
)
from stroke_helpers.truth import SCORECARD_FILE, TRUTH


def _consistent(rows: list[dict]) -> None:
    """Every target once, in order; a finite value with a verdict that follows from it, or n/a."""
    assert [r["quantity"] for r in rows] == [t.name for t in TARGETS]
    for r, t in zip(rows, TARGETS):
        if r["result"].startswith("n/a"):
            assert math.isnan(r["value"]) and r["passed"] is None, r
        else:
            assert math.isfinite(r["value"]), r
            assert r["passed"] is t.contains(r["value"]), r
            assert r["result"] == ("pass" if r["passed"] else "FAIL"), r
        assert r["source"] == t.source and r["source"]


def _without_truth(phantom_root, tmp_path):
    """The phantom dataset as real data looks: the same tree, no truth folder."""
    return shutil.copytree(phantom_root, tmp_path / "real", ignore=shutil.ignore_patterns(TRUTH, ".cache"))


def test_targets_are_well_formed():
    assert len(targets()) == len(TARGETS)  # names are unique
    for t in TARGETS:
        assert t.summary in ("median", "mean") and t.needs in ("mask", "images", "truth")
        assert t.low is not None or t.high is not None
        assert t.low is None or t.high is None or t.low < t.high
    open_low = Target("x", None, 0.3, "s", "h")
    assert open_low.range == "<= 0.3" and open_low.contains(0.0) and not open_low.contains(0.31)
    assert Target("x", 2, 5, "s", "h", unit="HU").range == "2 - 5 HU"


def test_scorecard_on_the_phantom(phantom_root):
    rows = scorecard(phantom_root, progress=False)
    _consistent(rows)
    by = {r["quantity"]: r for r in rows}
    for name in ("lesion_ml", "tmax6_dice", "core30_dice", "ncct_dice", "ct_noise_hu", "cbv_wm_cov"):
        assert math.isfinite(by[name]["value"]), name  # the phantom has masks and images
    assert by["lesion_ml"]["n"] == 6


def _known_case(split_dir):
    """Tmax > 6 s in a 10x20 block (200 voxels), Tmax > 10 s in 50 of them; the lesion: 80 voxels
    of the block and 20 beside it, all with CBF 20 % of the rest."""
    shape = (64, 64, 2)
    tmax = np.full(shape, 1.0)
    tmax[10:20, 20:40, 0] = 8.0
    tmax[10:15, 20:30, 0] = 12.0
    ot = np.zeros(shape, np.uint8)
    ot[10:14, 20:40, 0] = 1  # 80 voxels inside the block
    ot[25:27, 20:30, 0] = 1  # 20 outside it
    cbf = np.where(ot > 0, 20, 100)
    return make_case(
        split_dir, 1, shape, CT=np.full(shape, 30), CBF=cbf, CBV=np.full(shape, 20), MTT=np.full(shape, 4.0),
        Tmax=tmax, OT=ot,
    )  # fmt: skip


def test_known_answers(tmp_path):
    case = _known_case(tmp_path / "known" / "TRAINING")
    m = measure_study(load_study(case))
    assert m["tmax6_over_lesion"] == pytest.approx(2.0)  # 200 voxels over a 100-voxel lesion
    assert m["lesion_outside_tmax6"] == pytest.approx(0.2)
    assert m["tmax6_precision"] == pytest.approx(0.4)
    assert m["tmax6_dice"] == pytest.approx(2 * 80 / 300)
    assert m["tmax10_over_tmax6"] == pytest.approx(0.25)
    assert m["core30_over_lesion"] == pytest.approx(1.0) and m["core30_dice"] == pytest.approx(1.0)
    assert m["core38_over_lesion"] == pytest.approx(1.0)
    assert m["lesion_ml"] == pytest.approx(100 * 0.976562 * 0.976562 * 5.0003 / 1000, rel=1e-4)
    assert m["ct_noise_hu"] == pytest.approx(0.0) and m["cbv_wm_cov"] == pytest.approx(0.0)  # flat images
    assert math.isnan(m["ct_core_hypodensity_hu"])  # no truth
    rows = scorecard(tmp_path / "known", progress=False)
    _consistent(rows)
    by = {r["quantity"]: r for r in rows}
    assert by["tmax6_over_lesion"]["value"] == pytest.approx(2.0) and by["tmax6_over_lesion"]["result"] == "FAIL"
    assert by["ct_core_hypodensity_hu"]["result"] == NEEDS_TRUTH


def test_command_prints_and_writes(phantom_root, tmp_path, capsys):
    out = tmp_path / "card.csv"
    assert main(["realism", str(phantom_root), "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for t in TARGETS:
        assert t.name in printed and t.source in printed
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["quantity"] for r in table] == [t.name for t in TARGETS]
    assert {r["split"] for r in table} == {"TRAINING"}
    assert all(r["result"] in ("pass", "FAIL") or r["result"].startswith("n/a") for r in table)
    # an existing --out is kept unless --force
    assert main(["realism", str(phantom_root), "--no-progress", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["realism", str(phantom_root), "--no-progress", "--out", str(out), "--force"]) == 0


def test_command_writes_beside_the_truth(phantom_root, tmp_path, capsys):
    data = shutil.copytree(phantom_root, tmp_path / "copy", ignore=shutil.ignore_patterns("TESTING", ".cache"))
    assert main(["realism", str(data), "--no-progress"]) == 0
    written = data / TRUTH / SCORECARD_FILE
    assert written.is_file() and str(written) in capsys.readouterr().out


def test_real_data_without_truth(phantom_root, tmp_path, capsys):
    real = _without_truth(phantom_root, tmp_path)
    rows = scorecard(real, progress=False)
    _consistent(rows)
    by = {r["quantity"]: r for r in rows}
    assert by["ct_core_hypodensity_hu"]["result"] == NEEDS_TRUTH
    assert math.isfinite(by["tmax6_dice"]["value"]) and math.isfinite(by["ct_grey_white_hu"]["value"])
    # TESTING of real data: no masks anywhere, the image-only quantities still measured
    rows = scorecard(real, "TESTING", progress=False)
    _consistent(rows)
    for r, t in zip(rows, TARGETS):
        expected = {"mask": NO_MASK, "truth": NEEDS_TRUTH}.get(t.needs)
        assert r["result"] == expected if expected else math.isfinite(r["value"]), r
    # the command prints only: there is no truth folder to write beside
    assert main(["realism", str(real), "--no-progress"]) == 0
    assert "written" not in capsys.readouterr().out and not (real / TRUTH).exists()


def test_not_a_dataset(tmp_path, capsys):
    assert main(["realism", str(tmp_path / "nothing"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not an ISLES-layout dataset" in err and len(err.splitlines()) == 1
