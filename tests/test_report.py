"""The experiment grid's bookkeeping and the statistics of the report, on hand-made metrics files."""

import json

import numpy as np
import pytest

from stroke_helpers.chapters import notebook_paths
from stroke_helpers.grid import ALL_RUN, CASCADES, ROWS, TABLE1, TABLE2, Grid, run_name, seed_folder
from stroke_helpers.locations import NotADatasetError
from stroke_helpers.metrics import bootstrap_ci, paired_difference
from stroke_helpers.presets import PRESETS
from stroke_helpers.report import (
    PAPER_TABLE1,
    cascade_markdown,
    comparisons,
    comparisons_markdown,
    seed_spread,
    table_markdown,
    write_report,
)

STUDIES = [f"TRAINING/case_{i}" for i in range(1, 21)]


def fake_metrics(out, folder, dice, split="val"):
    """A run folder whose ``metrics(_test).json`` gives every study ``dice`` (a number or a list)."""
    run = out / "runs" / folder
    run.mkdir(parents=True, exist_ok=True)
    values = np.broadcast_to(np.asarray(dice, float), (len(STUDIES),))
    rows = [
        {"study": s, **{m: float(v) for m in ("dice", "precision", "recall", "hd95", "avd")}}
        for s, v in zip(STUDIES, values)
    ]
    summary = {
        m: {"mean": float(values.mean()), "std": float(values.std()), "n": len(rows)} for m in rows[0] if m != "study"
    }
    path = run / ("metrics.json" if split == "val" else f"metrics_{split}.json")
    path.write_text(json.dumps({"studies": rows, "summary": summary}))


def test_grid_has_the_papers_thirty_runs_and_the_seeds(tmp_path):
    grid = Grid(tmp_path, tmp_path / "out", seeds=3)
    runs = list(grid.runs())
    assert len(runs) == 30 and len(set(runs)) == 30
    assert {r for r, _ in runs} == set(ROWS)
    cfg = grid.config("MR", "Tmax,CBV")
    assert (cfg.attention, cfg.multilevel, cfg.modalities) == (False, True, ("CBV", "Tmax"))
    assert cfg.out.endswith("runs/MR_Tmax+CBV") and grid.config("base", TABLE2[-1]).out.endswith("base_All")
    assert grid.config("MR", TABLE2[-1], seed=2).out.endswith("runs/MR_All_seed2")
    steps = grid.todo()
    assert len(steps) == 30 + 2 * len(ROWS) + 3 * len(CASCADES)
    assert ("cascade", ("cascade_oof", 2)) in steps and ("run", ("base", TABLE2[-1], 1)) in steps
    assert Grid(tmp_path, tmp_path, "smoke").all_seeds == [0, 1, 2]
    assert grid.config("MR", "CBF").precision == "auto"
    assert Grid(tmp_path, tmp_path, precision="fp32").config("MR", "CBF").precision == "fp32"  # reproduce --precision


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.6, 0.2, 19), rng.normal(0.6, 0.2, 190)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    assert (hi - lo) > 2 * np.subtract(*bootstrap_ci(large)[::-1])  # ~sqrt(10) narrower
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert np.isnan(bootstrap_ci([0.5])[0])


def test_paired_difference_removes_between_study_spread():
    rng = np.random.default_rng(1)
    base = dict(zip(STUDIES, rng.uniform(0.1, 0.9, len(STUDIES))))  # studies differ a lot
    better = {s: v + 0.02 for s, v in base.items()}  # a small, consistent gain
    d = paired_difference(better, base)
    assert d["mean"] == pytest.approx(0.02) and d["resolved"] and d["n"] == len(STUDIES)
    noise = {s: v + rng.normal(0, 0.05) for s, v in base.items()}
    d = paired_difference(noise, base)
    assert d["low"] < 0 < d["high"] and not d["resolved"]
    assert paired_difference({**better, "extra": 1.0}, base)["n"] == len(STUDIES)  # only shared studies
    few = paired_difference({s: better[s] for s in STUDIES[:5]}, base)
    assert few["n"] == 5 and not few["resolved"]  # too few studies to resolve anything


