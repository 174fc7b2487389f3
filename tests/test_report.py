"""The experiment grid's bookkeeping: tables from metrics files, the report, notebook paths."""

import json

import pytest

from stroke_helpers.chapters import notebook_paths
from stroke_helpers.grid import CASCADES, ROWS, TABLE1, TABLE2, Grid, run_name
from stroke_helpers.report import PAPER_TABLE1, cascade_markdown, table, table_markdown, write_report


def fake_metrics(out, row, mods, dice):
    folder = out / "runs" / run_name(row, mods)
    folder.mkdir(parents=True)
    summary = {m: {"mean": dice, "std": 0.1, "n": 3} for m in ("dice", "precision", "recall", "hd95", "avd")}
    (folder / "metrics.json").write_text(json.dumps({"summary": summary, "studies": []}))


def test_grid_has_the_papers_thirty_runs(tmp_path):
    grid = Grid(tmp_path, tmp_path / "out")
    runs = list(grid.runs())
    assert len(runs) == 30 and len(set(runs)) == 30
    assert {r for r, _ in runs} == set(ROWS)
    cfg = grid.config("MR", "Tmax,CBV")
    assert (cfg.attention, cfg.multilevel, cfg.modalities) == (False, True, ("CBV", "Tmax"))
    assert cfg.out.endswith("runs/MR_Tmax+CBV") and grid.config("base", TABLE2[-1]).out.endswith("base_All")


def test_tables_and_report_from_metrics(tmp_path):
    fake_metrics(tmp_path, "MR", "CBF", 0.42)
    t = table(tmp_path, TABLE1)
    assert t["MR"][TABLE1.index("CBF")] == (0.42, 0.1) and t["base"][0] is None
    md = table_markdown(tmp_path, TABLE1, PAPER_TABLE1)
    assert "| MR | - (0.26 ± 0.24) | - (0.51 ± 0.27) | 0.42 ± 0.10 (0.58 ± 0.22)" in md
    only = table_markdown(tmp_path, TABLE1, PAPER_TABLE1, rows=("MR+ATT",)).splitlines()
    assert len(only) == 3 and only[-1].startswith("| MR+ATT |")
    report = write_report(tmp_path, tmp_path / "data", "cpu", {"total": 12.0}, [])
    text = report.read_text()
    assert "`cpu` preset" in text and "0.42 ± 0.10 (0.58 ± 0.22)" in text and "total: 12" in text


def test_cascade_table_has_stage1_and_both_cascades(tmp_path):
    assert cascade_markdown(tmp_path).count("\n") == 2  # header, rule, the paper's row
    fake_metrics(tmp_path, "MR+ATT", TABLE2[-1], 0.7)
    for folder in CASCADES:
        (tmp_path / "runs" / folder).mkdir(parents=True)
        summary = {m: {"mean": 0.6, "std": 0.2, "n": 3} for m in ("dice", "precision", "recall", "hd95", "avd")}
        (tmp_path / "runs" / folder / "metrics.json").write_text(json.dumps({"summary": summary}))
    lines = cascade_markdown(tmp_path).splitlines()
    assert lines[2].startswith("| paper (real ISLES 2018) | 0.66 | 0.67")
    assert lines[3].startswith("| stage 1 (MR+ATT, All) | 0.70 ± 0.10")
    assert "cascade_oof (out-of-fold Ms) | 0.60 ± 0.20" in lines[5]


def test_notebook_paths(tmp_path, monkeypatch, phantom_root):
    monkeypatch.delenv("STROKE_PRESET", raising=False)
    monkeypatch.delenv("STROKE_RESULTS", raising=False)
    preset, data, results = notebook_paths("cpu", str(phantom_root), str(tmp_path))
    assert (preset, data, results) == ("cpu", phantom_root, tmp_path)
    monkeypatch.setenv("STROKE_PRESET", "smoke")
    monkeypatch.setenv("STROKE_DATA_DIR", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match="synthetic_smoke: no dataset; run `python -m stroke_helpers reproduce --preset smoke"
    ):
        notebook_paths("cpu")
