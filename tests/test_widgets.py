"""Widgets: set their values, assert on what is drawn (pure drawing functions, headless)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stroke_helpers.isles import discover_cases, load_study  # noqa: E402
from stroke_helpers.metrics import threshold_sweep  # noqa: E402
from stroke_helpers.widgets import AttentionExplorer, StudyBrowser, ThresholdExplorer  # noqa: E402


@pytest.fixture(scope="module")
def studies(phantom_root):
    return [load_study(c) for c in discover_cases(phantom_root)[:3]]


def test_study_browser_draws_what_is_selected(studies):
    browser = StudyBrowser(studies)
    browser.study.value = studies[1].name
    assert browser.z.max == studies[1].n_slices - 1
    browser.modality.value = "Tmax"
    assert browser.window.value == (0, 20)
    browser.z.value = browser.z.max
    fig = browser.figure()
    ax = fig.axes[0]
    assert ax.get_title() == f"{studies[1].name}  Tmax  z={browser.z.max}"
    shown = ax.images[0].get_array()
    assert np.array_equal(shown, studies[1].Tmax[:, :, browser.z.max].T)
    assert ax.images[0].get_clim() == (0, 20)
    has_lesion = studies[1].mask[:, :, browser.z.max].any()
    assert (len(ax.collections) > 0) == bool(has_lesion)
    browser.overlay.value = False
    assert len(browser.figure().axes[0].collections) == 0
    browser.modality.value = "CBF"  # uncalibrated: window from the study's 99th percentile
    assert browser.window.value[1] == pytest.approx(np.percentile(studies[1].CBF[studies[1].CBF > 0], 99), rel=1e-3)
    plt.close("all")
    with pytest.raises(ValueError):
        StudyBrowser([])


def test_attention_explorer_shows_the_chosen_level_and_slice():
    rng = np.random.default_rng(0)
    images, masks = rng.random((3, 32, 32)), np.zeros((3, 32, 32), bool)
    attention = {1: rng.random((3, 32, 32)), 2: rng.random((3, 16, 16))}
    explorer = AttentionExplorer(images, masks, attention)
    explorer.level.value, explorer.index.value = 2, 1
    fig = explorer.figure()
    assert np.array_equal(fig.axes[0].images[0].get_array(), images[1].T)
    assert np.array_equal(fig.axes[1].images[0].get_array(), attention[2][1].T)
    assert "level 2 (16x16)" in fig.axes[1].get_title()
    plt.close("all")


def test_threshold_explorer_curves_and_marker():
    truth = np.zeros((10, 10, 2), bool)
    truth[2:6, 2:6] = True
    probs = np.where(truth, 0.7, 0.2)  # perfect between 0.2 and 0.7, nothing above 0.7
    d, p = threshold_sweep([probs], [truth], np.array([0.1, 0.5, 0.9]))
    assert d.tolist() == pytest.approx([2 * 32 / (200 + 32), 1.0, 0.0])
    assert p.tolist() == pytest.approx([32 / 200, 1.0, 0.0])
    explorer = ThresholdExplorer([probs], [truth])
    explorer.threshold.value = 0.5
    fig = explorer.figure()
    assert "Dice 1.000" in fig.axes[0].get_title()
    assert fig.axes[0].lines[-1].get_xdata()[0] == 0.5
    plt.close("all")
