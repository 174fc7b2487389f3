"""The second test draw (:mod:`stroke_helpers.replication`) and the learned-difficulty checks on
held-out studies (:func:`stroke_helpers.difficulty.held_out`)."""

from __future__ import annotations

import json

import pytest

from stroke_helpers import readme
from stroke_helpers.__main__ import main
from stroke_helpers.difficulty import held_out, side_by_side
from stroke_helpers.grid import ALL_RUN, ROWS, run_name
from stroke_helpers.modalities import ALL
from stroke_helpers.replication import DRAW_SETTINGS, held_out_tables, read_replication, replicate, scored_runs
from stroke_helpers.runs import ResultsFolder, RunError, write_json
from stroke_helpers.shipped import _copy_small_files, data_settings


def per_run(values: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{column: {row: Dice}}`` -> ``{run: {study: Dice}}`` with two studies: Dice and Dice + 0.1."""
    return {
        run_name(row, column): {"TESTING/case_1": d, "TESTING/case_2": d + 0.1}
        for column, rows in values.items()
        for row, d in rows.items()
    }


def test_held_out_averages_the_three_configurations_per_study():
    runs = per_run({"MTT": {"base": 0.3, "MR": 0.4, "MR+ATT": 0.5}, "CBF": {"base": 0.6, "MR": 0.6}})
    d = held_out(runs)
    assert d.scores == {"MTT": pytest.approx({"TESTING/case_1": 0.4, "TESTING/case_2": 0.5})}  # CBF lacks MR+ATT
    rows = {r["quantity"]: r for r in d.rows()}
    assert rows["MTT Dice"]["value"] == pytest.approx(0.45) and rows["MTT Dice"]["passed"] is False  # 0.48 - 0.62
    runs[run_name("MR", "MTT")] = {"TESTING/case_1": 0.4, "TESTING/case_3": 0.5}
    with pytest.raises(ValueError, match="MTT: the base, MR and MR\\+ATT runs were scored on different studies"):
        held_out(runs)


def test_side_by_side_puts_each_test_set_in_a_column():
    a = held_out(per_run({"CBF": dict.fromkeys(ROWS, 0.55), "Tmax": dict.fromkeys(ROWS, 0.7)})).rows()
    b = held_out(per_run({"CBF": dict.fromkeys(ROWS, 0.45)})).rows()
    table = side_by_side({"first": a, "second": b}).splitlines()
    assert table[0] == "| quantity | first | second | target |"
    cbf = next(line for line in table if line.startswith("| CBF Dice |"))
    assert "0.600 [" in cbf and "] pass | 0.500 [" in cbf and cbf.endswith("pass | 0.5 - 0.62 |")
    tmax = next(line for line in table if line.startswith("| Tmax Dice |"))
    assert "**FAIL** | - | 0.45 - 0.6 |" in tmax  # 0.75 above its range; not scored in the second
    assert any(line.startswith("| Tmax - CBF | +0.150 [") and "**FAIL**" in line for line in table)


@pytest.fixture
def grid_copy(smoke_grid, tmp_path):
    """The smoke grid's All runs (base, MR, MR+ATT, with weights and TESTING scores), copied."""
    results = tmp_path / "results"
    for row in ROWS:
        ResultsFolder(smoke_grid).run(run_name(row, ALL)).copy(
            ResultsFolder(results).run(run_name(row, ALL)).path, True
        )
    return results


def test_replicate_draws_from_the_same_phantom_scores_and_keeps(grid_copy, phantom_root, tmp_path, capsys):
    draw = tmp_path / "draw"
    assert scored_runs(grid_copy) == [run_name(row, ALL) for row in ROWS]
    record = replicate(grid_copy, draw, cases=2, progress=False)
    grid_seed = int(data_settings(phantom_root)["seed"])
    assert (record["seed"], record["cases"]) == (grid_seed + 1, 2)
    ours, theirs = data_settings(draw), data_settings(phantom_root)
    assert {k for k in ours if ours[k] != theirs[k]} <= set(DRAW_SETTINGS)
    assert (ours["seed"], ours["train_cases"], ours["test_cases"]) == (str(grid_seed + 1), "0", "2")
    assert not (draw / "TRAINING").exists() and not list(draw.glob("TESTING/*/*4DPWI*"))
    assert set(record["dice"]) == set(scored_runs(grid_copy))
    assert all(sorted(per) == ["TESTING/case_1", "TESTING/case_2"] for per in record["dice"].values())
    assert read_replication(grid_copy) == json.loads(json.dumps(record))
    tables = held_out_tables(grid_copy)
    assert list(tables) == ["TESTING (2 studies)", f"second draw (2 studies, seed {grid_seed + 1})"]
    assert [r["quantity"] for r in tables["TESTING (2 studies)"]] == ["All Dice"]  # no single map in this grid

    with pytest.raises(FileExistsError, match="replication.json exists; pass --force"):
        replicate(grid_copy, draw, cases=2, progress=False)
    capsys.readouterr()
    replicate(grid_copy, draw, cases=2, force=True, progress=False)
    assert "drawing" not in capsys.readouterr().out  # the same draw is scored again, not drawn again
    ResultsFolder(grid_copy).replication.unlink()
    with pytest.raises(FileExistsError, match=r"draw: not a draw of seed \d+ and 3 studies \(another seed or size\)"):
        replicate(grid_copy, draw, cases=3, progress=False)
    assert data_settings(draw)["test_cases"] == "2"  # kept


def test_replicate_refuses_what_it_cannot_score(tmp_path, grid_copy):
    assert main(["replicate", "--results", str(tmp_path / "none"), "--no-progress"]) == 2
    other = tmp_path / "other"
    (other / "TESTING").mkdir(parents=True)
    (other / "mine.txt").write_text("kept")
    with pytest.raises(FileExistsError, match="it is not a generated dataset"):
        replicate(grid_copy, other, cases=2, progress=False)
    assert (other / "mine.txt").read_text() == "kept"


def test_a_malformed_replication_record_is_one_line(tmp_path):
    write_json({"seed": 1, "cases": 2, "dice": {"base_All": {"TESTING/case_1": "high"}}}, tmp_path / "replication.json")
    with pytest.raises(RunError, match="replication.json: not a replication record"):
        read_replication(tmp_path)
    assert read_replication(tmp_path / "absent") is None


def test_ship_copies_the_replication_and_readme_renders_it(tmp_path, grid_copy):
    results = grid_copy
    runs = {
        run_name(row, c): {"TESTING/case_1": d, "TESTING/case_2": d + 0.1}
        for c, d in (("MTT", 0.5), (ALL, 0.6))
        for row in ROWS
    }
    write_json({"seed": 3, "cases": 2, "dice": runs}, ResultsFolder(results).replication)
    _copy_small_files(results, tmp_path / "out")
    assert read_replication(tmp_path / "out")["dice"] == runs
    text, table = readme.difficulty_paragraphs(tmp_path / "out")
    assert "second, independent draw of 2 TESTING studies" in text and "(seed 3," in text
    assert "on the second draw, none" in text  # MTT 0.55 is in its range, All 0.1 above it
    assert "| second draw (2 studies, seed 3) |" in table.splitlines()[0]
    assert ALL_RUN in scored_runs(results)


def test_the_chapter_names_the_largest_change_and_a_miss_on_both_sets():
    from stroke_helpers import chapters, figures

    first = held_out(per_run({"CBF": dict.fromkeys(ROWS, 0.55), "MTT": dict.fromkeys(ROWS, 0.40)})).rows()
    second = held_out(per_run({"CBF": dict.fromkeys(ROWS, 0.50), "MTT": dict.fromkeys(ROWS, 0.41)})).rows()
    text = chapters.replication_takeaway({"TESTING (2 studies)": first, "second draw (2 studies, seed 1)": second})
    assert "the largest change of a map's mean Dice is CBF's, -0.050" in text
    assert "MTT misses its target on both: not the luck of one draw" in text  # means 0.45 and 0.46
    fine = held_out(per_run({"CBF": dict.fromkeys(ROWS, 0.55)})).rows()
    assert "No target is missed on both" in chapters.replication_takeaway({"a": fine, "b": first})
    assert "replicate" in chapters.replication_takeaway({"TESTING (2 studies)": first})
    fig = figures.held_out_plot({"a": first, "b": second})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CBF", "MTT"]
    assert len(ax.collections) == 2  # one shaded target range per map
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
