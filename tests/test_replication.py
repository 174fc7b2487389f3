"""The draw of new TESTING studies (:mod:`stroke_helpers.replication`) and the learned-difficulty
checks on test sets (:func:`stroke_helpers.difficulty.on_test_sets`)."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import fields

import pytest

from stroke_helpers import chapters, figures, readme
from stroke_helpers.__main__ import main
from stroke_helpers.difficulty import on_test_sets, side_by_side
from stroke_helpers.grid import ALL_RUN, ROWS, run_name
from stroke_helpers.inference import evaluate
from stroke_helpers.modalities import ALL
from stroke_helpers.phantom import PhantomConfig
from stroke_helpers.replication import (
    DRAW_SETTINGS,
    _phantom_config,
    checks_on_test_sets,
    replicate,
    run_fingerprint,
    scored_runs,
)
from stroke_helpers.runs import SHIPPED_MANIFEST, ResultsFolder, RunError, read_replication, write_json
from stroke_helpers.shipped import _copy_small_files, _rescore_draw, data_settings

TWO = ("TESTING/case_1", "TESTING/case_2")


def per_run(values: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{column: {row: Dice}}`` -> ``{run: {study: Dice}}`` with two studies: Dice and Dice + 0.1."""
    return {
        run_name(row, column): {TWO[0]: d, TWO[1]: d + 0.1}
        for column, rows in values.items()
        for row, d in rows.items()
    }


def rows_of(values) -> list[dict]:
    return on_test_sets(per_run(values)).rows()


def test_on_test_sets_averages_the_three_configurations_per_study():
    runs = per_run({"MTT": {"base": 0.3, "MR": 0.4, "MR+ATT": 0.5}, "CBF": {"base": 0.6, "MR": 0.6}})
    d = on_test_sets(runs)
    assert d.scores == {"MTT": pytest.approx({TWO[0]: 0.4, TWO[1]: 0.5})}  # CBF lacks MR+ATT
    rows = {r["quantity"]: r for r in d.rows()}
    assert rows["MTT Dice"]["value"] == pytest.approx(0.45) and rows["MTT Dice"]["passed"] is False  # 0.48 - 0.62
    runs[run_name("MR", "MTT")] = {TWO[0]: 0.4, "TESTING/case_3": 0.5}
    with pytest.raises(ValueError, match="FILE: MTT's base, MR and MR\\+ATT runs were scored on different studies"):
        on_test_sets(runs, "FILE")


def test_side_by_side_puts_each_test_set_in_a_column():
    a = rows_of({"CBF": dict.fromkeys(ROWS, 0.55), "Tmax": dict.fromkeys(ROWS, 0.7)})
    b = rows_of({"CBF": dict.fromkeys(ROWS, 0.45)})
    table = side_by_side({"first": a, "second": b}).splitlines()
    assert table[0] == "| quantity | first | second | target |"
    cbf = next(line for line in table if line.startswith("| CBF Dice |"))
    assert "0.600 [" in cbf and "] pass | 0.500 [" in cbf and cbf.endswith("pass | 0.5 - 0.62 |")
    tmax = next(line for line in table if line.startswith("| Tmax Dice |"))
    assert "**FAIL** | - | 0.45 - 0.6 |" in tmax  # 0.75 above its range; not scored in the second
    assert any(line.startswith("| Tmax - CBF | +0.150 [") and "**FAIL**" in line for line in table)


def test_the_chapter_names_the_largest_change_and_a_miss_on_both_sets():
    first = rows_of({"CBF": dict.fromkeys(ROWS, 0.55), "MTT": dict.fromkeys(ROWS, 0.40)})
    second = rows_of({"CBF": dict.fromkeys(ROWS, 0.50), "MTT": dict.fromkeys(ROWS, 0.41)})
    tables = {"TESTING": {"label": "TESTING (2 studies)", "rows": first}, "draw": {"label": "draw (2)", "rows": second}}
    text = chapters.draw_takeaway(tables)
    assert "the largest change of a mean Dice is CBF's, -0.050" in text
    assert "MTT misses its target on both test sets" in text  # means 0.45 and 0.46
    tables["TESTING"]["rows"] = rows_of({"CBF": dict.fromkeys(ROWS, 0.55)})
    assert "No target is missed on both test sets" in chapters.draw_takeaway(tables)
    assert "replicate" in chapters.draw_takeaway({"TESTING": tables["TESTING"]})
    assert "nothing to compare" in chapters.draw_takeaway({})
    fig = figures.test_sets_plot({"a": first, "b": second, "c": rows_of({"MTT": dict.fromkeys(ROWS, 0.5)})})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CBF", "MTT"]
    assert len(ax.collections) == 2  # one shaded target range per input
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]  # c has no CBF


