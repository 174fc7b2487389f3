"""Learned difficulty: cross-validated single-map models over TRAINING (stroke_helpers.difficulty)."""

import json
from pathlib import Path

import pytest

from stroke_helpers.difficulty import Difficulty, cross_validate, format_table, markdown_table, read_table
from stroke_helpers.files import write_csv
from stroke_helpers.isles import discover_cases

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs/scorecard/difficulty.csv"
BEGIN, END = "<!-- difficulty:begin -->", "<!-- difficulty:end -->"


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
    metrics = json.loads((out / "CBF" / "fold0" / "metrics.json").read_text())
    assert metrics["checkpoint"] == "last"  # the held-out studies did not choose the epoch


def test_a_scored_fold_is_kept(cv, phantom_root):
    out, result = cv
    weights = out / "CBF" / "fold0" / "best.pt"
    before = weights.stat().st_mtime_ns
    again = cross_validate(phantom_root, out, columns=("CBF",), folds=2, preset="smoke", progress=False)
    assert weights.stat().st_mtime_ns == before
    assert again.scores == result.scores


def test_a_fold_that_held_out_other_studies_is_trained_again(cv, phantom_root, tmp_path):
    import shutil

    out, _ = cv
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "CBF" / "fold0" / "best.pt"
    before = weights.stat().st_mtime_ns
    cross_validate(phantom_root, copy, columns=("CBF",), folds=3, preset="smoke", progress=False)
    assert weights.stat().st_mtime_ns != before
    held = json.loads((copy / "CBF" / "fold2" / "split.json").read_text())["val"]
    assert held and (copy / "CBF" / "fold2" / "last.pt").is_file()  # scored with its last epoch


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


def test_a_written_table_reads_back(tmp_path):
    studies = [f"s{i}" for i in range(12)]
    scores = {"CBF": {s: 0.5 + 0.01 * i for i, s in enumerate(studies)}, "All": dict.fromkeys(studies, 0.6)}
    rows = Difficulty(scores, 5).rows()
    write_csv(tmp_path / "d.csv", list(rows[0]), rows)
    back = read_table(tmp_path / "d.csv")
    assert [r["quantity"] for r in back] == [r["quantity"] for r in rows]
    assert [r["passed"] for r in back] == [r["passed"] for r in rows]
    assert back[0]["value"] == pytest.approx(rows[0]["value"]) and back[0]["n"] == 12


def test_readme_difficulty_table_is_rendered_from_the_committed_table():
    text = (ROOT / "README.md").read_text()
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert block == markdown_table(read_table(COMMITTED)), "re-render README's table: markdown_table(read_table(...))"


def test_readme_states_the_default_folds_and_the_phantom_version():
    import inspect

    from stroke_helpers.phantom.dataset import PHANTOM_VERSION

    text = " ".join((ROOT / "README.md").read_text().split())
    assert f"({inspect.signature(cross_validate).parameters['folds'].default} folds by default)" in text
    assert f"The phantom (version {PHANTOM_VERSION})" in text


def test_all_alone_has_no_ordering_to_check():
    rows = Difficulty({"All": {f"s{i}": 0.6 for i in range(12)}}, 5).rows()
    assert [r["quantity"] for r in rows] == ["All Dice"]
