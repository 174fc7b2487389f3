"""Learned difficulty: cross-validated single-map models over TRAINING (stroke_helpers.difficulty)."""

import json

import pytest

from stroke_helpers.difficulty import Difficulty, cross_validate, format_table
from stroke_helpers.isles import discover_cases


@pytest.fixture(scope="module")
def cv(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("difficulty")
    return out, cross_validate(phantom_root, out, columns=("CBF",), folds=2, preset="smoke", progress=False)


def test_every_training_study_is_scored_once_by_the_model_that_held_it_out(cv, phantom_root):
    out, result = cv
    training = {f"TRAINING/{c.name}" for c in discover_cases(phantom_root)}
    assert set(result.scores["CBF"]) == training
    scored = []
    for k in range(2):
        split = json.loads((out / "CBF" / f"fold{k}" / "split.json").read_text())
        assert not set(split["val"]) & set(split["train"])
        assert set(split["train"]) | set(split["val"]) == training
        scored += split["val"]
    assert sorted(scored) == sorted(training)  # each study held out exactly once


def test_a_scored_fold_is_kept(cv, phantom_root):
    out, result = cv
    weights = out / "CBF" / "fold0" / "best.pt"
    before = weights.stat().st_mtime_ns
    again = cross_validate(phantom_root, out, columns=("CBF",), folds=2, preset="smoke", progress=False)
    assert weights.stat().st_mtime_ns == before
    assert again.scores == result.scores


def test_rows_check_ranges_and_paired_orderings():
    studies = [f"s{i}" for i in range(12)]
    scores = {
        "CBF": dict.fromkeys(studies, 0.55),
        "Tmax": {s: 0.55 + (0.05 if i % 2 else 0.03) for i, s in enumerate(studies)},  # +0.04 ahead of CBF
        "NCCT": dict.fromkeys(studies, 0.05),
        "All": dict.fromkeys(studies, 0.62),
    }
    rows = {r["quantity"]: r for r in Difficulty(scores, 5).rows()}
    assert rows["CBF Dice"]["passed"] and not rows["NCCT Dice"]["passed"]
    assert rows["Tmax Dice"]["value"] == pytest.approx(0.59)
    assert rows["Tmax - CBF"]["value"] == pytest.approx(0.04) and not rows["Tmax - CBF"]["passed"]
    assert rows["All - Tmax"]["value"] == pytest.approx(0.03) and rows["All - Tmax"]["passed"]  # the best single map
    assert rows["All Dice"]["passed"] is None  # no range for All
    assert "FAIL" in format_table(list(rows.values()))