def test_tables_comparisons_and_report(tmp_path):
    fake_metrics(tmp_path, run_name("MR", "CBF"), 0.42)
    md = table_markdown(tmp_path, TABLE1, PAPER_TABLE1)
    assert "| MR | - (0.26 ± 0.24) | - (0.51 ± 0.27) | 0.42 [0.42, 0.42] (0.58 ± 0.22)" in md
    only = table_markdown(tmp_path, TABLE1, PAPER_TABLE1, rows=("MR+ATT",)).splitlines()
    assert len(only) == 3 and only[-1].startswith("| MR+ATT |")
    assert cascade_markdown(tmp_path).count("\n") == 2  # header, rule, the paper's row

    spread = np.linspace(0.3, 0.9, len(STUDIES))
    for row, shift in (("base", 0.0), ("MR", 0.05), ("MR+ATT", 0.05)):
        fake_metrics(tmp_path, run_name(row, TABLE2[-1]), spread + shift)
    fake_metrics(tmp_path, "cascade", spread + 0.05 + np.resize([0.02, -0.02], len(STUDIES)))
    claims = {c["claim"]: c for c in comparisons(tmp_path)}
    assert claims["MR vs base (All)"]["mean"] == pytest.approx(0.05) and claims["MR vs base (All)"]["resolved"]
    assert claims["MR+ATT vs MR (All)"]["mean"] == pytest.approx(0.0) and not claims["MR+ATT vs MR (All)"]["resolved"]
    assert not claims["cascade vs stage 1"]["resolved"]
    text = comparisons_markdown(tmp_path)
    assert "MR vs base (All): +0.050 [+0.050, +0.050] over 20 studies; the interval excludes 0" in text
    assert "this sample cannot tell them apart" in text
    one = comparisons_markdown(tmp_path, only=("MR+ATT vs MR",)).splitlines()
    assert len(one) == 5 and one[2].startswith("| MR+ATT vs MR (All) |") and one[-1].startswith("- MR+ATT vs MR")
    lines = cascade_markdown(tmp_path).splitlines()
    assert lines[3].startswith("| stage 1 (MR+ATT, All) | 0.65 [")

    fake_metrics(tmp_path, seed_folder(run_name("MR", TABLE2[-1]), 1), spread + 0.1)
    assert seed_spread(tmp_path)["MR"] == pytest.approx([0.65, 0.70])

    report = write_report(tmp_path, tmp_path / "data", PRESETS["cpu"], {"total": 12.0}, []).read_text()
    assert "`cpu` preset" in report and "0.42 [0.42, 0.42] (0.58 ± 0.22)" in report and "| total | 12 |" in report
    assert "validation only" in report and "held-out TESTING" not in report
    fake_metrics(tmp_path, ALL_RUN, spread, split="test")
    report = write_report(tmp_path, tmp_path / "data", PRESETS["cpu"], {"total": 12.0}, []).read_text()
    assert "# On the held-out TESTING studies" in report and "validation only" not in report


def test_notebook_paths(tmp_path, monkeypatch, phantom_root):
    monkeypatch.delenv("STROKE_PRESET", raising=False)
    monkeypatch.delenv("STROKE_RESULTS", raising=False)
    preset, data, results = notebook_paths("cpu", str(phantom_root), str(tmp_path))
    assert (preset, data, results) == ("cpu", phantom_root, tmp_path)
    monkeypatch.setenv("STROKE_PRESET", "smoke")
    monkeypatch.setenv("STROKE_DATA_DIR", str(tmp_path))
    with pytest.raises(
        NotADatasetError, match="synthetic_smoke: not an ISLES-layout dataset .*reproduce --preset smoke"
    ):
        notebook_paths("cpu")


def test_forest_plot_draws_every_claim():
    import matplotlib

    matplotlib.use("Agg")
    from stroke_helpers.figures import forest_plot

    claims = [
        {"claim": "a vs b", "mean": 0.05, "low": 0.01, "high": 0.09, "resolved": True},
        {"claim": "c vs d", "mean": -0.01, "low": -0.05, "high": 0.03, "resolved": False},
    ]
    fig = forest_plot(claims)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c vs d", "a vs b"]
    assert ax.lines[0].get_xdata().tolist() == [0.01, 0.09]  # the first claim's interval, on top


def test_convergence_flags_runs_off_their_plateau(tmp_path):
    from stroke_helpers.report import convergence, convergence_markdown
    from stroke_helpers.runs import ResultsFolder, write_history, write_json

    for name, curve in (
        ("flat", [0.2, 0.6, 0.70, 0.71, 0.70]),
        ("rising", [0.1, 0.3, 0.5, 0.6, 0.7]),
        ("dead", [0.0] * 5),
    ):
        run = ResultsFolder(tmp_path).run(name)
        run.path.mkdir(parents=True)
        write_json({}, run.config)  # a run folder: its configuration, then its learning curve
        write_history([{"epoch": i + 1, "train_loss": 0.5, "val_dice": d} for i, d in enumerate(curve)], run.history)
    rows = {r["run"]: r for r in convergence(tmp_path)}
    assert rows["flat"]["plateau"] and not rows["rising"]["plateau"] and rows["dead"]["plateau"]
    assert rows["rising"]["last3"] == pytest.approx(0.6)
    text = convergence_markdown(tmp_path)
    assert text.startswith("2 of 3 runs reached their plateau") and "| rising |" in text and "| dead |" in text
    assert "| flat |" not in text


def test_publish_notebooks_drops_injected_parameters(tmp_path):
    import nbformat

    from stroke_helpers.notebooks import NOTEBOOKS, publish_notebooks

    executed, target = tmp_path / "executed", tmp_path / "notebooks"
    executed.mkdir()
    target.mkdir()
    for name in NOTEBOOKS:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('data = ""', metadata={"tags": ["parameters"]})
        injected = nbformat.v4.new_code_cell('data = "/work/x"', metadata={"tags": ["injected-parameters"]})
        shown = nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
        nb.cells = [params, injected, shown]
        nb.metadata["papermill"] = {"input_path": "/work/x.ipynb", "parameters": {"data": "/work/x"}, "duration": 1.0}
        nbformat.write(nb, executed / f"{name}.ipynb")
    publish_notebooks(executed, target)
    nb = nbformat.read(target / f"{NOTEBOOKS[0]}.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == ['data = ""', "print(1)"] and nb.cells[1].outputs[0].text == "1\n"
    assert nb.metadata["papermill"] == {"duration": 1.0}
