"""README's realism table is rendered from the committed scorecards of the default dataset (seed 0)
and of a second seed, both on TRAINING; the default dataset, regenerated, scores what was committed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stroke_helpers import locations
from stroke_helpers.scorecard import markdown_table, measure, read_table, summarise

ROOT = Path(__file__).resolve().parents[1]
SCORECARDS = {
    "seed 0 (default dataset)": ROOT / "docs/scorecard/seed0.csv",
    "seed 1": ROOT / "docs/scorecard/seed1.csv",
}
BEGIN, END = "<!-- scorecard:begin -->", "<!-- scorecard:end -->"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()


def test_readme_scorecard_is_rendered_from_the_committed_scorecards():
    tables = {title: read_table(path) for title, path in SCORECARDS.items()}
    assert readme_block() == markdown_table(tables), "re-render README's table: markdown_table(read_table(...))"


def test_phantom_passes_its_scorecard_on_both_seeds():
    for path in SCORECARDS.values():
        failed = [r["quantity"] for r in read_table(path) if r["result"] != "pass"]
        assert not failed, f"{path.name}: {failed}"


def test_scorecard_of_the_default_dataset_matches_the_committed_one():
    """Needs the default dataset (``python data_download.py synthetic``; CI generates it)."""
    data = locations.dataset("synthetic")
    if not (data / "TRAINING").is_dir():
        pytest.skip(f"no default dataset in {data}")
    committed = {r["quantity"]: r["value"] for r in read_table(SCORECARDS["seed 0 (default dataset)"])}
    fresh = summarise(measure(data, "TRAINING", progress=False), truth=True)
    for row in fresh:
        want = committed[row["quantity"]]
        assert (math.isnan(want) and math.isnan(row["value"])) or row["value"] == pytest.approx(want, rel=1e-3)
