"""The experiment grid's bookkeeping and the statistics of the report, on hand-made metrics files."""

import json

import numpy as np
import pytest

from stroke_helpers.baseline import THRESHOLDS
from stroke_helpers.chapters import notebook_paths
from stroke_helpers.grid import ALL_RUN, CASCADES, MONAI, MONAI_RUN, ROWS, TABLE1, TABLE2, Grid, run_name, seed_folder
from stroke_helpers.locations import NotADatasetError
from stroke_helpers.metrics import bootstrap_ci, paired_difference
from stroke_helpers.presets import PRESETS
from stroke_helpers.report import (
    PAPER_TABLE1,
    PAPER_TABLE2,
    cascade_markdown,
    comparisons,
    comparisons_markdown,
    seed_spread,
    table_markdown,
    thresholds_markdown,
    write_report,
)
from stroke_helpers.runs import ResultsFolder, read_metrics, read_split

STUDIES = [f"TRAINING/case_{i}" for i in range(1, 21)]


def fake_metrics(out, folder, dice, split="val", studies=STUDIES):
    """A run folder (or, for a name of THRESHOLDS, a threshold method's folder) whose
    ``metrics(_test).json`` gives every study ``dice`` (a number or a list)."""
    run = (ResultsFolder(out).threshold(folder) if folder in THRESHOLDS else ResultsFolder(out).run(folder)).path
    run.mkdir(parents=True, exist_ok=True)
    values = np.broadcast_to(np.asarray(dice, float), (len(studies),))
    rows = [
        {"study": s, **{m: float(v) for m in ("dice", "precision", "recall", "hd95", "avd")}}
        for s, v in zip(studies, values)
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
    assert len(steps) == 30 + 1 + 1 + 2 * len(ROWS) + 3 * len(CASCADES)  # + MONAI's run + the thresholds
    assert ("cascade", ("cascade_oof", 2)) in steps and ("run", ("base", TABLE2[-1], 1)) in steps
    # MONAI's AttentionUnet on All, once, after every table run (ALL_RUN among them): then the
    # thresholds, scored on ALL_RUN's studies
    assert steps[30:32] == [("run", (MONAI, TABLE2[-1], 0)), ("thresholds", ("thresholds", 0))]
    monai = grid.config(MONAI, TABLE2[-1])
    assert (monai.architecture, monai.attention, monai.multilevel) == (MONAI, True, False)
    assert monai.out.endswith(f"runs/{MONAI_RUN}") and MONAI_RUN == "monai-attention-unet_All"
    assert grid.config("MR", "CBF").architecture == "cross-attention"
    with pytest.raises(ValueError, match="unknown architecture 'unet'"):
        grid.config("unet", TABLE2[-1])
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


def test_thresholds_and_monai_beside_the_networks(tmp_path):
    """Hand-made per-study values: the rows the tables gain, and the paired comparisons computed
    from per-study pairs on the studies both score (the number checked by hand)."""
    rng = np.random.default_rng(3)
    spread = rng.uniform(0.2, 0.8, len(STUDIES))
    fake_metrics(tmp_path, ALL_RUN, spread + 0.05)
    fake_metrics(tmp_path, MONAI_RUN, spread)
    fake_metrics(tmp_path, "cascade", spread + 0.06)  # the best network on validation ...
    fake_metrics(tmp_path, run_name("MR", "CBF"), spread - 0.1)
    fake_metrics(tmp_path, "tmax_above_6s", spread - 0.1)  # ... and the best threshold
    fake_metrics(tmp_path, "rcbf_below_30", spread - 0.3)
    # on the test studies: the threshold scores two more studies than the network (paired on
    # the shared ones only) and lists its studies in another order
    test_values = rng.uniform(0.2, 0.8, len(STUDIES))
    fake_metrics(tmp_path, "cascade", test_values, split="test")
    fake_metrics(tmp_path, ALL_RUN, test_values + 0.5, split="test")  # better on test: not picked there
    extra = ["TESTING/case_98", "TESTING/case_99"]
    threshold_test = {s: v for s, v in zip(STUDIES, rng.uniform(0.0, 0.6, len(STUDIES)))}
    order = [*extra, *STUDIES[::-1]]
    fake_metrics(tmp_path, "tmax_above_6s", [0.9, 0.9, *[threshold_test[s] for s in STUDIES[::-1]]], "test", order)

    table1 = table_markdown(tmp_path, TABLE1, PAPER_TABLE1).splitlines()
    assert table1[-3].startswith("| threshold (no learning) | - | - | ") and "±" not in table1[-3]  # no paper value
    assert (
        table1[-1]
        == "threshold (no learning): NCCT: NCCT hypodensity; CBF: rCBF < 30 %; Tmax: Tmax > 6 s (baseline.py), scored on the same studies."
    )
    cbf_column = table1[-3].split(" | ")[3]
    assert cbf_column.startswith(f"{np.mean(spread - 0.3):.2f} [")  # rCBF < 30 % under CBF
    table2 = table_markdown(tmp_path, TABLE2, PAPER_TABLE2).splitlines()
    assert table2[-1].startswith("| MONAI AttentionUnet | - | - | - | - | ") and table2[-1].endswith(" |")
    assert (
        table2[-1].split(" | ")[-1]
        == f"{np.mean(spread):.2f} [{bootstrap_ci(spread)[0]:.2f}, {bootstrap_ci(spread)[1]:.2f}] |"
    )
    assert len(table_markdown(tmp_path, TABLE2, PAPER_TABLE2, rows=("MR+ATT",)).splitlines()) == 3

    claims = {c["claim"]: c for c in comparisons(tmp_path)}
    monai = claims["MR+ATT vs MONAI AttentionUnet (All)"]
    assert (monai["a"], monai["b"], monai["n"]) == (ALL_RUN, MONAI_RUN, 20) and monai["mean"] == pytest.approx(0.05)
    best = claims["best network (in-sample cascade) vs best threshold (Tmax > 6 s)"]
    assert (best["a"], best["b"], best["mean"], best["resolved"]) == (
        "cascade",
        "tmax_above_6s",
        pytest.approx(0.16),
        True,
    )

    test = {c["claim"]: c for c in comparisons(tmp_path, "test")}
    best = test["best network (in-sample cascade) vs best threshold (Tmax > 6 s)"]  # picked on validation
    network_test = dict(zip(STUDIES, test_values))
    # by hand, study by study, in the studies' sorted order (the order the seeded resampling draws in)
    d = np.array([network_test[s] - threshold_test[s] for s in sorted(STUDIES)])
    means = d[np.random.default_rng(0).integers(0, len(d), (10_000, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert best["n"] == 20 and best["mean"] == pytest.approx(d.mean())
    assert (best["low"], best["high"]) == (pytest.approx(low), pytest.approx(high))
    assert best["resolved"] == bool(low > 0 or high < 0)
    text = comparisons_markdown(tmp_path, "test", only=("best network",))
    assert (
        f"| best network (in-sample cascade) vs best threshold (Tmax > 6 s) | {d.mean():+.3f} [{low:+.3f}, {high:+.3f}] | 20 |"
        in text
    )

    rows = thresholds_markdown(tmp_path).splitlines()
    assert rows[2].startswith("| rCBF < 30 % (no learning) | 20 | ")
    assert rows[3].startswith("| Tmax > 6 s (no learning, best on validation) | 20 | ")
    assert rows[4].startswith("| MONAI AttentionUnet All (network) | 20 | ")
    assert rows[6].startswith("| in-sample cascade (network, best on validation) | 20 | ")
    assert len(rows) == 7 + 4  # no NCCT hypodensity or out-of-fold cascade scores here; then a note
    assert rows[-3].startswith("Best on validation: the highest mean validation Dice among the networks")

    report = write_report(tmp_path, tmp_path / "data", PRESETS["cpu"], {"total": 1.0}, []).read_text()
    assert "## Classical thresholds beside the networks" in report and "| MONAI AttentionUnet |" in report
    assert "| threshold (no learning) |" in report and "best network (in-sample cascade) vs best threshold" in report


def test_the_smoke_grid_scores_thresholds_and_monai_on_the_networks_studies(smoke_grid, phantom_root, capsys):
    """The grid's threshold step: the three methods on exactly the studies the networks are
    scored on, with the same metrics, once (kept unless forced); MONAI's run evaluated; both
    in report.md's tables and comparisons."""
    results = ResultsFolder(smoke_grid)
    for split in ("val", "test"):
        studies = [r["study"] for r in read_metrics(results.run(ALL_RUN).metrics(split))["studies"]]
        assert [r["study"] for r in read_metrics(results.run(MONAI_RUN).metrics(split))["studies"]] == studies
        for method in THRESHOLDS:
            scores = read_metrics(results.threshold(method).metrics(split))
            assert [r["study"] for r in scores["studies"]] == studies and scores["split"] == split
            assert set(scores["studies"][0]) >= {"dice", "precision", "recall", "hd95", "avd", "predicted_ml"}
    studies_val = read_split(results.run(ALL_RUN).path)["val"]
    assert studies[0].startswith("TESTING/") and read_split(results.run(MONAI_RUN).path) == read_split(
        results.run(ALL_RUN).path
    )
    assert [results.name(r) for r in results.runs() if MONAI in r.path.name] == [MONAI_RUN]  # not a run folder
    assert len(results.thresholds()) == len(THRESHOLDS)

    grid = Grid(phantom_root, smoke_grid, "smoke", progress=False)
    stamps = {p: p.stat().st_mtime_ns for r in results.thresholds() for p in r.records()}
    assert grid.thresholds() == [] and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # kept
    assert sorted(grid.thresholds(force=True)) == sorted(stamps)  # forced: all written again
    stale = results.threshold("tmax_above_6s").metrics("val")  # scored on other studies: scored again
    stale.write_text(stale.read_text().replace(studies_val[0], "TRAINING/case_999"))
    assert grid.thresholds() == [results.threshold(m).metrics("val") for m in THRESHOLDS]
    assert "threshold scores (val) are not on the networks' " in capsys.readouterr().out
    assert [r["study"] for r in read_metrics(stale)["studies"]] == studies_val

    report = write_report(smoke_grid, phantom_root, PRESETS["smoke"], {"total": 1.0}, []).read_text()
    test_part = report.split("# On the held-out TESTING studies")[1]
    for row in (
        "| MONAI AttentionUnet | - | - | - | - | ",
        "| threshold (no learning) | ",
        "| Tmax > 6 s (no learning",
    ):
        assert row in test_part
    assert "MR+ATT vs MONAI AttentionUnet (All): " in test_part and "vs best threshold (" in test_part


def test_threshold_scores_are_the_baselines_own(phantom_root):
    """The grid's threshold rows use baseline.py's own rCBF < 30 %, Tmax > 6 s and NCCT
    hypodensity, scored by the networks' metrics (TESTING masks from the truth folder)."""
    from stroke_helpers.baseline import classical_baseline, ncct_baseline, score_thresholds

    studies = ["TRAINING/case_1", "TRAINING/case_2", "TESTING/case_1"]
    rows = score_thresholds(phantom_root, studies, progress=False)
    assert list(rows) == list(THRESHOLDS) and all([r["study"] for r in v] == studies for v in rows.values())
    classical = {
        r["study"]: r
        for split in ("TRAINING", "TESTING")
        for r in classical_baseline(phantom_root, split, progress=False)
    }
    ncct = ncct_baseline(phantom_root, studies)
    for k, name in enumerate(studies):
        assert rows["rcbf_below_30"][k]["dice"] == pytest.approx(classical[name]["dice"])
        assert rows["rcbf_below_30"][k]["precision"] == pytest.approx(classical[name]["precision"])
        assert rows["tmax_above_6s"][k]["dice"] == pytest.approx(classical[name]["tmax_dice"])
        assert rows["ncct_hypodensity"][k]["dice"] == pytest.approx(ncct[name])
        assert rows["tmax_above_6s"][k]["lesion_ml"] == pytest.approx(classical[name]["lesion_ml"])


def test_the_report_and_the_chapters_say_the_same_resolution():
    """Half the interval's width, to 3 decimals, in one sentence shared by report and chapters."""
    from stroke_helpers.chapters import paired_sentence
    from stroke_helpers.report import resolution, verdict

    c = {"claim": "A vs B", "mean": 0.01, "low": -0.01, "high": 0.03, "n": 62, "resolved": False}
    assert resolution(c) == "would not resolve a true difference much smaller than about 0.020 Dice"
    assert resolution(c) in verdict(c) and resolution(c) in paired_sentence(c, "A", "B")
