"""The functions behind every figure and table the chapters show, on a small smoke-preset grid."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stroke_helpers import chapters, figures  # noqa: E402
from stroke_helpers.datasets import build_slices  # noqa: E402
from stroke_helpers.grid import ALL_RUN, ROWS, TABLE2, Grid  # noqa: E402
from stroke_helpers.inference import Predictor  # noqa: E402
from stroke_helpers.isles import MODALITIES  # noqa: E402
from stroke_helpers.presets import PRESETS  # noqa: E402
from stroke_helpers.runs import read_split  # noqa: E402


@pytest.fixture(scope="module")
def results(smoke_grid):
    return smoke_grid


@pytest.fixture(scope="module")
def arrays(phantom_root):
    return build_slices(phantom_root, "TRAINING", PRESETS["smoke"].size, progress=False)


def test_chapter1_data_helpers(phantom_root):
    studies = chapters.load_studies(phantom_root, 2)
    s = studies[0]
    assert len(studies) == 2 and s.patient is not None
    z = chapters.lesion_slice(s)
    assert s.mask[:, :, z].sum() == s.mask.sum(axis=(0, 1)).max()
    volumes = chapters.lesion_volumes(phantom_root)
    assert len(volumes) == 6 and (volumes > 0).all()
    times, curves, text = chapters.perfusion_curves(s, z)
    assert "arterial input" in curves and all(len(c) == len(times) for c in curves.values())
    assert any(k.startswith("normal (") for k in curves)  # a healthy region, not a Tmax cut
    assert curves["arterial input"].max() > max(c.max() for k, c in curves.items() if k != "arterial input")
    assert "frames every" in text
    grid, text = chapters.classical_thresholds(s, z)
    ct, rcbf, tmax = grid[0]
    assert ct.truth.shape == s.shape[:2] and ct.pred is None and "study Dice (every slice)" in text
    # each threshold outlined on the map it thresholds, the colorbar naming it
    assert (
        rcbf.label.startswith("CBF relative")
        and tmax.label == "Tmax (s)"
        and np.array_equal(tmax.image, s.Tmax[:, :, z])
    )
    assert rcbf.caption.startswith("rCBF < 30 %: slice Dice") and tmax.caption.startswith("Tmax > 6 s: slice Dice")
    fig = figures.segmentation_grid(grid)
    assert [b.get_ylabel() for b in fig.axes if not b.images] == ["CT (HU)", rcbf.label, "Tmax (s)"]
    rows = chapters.threshold_rows(phantom_root)
    line = chapters.baseline_summary(phantom_root, rows)
    assert line.startswith("rCBF < 30 % over 6 studies: Dice") and "Tmax > 6 s: Dice" in line
    text = chapters.threshold_takeaway(rows, phantom_root)
    assert f"{np.mean([r['tmax_dice'] for r in rows]):.2f}" in text and "on the synthetic phantom" in text
    plt.close("all")


def test_attention_examples_and_figure(results, phantom_root):
    ex = chapters.attention_examples(results / "runs" / ALL_RUN, phantom_root, 3)
    assert ex.images.shape == ex.masks.shape and len(ex.images) == 3
    assert set(ex.maps) == {"untrained", "trained"} and sorted(ex.maps["trained"]) == [1, 2, 3, 4, 5]
    assert ex.maps["trained"][1].shape[1:] == ex.images.shape[1:]  # level 1 is full resolution
    areas = ex.masks.reshape(3, -1).sum(1)
    assert list(areas) == sorted(areas, reverse=True)  # largest lesions first
    fig = figures.attention_levels(ex.images, ex.masks, ex.maps)
    p = [a for a in fig.axes if a.images]
    assert len(p) == 12 and p[7].get_title() == "level 1"
    assert "level 5 mean" in ex.means()
    assert ex.inputs.shape[:2] == (3, len(ex.channels)) and ex.channels[-1] == "Tmax"
    assert ex.similarities["trained"][2].shape == ex.maps["trained"][2].shape
    plt.close("all")


def test_example_slice_uses_the_runs_channels(results, phantom_root):
    ex = chapters.example_slice(results / "runs" / ALL_RUN, phantom_root)
    assert ex.image.shape[1] == len(ex.config.modalities) and ex.mask.shape[:2] == (1, 1)
    assert ex.tmax.shape == ex.image.shape[-2:]
    assert np.allclose(ex.tmax, ex.image[0, MODALITIES.index("Tmax")].numpy())  # All: every channel
    curves = chapters.histories(results)
    assert set(curves) == set(ROWS)
    # every epoch records the full-resolution loss term, the one the learning curves compare: the
    # whole loss without MR, a part of it with MR
    assert all(r["train_loss_full"] == r["train_loss"] for r in curves["base"])
    assert all(0 < r["train_loss_full"] != r["train_loss"] for r in curves["MR"])


def test_cascade_helpers(results, phantom_root, arrays):
    cascade = Predictor(results / "runs" / "cascade", "cpu")
    ex = chapters.cascade_example(cascade, arrays)
    assert ex.study in cascade.split["val"] and ex.ms.shape == ex.truth.shape and ex.ms.min() >= 0
    assert "mean inside the lesion" in ex.summary()
    assert chapters.synthetic_map_file(results / "runs" / "cascade", phantom_root, arrays.studies[0]).endswith(
        "same grid as the CT: True"
    )
    leak = chapters.leakage(results, arrays)
    assert set(leak) == {"in-sample", "out-of-fold", "validation"} and all(0 <= v <= 1 for v in leak.values())
    fig = chapters.figure4(results, arrays, n=2)
    panels = [a for a in fig.axes if a.images]
    n = len(panels) // 3
    assert len(panels) == 3 * n and 1 <= n <= 2  # stage 1, cascade, Ms: smallest and largest lesion
    ms_titles = [a.get_title() for a in panels[2 * n :]]
    assert all(" mL" in t and "Dice" not in t for t in ms_titles)  # no Dice under a map that predicts nothing
    assert [b.get_ylabel() for b in fig.axes if not b.images] == ["Tmax / 20 s", "Tmax / 20 s", "Ms (a.u.)"]
    sizes = [float(t.split("lesion ")[1].split(" mL")[0]) for t in ms_titles]
    assert sizes == sorted(sizes)  # in mL, smallest first
    study = cascade.split["val"][0]
    from stroke_helpers.isles import load_study

    native = load_study(phantom_root / study, modalities=(), require_mask=True).lesion_ml
    assert chapters.lesion_ml(arrays, study) == pytest.approx(native, rel=0.25, abs=0.3)  # resized, close to native
    probs, truths = chapters.validation_probabilities(cascade, arrays)
    assert len(probs) == len(read_split(results / "runs" / "cascade" / "stage2")["val"])
    assert all(p.shape == t.shape for p, t in zip(probs, truths))
    plt.close("all")


def test_paper_figure_grid(results, arrays):
    val = read_split(results / "runs" / ALL_RUN)["val"]
    study, z = chapters.largest_lesion(arrays, val)
    fig = chapters.paper_figure(results, arrays, (TABLE2[-1],), study, z, "Figure 3")
    assert len([a for a in fig.axes if a.images]) == len(ROWS) and fig.axes[0].get_title().startswith("All\nslice Dice")
    assert [b.get_xlabel() for b in fig.axes if not b.images] == ["CT / 100 HU"]  # All's first input, named
    plt.close("all")


def test_grid_time_accounting(results, phantom_root, arrays):
    from stroke_helpers.report import end_to_end, grid_overheads
    from stroke_helpers.runs import read_history, slices_of

    e2e = end_to_end(results, phantom_root, PRESETS["smoke"].size, grid_wall=10.0)
    all_run = results / "runs" / ALL_RUN
    per_epoch = len(slices_of(arrays, read_split(all_run)["train"]))
    assert e2e["training_slices"] >= len(read_history(all_run)) * per_epoch  # at least the All run's epochs
    assert e2e["slices_per_s"] == pytest.approx(e2e["training_slices"] / 10.0)
    parts = grid_overheads(results, 1000.0)
    assert parts["training steps"] > 0 and parts["everything else"] == pytest.approx(
        1000.0 - parts["training steps"] - parts["per-epoch validation"]
    )


def test_phantom_truth_is_the_answer_key(phantom_root, tmp_path):
    """Chapter 1's answer keys: true against deconvolved maps, true regions against the expert
    mask, and the NCCT darkening against onset time; real data (no truth folder) says why not."""
    s = chapters.load_studies(phantom_root, 1)[0]
    z = chapters.lesion_slice(s)
    fig, table = chapters.true_vs_deconvolved(phantom_root, s, z)
    assert len([a for a in fig.axes if a.images]) == 8 and table.count("\n") == 4
    cbf = next(line for line in table.splitlines() if line.startswith("CBF")).split()
    healthy_true, healthy_svd, core_true, core_svd = map(float, cbf[-4:])
    assert 0.5 < healthy_svd / healthy_true < 1.5  # bias-corrected SVD lands near the truth in healthy tissue
    # and keeps the core's drop (phantom v6: core flow 0.3-0.95 of its severe penumbra's, so about half of healthy)
    assert core_true < 0.6 * healthy_true and core_svd < 0.6 * healthy_svd
    fig, text = chapters.truth_regions(phantom_root, s, z)
    titles = [a.get_title() for a in fig.axes if a.images]
    assert titles[0].startswith("true core (green)\ntrue core: study Dice") and "% of the expert mask" in text
    fig, text = chapters.ncct_darkening(phantom_root)
    onset, measured = fig.axes[0].collections[0].get_offsets().T
    assert len(onset) >= 3 and "r = " in text
    assert fig.axes[0].get_xlabel() == "time since onset (min)"
    plt.close("all")
    (tmp_path / "TRAINING").mkdir()
    for fn in (chapters.true_vs_deconvolved, chapters.truth_regions):
        fig, reason = fn(tmp_path, s, z)
        assert fig is None and "no truth folder" in reason


def test_realism_beside_the_real_ct(phantom_root, monkeypatch, tmp_path):
    from conftest import CT_TEMPLATE, REAL_CT

    s = chapters.load_studies(phantom_root, 1)[0]
    monkeypatch.setenv("STROKE_DATA_DIR", str(tmp_path))  # nothing there: no reference CT
    monkeypatch.delenv("STROKE_REAL_CT", raising=False)
    assert chapters.realism(phantom_root, s, 0) == (None, None)
    if not (REAL_CT.exists() and CT_TEMPLATE.exists()):
        pytest.skip("needs the real CT and CT template of ../shared (never part of the repository)")
    monkeypatch.setenv("STROKE_REAL_CT", str(REAL_CT))
    monkeypatch.setenv("STROKE_CT_TEMPLATE", str(CT_TEMPLATE))
    fig, percentiles = chapters.realism(phantom_root, s, 0)
    assert set(percentiles) == {"phantom", "real ISLES CT", next(k for k in percentiles if k.startswith("CT template"))}
    assert 15 < percentiles["phantom"][2] < 45 and 15 < percentiles["real ISLES CT"][2] < 50  # brain medians in HU
    assert len([a for a in fig.axes if a.images]) == 3


def test_attention_shapes_walks_the_equation():
    import torch

    from stroke_helpers.model import AdditiveCrossAttention

    text = chapters.attention_shapes(
        AdditiveCrossAttention(8, 16), torch.randn(2, 8, 12, 12), torch.randn(2, 16, 12, 12)
    )
    lines = text.splitlines()
    assert lines[0].split() == ["X_e", "(2,", "8,", "12,", "12)"] and "(2, 1, 12, 12)" in lines[4]
    assert lines[-1] == "X'_e == X_e * a: True"


def test_network_batch_is_what_training_sees(phantom_root):
    """The 'data the network sees' figure: every channel of seeded augmented lesion slices, each
    with its mask outline, the same batch for the same seed."""
    fig = chapters.network_batch(phantom_root, "smoke", n=3, seed=1)
    panels = [a for a in fig.axes if a.images]
    assert len(panels) == 3 * len(MODALITIES) and [a.get_title() for a in panels[:5]] == list(MODALITIES)
    assert all(len(a.collections) == 1 for a in panels)  # a lesion outline in every panel
    assert not any(a.texts and a.texts[0].get_text() == "L" for a in panels)  # flips: no side markers
    again = chapters.network_batch(phantom_root, "smoke", n=3, seed=1)
    first = [a for a in again.axes if a.images]
    assert all(np.array_equal(a.images[0].get_array(), b.images[0].get_array()) for a, b in zip(panels, first))
    plt.close("all")


def test_ncct_baseline_beside_the_learned_model(results, phantom_root):
    """Table 1's NCCT column gets its no-learning reference on the same studies, with a verdict."""
    from stroke_helpers.report import ncct_markdown

    grid = Grid(phantom_root, results, "smoke", progress=False)
    grid.run("MR+ATT", "CT")
    text = ncct_markdown(results, phantom_root)
    lines = text.splitlines()
    assert lines[2].startswith("| hypodensity vs mirror (no learning) | ") and lines[3].startswith(
        "| MR+ATT (learned) | "
    )
    assert lines[-1].startswith("- hypodensity baseline vs MR+ATT NCCT: ")


def test_show_source_prints_each_function_in_order(capsys):
    from stroke_helpers.loss import class_weights, weighted_bce

    chapters.show_source(weighted_bce, class_weights)
    out = capsys.readouterr().out
    assert out.index("def weighted_bce(") < out.index("def class_weights(")
