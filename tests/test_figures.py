"""Every figure function the chapters show: the panels, titles and data they are asked to draw."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stroke_helpers import figures  # noqa: E402

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def panels(fig):
    """The image panels of a figure (not its colorbars)."""
    return [a for a in fig.axes if a.images]


def disk(n=32, r=6):
    y, x = np.mgrid[:n, :n]
    return (x - n / 2) ** 2 + (y - n / 2) ** 2 < r**2


def test_segmentation_grid_dice_titles_and_contours():
    truth = disk()
    grid = [
        [figures.Panel(rng.random((32, 32)), truth, truth), None],
        [figures.Panel(rng.random((32, 32)), truth, np.zeros_like(truth))],
    ]
    fig = figures.segmentation_grid(grid, row_labels=("a", "b"), col_labels=("first", "second"))
    axes, bars = fig.axes[:4], fig.axes[4:]
    assert axes[0].get_title() == "first\nDice 1.00" and axes[2].get_title() == "Dice 0.00"
    assert [b.get_ylabel() for b in bars] == ["normalised Tmax"] * 2  # one colorbar per row
    assert {t.get_text() for t in axes[0].texts} >= {"L", "R"}
    assert (
        len(axes[0].collections) == 2 and len(axes[2].collections) == 1
    )  # expert red + prediction blue; no prediction
    assert not axes[1].axison  # the empty panel


def test_learning_curves_one_line_per_run():
    h = [{"epoch": e, "train_loss": 1 / e, "val_dice": 0.1 * e} for e in range(1, 5)]
    fig = figures.learning_curves({"base": h, "MR": h})
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[1].lines[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_level_outputs_and_class_weights():
    fig = figures.level_outputs(
        rng.random((32, 32)), disk(), rng.random((6, 32, 32)), (0.03, 0.045, 0.05, 0.125, 0.25, 0.5)
    )
    p = panels(fig)
    assert len(p) == 7 and p[1].get_title() == "level 6 (W=0.03)" and p[-1].get_title() == "level 1 (W=0.5)"
    fig = figures.class_weight_figure(rng.random((32, 32)), disk().astype(float), np.where(disk(), 0.7, 0.3))
    assert [ax.get_title() for ax in panels(fig)] == ["input", "expert mask Y", "class weights C"]


def test_synthetic_map_figure_and_time_curves():
    channels = {m: rng.random((32, 32)) for m in ("CT", "CBF", "Tmax")}
    fig = figures.synthetic_map_figure(channels, rng.random((32, 32)), disk())
    ms = panels(fig)[-1]
    assert ms.get_title() == "synthetic map Ms" and ms.images[0].get_clim() == (0, 1.5)
    t = np.arange(40.0)
    fig = figures.time_curves(t, {"arterial input": np.exp(-((t - 10) ** 2) / 8), "core (3 voxels)": t * 0})
    assert [len(ax.lines) for ax in fig.axes] == [1, 1]  # tissue, and the AIF on a twin axis of the same time
    assert fig.axes[1].get_ylabel() == "arterial input (HU)" and fig.axes[0].get_xlim() == fig.axes[1].get_xlim()


def test_histograms_and_side_by_side_maps(phantom_root):
    from stroke_helpers.chapters import load_studies

    studies = load_studies(phantom_root, 2)
    fig = figures.modality_histograms(studies)
    assert [ax.get_title() for ax in fig.axes] == ["CT", "CBV", "CBF", "MTT", "Tmax"]  # the channel order
    assert all(len(ax.patches) == 2 for ax in fig.axes)  # brain and lesion
    fig = figures.lesion_volume_histogram([3.0, 15.0, 40.0])
    assert "median 15.0 mL" in fig.axes[0].get_legend_handles_labels()[1][0]
    s = studies[0]
    fig = figures.maps_side_by_side({"true": s.images, "deconvolved": s.images}, 0)
    assert len(panels(fig)) == 8 and fig.axes[0].get_title() == "CBV, true"


def test_one_style_every_image_panel_has_units_and_sides():
    """The package style: constrained layout, 100 dpi on screen, 300 saved; each image panel of a
    map figure carries a colorbar labelled with its units and L/R markers."""
    import matplotlib.pyplot as plt

    assert plt.rcParams["figure.dpi"] == 100 and plt.rcParams["savefig.dpi"] == 300
    vol = {m: rng.random((32, 32, 3)) * 50 for m in ("CBF", "CBV", "MTT", "Tmax")}
    fig = figures.maps_side_by_side({"true": vol, "deconvolved": vol}, z=1)
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    panels = [a for a in fig.axes if a.images]
    bars = [a for a in fig.axes if not a.images]
    assert len(panels) == 8 and len(bars) == 8
    assert {b.get_ylabel() for b in bars} == {"mL/100 g/min", "mL/100 g", "s"}
    assert all({t.get_text() for t in a.texts} >= {"L", "R"} for a in panels)
    # the same window down each column: the true map's
    assert all(panels[j].images[0].get_clim() == panels[j + 4].images[0].get_clim() for j in range(4))
    plt.close("all")


def test_figures_transpose_every_slice_themselves():
    """One orientation convention: slices go in as (X, Y); the face (growing Y) is at the top."""
    image = np.zeros((40, 20))  # X = 40 columns on screen, Y = 20 rows
    image[:, -1] = 1  # the row of largest Y: the face
    fig, ax = figures.subplots()
    im = figures.image_panel(fig, ax, image, "gray", (0, 1))
    shown = im.get_array()
    assert shown.shape == (20, 40) and shown[-1].all() and not shown[0].any()  # origin lower: last row on top
    panels = [figures.Panel(image, image > 0, None, "x")]
    assert figures.draw_overlays(panels).axes[0].images[0].get_array().shape == (20, 40)
    assert figures.draw_maps({"CT": image}, {"CT": (0, 1)}).axes[0].images[0].get_array().shape == (20, 40)
    assert figures.axial(np.zeros((40, 20, 3)), 1).shape == (40, 20)
