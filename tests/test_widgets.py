"""Widgets: set their values, assert on what is drawn (pure drawing functions, headless), and that
a change redraws the viewer's one figure in place."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stroke_helpers import figures  # noqa: E402
from stroke_helpers.explorer import TABS, Explorer, check_run  # noqa: E402
from stroke_helpers.isles import discover_cases, load_study  # noqa: E402
from stroke_helpers.locations import NotADatasetError, require_dataset  # noqa: E402
from stroke_helpers.metrics import threshold_sweep  # noqa: E402
from stroke_helpers.widgets import (  # noqa: E402
    AttentionExplorer,
    ClassicalExplorer,
    SeriesViewer,
    StudyBrowser,
    ThresholdExplorer,
)


@pytest.fixture(scope="module")
def studies(phantom_root):
    return [load_study(c) for c in discover_cases(phantom_root)[:3]]


def _panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def test_study_browser_draws_every_map_on_one_slice(studies, phantom_root):
    browser = StudyBrowser(studies)
    browser.study.value = studies[1].name
    assert browser.z.max == studies[1].n_slices - 1
    browser.z.value = browser.z.max
    browser.windows["Tmax"].value = (2, 12)
    assert browser.error == ""
    fig = browser.figure()
    z = browser.z.max
    for m in ("CT", "CBF", "CBV", "MTT", "Tmax"):
        ax = _panel(fig, m)
        assert np.array_equal(ax.images[0].get_array(), studies[1].images[m][:, :, z].T)
    assert _panel(fig, "Tmax").images[0].get_clim() == (2, 12)
    assert _panel(fig, "CT").images[0].get_clim() == (0, 100)
    assert len(fig.axes) == 10  # five maps, five colorbars
    assert f"{studies[1].name}  slice {z}" in fig.texts[0].get_text()
    # window sliders in each map's units: seconds for Tmax, HU for CT, the study's range for CBF
    assert (browser.windows["Tmax"].min, browser.windows["Tmax"].max) == (0, 30)
    assert browser.windows["CT"].description == "CT (HU)"
    cbf = studies[1].CBF
    assert browser.windows["CBF"].value[1] == pytest.approx(np.percentile(cbf[cbf > 0], 99), rel=1e-3)
    has_lesion = studies[1].mask[:, :, z].any()
    assert bool(_panel(fig, "CT")._live_outlines) == bool(has_lesion)
    browser.overlay.value = False
    assert not _panel(browser.figure(), "CT")._live_outlines
    plt.close("all")
    with pytest.raises(ValueError, match="at least one"):
        StudyBrowser([])
    # case folders: every study, loaded when picked
    lazy = StudyBrowser(discover_cases(phantom_root))
    assert len(lazy.study.options) == len(discover_cases(phantom_root))
    lazy.study.value = lazy.study.options[-1]
    assert lazy.current.name == lazy.study.options[-1] and lazy.error == ""


def test_viewer_redraws_in_place_and_matches_a_fresh_figure(studies):
    browser = StudyBrowser(studies)
    first = browser.render()
    fig = browser._fig
    browser.z.value = (browser.z.value + 1) % (browser.z.max + 1)
    assert browser._fig is fig and browser.image.value != first  # same figure, new picture
    fresh = browser.figure()
    for a, b in zip(fig.axes, fresh.axes):
        if a.images:
            assert np.array_equal(a.images[0].get_array(), b.images[0].get_array())
            assert a.images[0].get_clim() == b.images[0].get_clim()
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "image/png" in bundle
    plt.close("all")


def test_viewer_shows_errors_in_one_line(studies):
    browser = StudyBrowser(studies)
    browser.render()
    browser._sources["broken"] = studies[0].path / "missing"
    browser.study.options = [*browser.study.options, "broken"]
    browser.study.value = "broken"
    assert browser.error.startswith("error: ") and "\n" not in browser.error
    assert "stroke-error" in browser.message.value


def test_series_viewer_frames_and_curves(studies):
    s = studies[0]
    viewer = SeriesViewer(s)
    viewer.render()
    viewer.t.value, viewer.z.value = 3, 0
    viewer.x.value, viewer.y.value = 10, 12
    fig = viewer.figure()
    assert np.array_equal(fig.axes[0].images[0].get_array(), s.pwi[:, :, 0, 3].T)
    lines = fig.axes[1].get_lines()
    assert lines[0].get_xdata()[0] == pytest.approx(3 * s.pwi_time_step)  # the frame's time
    voxel = s.pwi[10, 12, 0]
    assert np.allclose(lines[2].get_ydata(), voxel - voxel[:2].mean())
    viewer.region.value = "lesion in this slice"
    assert "lesion" in viewer.figure().axes[1].get_lines()[2].get_label() and viewer.error == ""
    plt.close("all")


def test_classical_explorer_scores_live(studies):
    from stroke_helpers.datasets import brain_mask
    from stroke_helpers.metrics import dice
    from stroke_helpers.perfusion import core_rcbf, tissue_mask

    s = studies[0]
    viewer = ClassicalExplorer(s)
    viewer.rcbf_percent.value = 40
    tissue = tissue_mask(s.CT, brain_mask(s))
    expected = dice(core_rcbf(s.CBF, tissue, s.Tmax, 0.4), s.mask.astype(bool))
    fig = viewer.figure()
    assert f"rCBF < 40 % over CBF: Dice {expected:.3f}" in fig.axes[0].get_title()
    viewer.tmax_s.value = 8
    assert "Tmax > 8 s" in viewer.figure().axes[1].get_title()
    plt.close("all")
    with pytest.raises(ValueError, match="no expert mask"):
        ClassicalExplorer(load_study(discover_cases(s.path.parent.parent, "TESTING")[0]))


def test_attention_explorer_levels_channels_and_similarities():
    rng = np.random.default_rng(0)
    images, masks = rng.random((3, 2, 32, 32)), np.zeros((3, 32, 32), bool)
    attention = {1: rng.random((3, 32, 32)), 2: rng.random((3, 16, 16))}
    similarities = {1: 3 * rng.random((3, 32, 32)), 2: 3 * rng.random((3, 16, 16))}
    explorer = AttentionExplorer(images, masks, attention, similarities, ["CT", "Tmax"], ms=rng.random((3, 32, 32)))
    explorer.level.value, explorer.index.value, explorer.channel.value = 2, 1, 1
    fig = explorer.figure()
    assert np.array_equal(fig.axes[0].images[0].get_array(), images[1, 1].T)
    assert np.array_equal(fig.axes[1].images[0].get_array(), attention[2][1].T)
    assert "level 2 (16x16)" in fig.axes[1].get_title() and "Tmax" in fig.axes[0].get_title()
    assert "synthetic map Ms" in fig.axes[2].get_title()
    explorer.kind.value = "similarities"
    assert np.array_equal(explorer.figure().axes[1].images[0].get_array(), similarities[2][1].T)
    one = AttentionExplorer(images[:, 0], masks, attention)  # the notebook's call: one channel
    assert np.array_equal(one.figure().axes[0].images[0].get_array(), images[0, 0].T)
    plt.close("all")
    with pytest.raises(ValueError, match="no attention"):
        AttentionExplorer(images, masks, {})


def test_threshold_explorer_redraws_overlay_and_scores():
    truth = np.zeros((2, 10, 10), bool)
    truth[:, 2:6, 2:6] = True
    probs = np.where(truth, 0.7, 0.2)  # perfect between 0.2 and 0.7, nothing above 0.7
    d, p = threshold_sweep([probs], [truth], np.array([0.1, 0.5, 0.9]))
    assert d.tolist() == pytest.approx([2 * 32 / (200 + 32), 1.0, 0.0])
    assert p.tolist() == pytest.approx([32 / 200, 1.0, 0.0])
    explorer = ThresholdExplorer([probs], [truth])
    explorer.threshold.value = 0.5
    fig = explorer.figure()
    assert "Dice 1.000, precision 1.000, recall 1.000" in fig.axes[0].get_title()
    assert fig.axes[1].lines[-1].get_xdata()[0] == 0.5  # panel, curves, colorbar
    explorer.threshold.value = 0.1
    assert explorer.scores()["dice"] == pytest.approx(2 * 32 / (200 + 32))
    assert "Dice 0.276" in explorer.figure().axes[0].get_title()
    explorer.threshold.value = 0.8
    assert explorer.scores() == {"dice": 0.0, "precision": 0.0, "recall": 0.0, "mean": 0.0}
    assert explorer.error == ""
    plt.close("all")
    with pytest.raises(ValueError, match="as many"):
        ThresholdExplorer([probs], [])


def test_update_functions_match_fresh_figures():
    rng = np.random.default_rng(1)
    a, b = rng.random((8, 8)), rng.random((8, 8))
    fig = figures.draw_maps({"CT": a}, {"CT": (0, 1)}, a > 0.5, "one")
    figures.update_maps(fig, {"CT": b}, {"CT": (0.2, 0.8)}, None, "two")
    assert np.array_equal(fig.axes[0].images[0].get_array(), b.T)  # slices go in as (X, Y), shown transposed
    assert fig.axes[0].images[0].get_clim() == (0.2, 0.8) and not fig.axes[0]._live_outlines
    assert fig.texts[0].get_text() == "two"
    plt.close("all")


def test_explorer_app_without_and_with_a_run(phantom_root, tmp_path):
    app = Explorer(phantom_root)
    for i, tab in enumerate(TABS):
        app.tabs.selected_index = i
        assert app.status.value == "", tab
    assert "python -m stroke_helpers train" in app.tabs.children[TABS.index("Prediction")].value
    app.tabs.selected_index = 0
    app.study.value = app.study.options[-1][1]
    assert app.viewers["Maps"].current.name == app.study.value
    with pytest.raises(NotADatasetError, match="not an ISLES-layout dataset"):
        require_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a trained run"):
        check_run(tmp_path)
    plt.close("all")


def test_explore_command_says_what_is_wrong_in_one_line(phantom_root, tmp_path, capsys):
    from stroke_helpers.__main__ import main

    for argv, expected in (
        (["--data", str(tmp_path)], "not an ISLES-layout dataset"),
        (["--data", str(phantom_root), "--run", str(tmp_path)], "not a trained run"),
    ):
        assert main(["explore", *argv, "--no-browser"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_:  # an impossible number: refused by the parser, as every typed option
        main(["explore", "--data", str(phantom_root), "--port", "70000", "--no-browser"])
    assert exit_.value.code == 2 and "not a port number (1-65535): 70000" in capsys.readouterr().err


def test_explore_refuses_a_broken_run_and_a_taken_port_before_the_server_starts(
    phantom_root, tmp_path, capsys, monkeypatch
):
    """A run whose checkpoint does not load, and a port already taken, are one ``error:`` line
    each, exit status 2, and no Voilà started."""
    import socket

    from stroke_helpers import explorer
    from stroke_helpers.__main__ import main
    from stroke_helpers.runs import TrainConfig, write_run_files

    def no_server(*args, **kwargs):
        raise AssertionError(f"the server was started: {args}")

    monkeypatch.setattr(explorer.subprocess, "Popen", no_server)
    run = tmp_path / "broken"
    run.mkdir()
    write_run_files(TrainConfig(data=str(phantom_root), out=str(run), preset="smoke"), [], [])
    (run / "best.pt").write_bytes(b"not a checkpoint, cut short")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv, expected in (
            (["--run", str(run)], f"{run / 'best.pt'}: not a readable checkpoint"),
            ([], f"--port {port}: already in use on 127.0.0.1"),
        ):
            assert main(["explore", "--data", str(phantom_root), *argv, "--port", str(port), "--no-browser"]) == 2
            out, err = capsys.readouterr()
            assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
            assert "explorer: http" not in out, out


def test_the_app_shows_its_errors_in_one_line_and_logs_the_details(monkeypatch, capfd):
    from stroke_helpers import explorer

    def broken(*args):
        raise KeyError("no such map\n  File 'x.py', line 1")

    monkeypatch.setattr(explorer.Explorer, "from_environment", broken)
    page = explorer.app("cpu").value
    assert page.startswith('<span class="stroke-error"') and "\n" not in page, page
    assert "error: KeyError: no such map (details in the server log)" in page
    assert "Traceback" not in page and "x.py" not in page
    log = capfd.readouterr().err
    assert "explorer: starting the app failed" in log and "Traceback" in log and "x.py" in log


def test_explore_opens_the_browser_on_a_page_that_holds_the_token(tmp_path, monkeypatch):
    """The browser gets a local page that redirects to the token URL, never the token itself."""
    import socket
    import threading

    from stroke_helpers import explorer

    opened = threading.Event()
    calls = []
    monkeypatch.setattr(explorer.webbrowser, "open", lambda uri, new=0: (calls.append(uri), opened.set()))

    class Running:
        def poll(self):
            return None

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        url = f"http://127.0.0.1:{port}/?token=secret"
        explorer._open_browser_when_ready(url, port, Running(), tmp_path)
        assert opened.wait(30)
    assert calls == [(tmp_path / "open.html").as_uri()]
    assert url in (tmp_path / "open.html").read_text()
    assert (tmp_path / "open.html").stat().st_mode & 0o077 == 0