def test_the_phantom_settings_of_a_dataset_come_back_with_their_types(tmp_path):
    config = PhantomConfig(noise_hu=5.5, method="svd", reference_mtt=None, compress=False, size=64)
    (tmp_path / "truth").mkdir()
    with open(tmp_path / "truth" / "config.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "value"])
        w.writerows(
            [(fd.name, getattr(config, fd.name)) for fd in fields(PhantomConfig)] + [("territories", "geometric")]
        )
    back = _phantom_config(tmp_path)
    assert back == PhantomConfig(
        noise_hu=5.5, method="svd", reference_mtt=None, compress=False, size=64, write_pwi=False
    )
    text = (tmp_path / "truth" / "config.csv").read_text().replace("size,64", "size,large")
    (tmp_path / "truth" / "config.csv").write_text(text)
    with pytest.raises(RunError, match=r"config.csv: size='large' is not a int"):
        _phantom_config(tmp_path)


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
    assert set(record["dice"]) == set(record["runs"]) == set(scored_runs(grid_copy))
    assert all(tuple(sorted(per)) == TWO for per in record["dice"].values())
    assert read_replication(grid_copy) == json.loads(json.dumps(record))
    tables = checks_on_test_sets(grid_copy)
    assert [t["label"] for t in tables.values()] == ["TESTING (2 studies)", f"draw (2 studies, seed {grid_seed + 1})"]
    assert [r["quantity"] for r in tables["draw"]["rows"]] == ["All Dice"]  # no single map in this grid

    with pytest.raises(FileExistsError, match="replication.json exists; pass --force"):
        replicate(grid_copy, draw, cases=2, progress=False)
    capsys.readouterr()
    replicate(grid_copy, draw, cases=2, force=True, progress=False)
    assert "drawing" not in capsys.readouterr().out  # the same draw is scored again, not drawn again
    ResultsFolder(grid_copy).replication.unlink()
    with pytest.raises(FileExistsError, match=r"draw: not a draw of seed \d+ and 3 studies \(another seed or size\)"):
        replicate(grid_copy, draw, cases=3, progress=False)
    assert data_settings(draw)["test_cases"] == "2"  # kept
    (draw / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"draw: a draw, but it also holds notes.txt; .* choose another --draw"):
        replicate(grid_copy, draw, cases=3, force=True, progress=False)
    assert (draw / "notes.txt").read_text() == "mine" and data_settings(draw)["test_cases"] == "2"
    (draw / "notes.txt").unlink()
    replicate(grid_copy, draw, cases=3, force=True, progress=False)  # a draw, so --force replaces it
    assert data_settings(draw)["test_cases"] == "3"

    history = ResultsFolder(grid_copy).run(run_name("MR", ALL)).history
    history.write_text(history.read_text() + "\n")
    with pytest.raises(RunError, match="replication.json: MR_All trained again since; score the draw again"):
        checks_on_test_sets(grid_copy)


def test_replicate_replaces_nothing_but_a_draw(grid_copy, phantom_root, tmp_path, capsys):
    assert main(["replicate", "--results", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "none: no trained single-map or All run with weights" in capsys.readouterr().err
    other = tmp_path / "other"
    (other / "TESTING").mkdir(parents=True)
    (other / "mine.txt").write_text("kept")
    with pytest.raises(FileExistsError, match="other: not a draw .* \\(it is not a draw\\); choose another --draw"):
        replicate(grid_copy, other, cases=2, force=True, progress=False)
    assert (other / "mine.txt").read_text() == "kept"
    before = sorted(p.name for p in (phantom_root / "TRAINING").iterdir())
    with pytest.raises(FileExistsError, match="it is not a draw"):
        replicate(grid_copy, phantom_root, cases=2, force=True, progress=False)  # the grid's own dataset
    assert sorted(p.name for p in (phantom_root / "TRAINING").iterdir()) == before
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="a_file: a file; --draw names a folder"):
        replicate(grid_copy, tmp_path / "a_file", cases=2, progress=False)
    seed = int(data_settings(phantom_root)["seed"])
    with pytest.raises(ValueError, match=f"--seed {seed} is .*'s own seed"):
        replicate(grid_copy, tmp_path / "d", seed=seed, cases=2, progress=False)
    write_json({}, grid_copy / SHIPPED_MANIFEST)
    with pytest.raises(RunError, match="part of the shipped checkpoint"):
        replicate(grid_copy, tmp_path / "d", cases=2, progress=False)
    assert not (tmp_path / "d").exists()


def test_a_malformed_replication_record_is_one_line(tmp_path):
    record = {"seed": 1, "cases": 2, "runs": {"base_All": ""}, "dice": {"base_All": {TWO[0]: "high"}}}
    write_json(record, tmp_path / "replication.json")
    with pytest.raises(RunError, match="replication.json: not a replication record"):
        read_replication(tmp_path)
    assert read_replication(tmp_path / "absent") is None


def test_ship_scores_the_halved_model_on_the_draw_and_readme_renders_it(grid_copy, tmp_path):
    record = replicate(grid_copy, tmp_path / "draw", cases=2, progress=False)
    out = tmp_path / "out"
    _copy_small_files(grid_copy, out)
    shutil.copytree(
        ResultsFolder(grid_copy).run(ALL_RUN).path, ResultsFolder(out).run(ALL_RUN).path, dirs_exist_ok=True
    )
    shipped = read_replication(out)
    shipped["dice"][ALL_RUN] = {s: -1.0 for s in shipped["dice"][ALL_RUN]}  # as if other weights had scored it
    write_json(shipped, ResultsFolder(out).replication)
    _rescore_draw(out, progress=False)
    again = evaluate(ResultsFolder(out).run(ALL_RUN).path, "test", "cpu", False, data=tmp_path / "draw", write=False)
    assert read_replication(out)["dice"][ALL_RUN] == {r["study"]: r["dice"] for r in again["studies"]}
    assert read_replication(out)["dice"][run_name("base", ALL)] == record["dice"][run_name("base", ALL)]

    runs = {run_name(row, c): {TWO[0]: d, TWO[1]: d + 0.1} for c, d in (("MTT", 0.5), (ALL, 0.6)) for row in ROWS}
    fingerprints = {name: run_fingerprint(out, name) for name in runs}
    write_json({"seed": 3, "cases": 2, "runs": fingerprints, "dice": runs}, ResultsFolder(out).replication)
    text, table = readme.difficulty_paragraphs(out)
    assert "a draw of 2 more TESTING studies" in text and "another seed (3;" in text
    assert "on the draw, none" in text  # MTT 0.55 is in its range, All - MTT +0.10 above +0.02
    assert table.splitlines()[0].endswith("| draw (2 studies, seed 3) | target |")
