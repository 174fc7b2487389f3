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
    fig = figures.segmentation_grid(
        grid, row_labels=("a", "b"), col_labels=("first", "second"), image_label="Tmax / 20 s"
    )
    axes, bars = fig.axes[:4], fig.axes[4:]
    assert axes[0].get_title() == "first\nslice Dice 1.00" and axes[2].get_title() == "slice Dice 0.00"
    assert [b.get_ylabel() for b in bars] == ["Tmax / 20 s"] * 2  # one colorbar per row
    assert {t.get_text() for t in axes[0].texts} >= {"L", "R"}
    assert (
        len(axes[0].collections) == 2 and len(axes[2].collections) == 1
    )  # expert red + prediction blue; no prediction
    assert not axes[1].axison  # the empty panel


def test_learning_curves_compare_the_full_resolution_term():
    """The loss panel draws the full-resolution term, the one every configuration has, never a
    six-term MR total beside a one-term base loss; a history without it gets no loss curve."""
    h = [{"epoch": e, "train_loss": 6 / e, "train_loss_full": 1 / e, "val_dice": 0.1 * e} for e in range(1, 5)]
    fig = figures.learning_curves({"base": h, "MR": h})
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert list(fig.axes[1].lines[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert "full-resolution" in fig.axes[0].get_title() and fig.axes[0].get_ylabel() and fig.axes[1].get_ylabel()
    old = [{k: v for k, v in r.items() if k != "train_loss_full"} for r in h]
    fig = figures.learning_curves({"base": h, "MR": old})
    assert len(fig.axes[0].lines) == 1 and "no full-resolution loss recorded for MR" in fig.axes[0].texts[0].get_text()


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


# --- readable figures: colorbars that name their map, outlines that show, units on every axis ---------

OUTLINE_CMAPS = ("gray", "magma", "inferno", "viridis")


def _simulate(rgb, kind):
    """Machado et al. 2009 simulation of a full colour-vision deficiency (sRGB in [0, 1])."""
    m = {
        "deuteranopia": [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ],
        "protanopia": [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ],
        "tritanopia": [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ],
    }[kind]
    rgb = np.asarray(rgb, float)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    out = np.clip(lin @ np.array(m).T, 0, 1)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


def test_outline_colours_stand_off_every_colormap_and_each_other():
    from matplotlib.colors import to_rgb

    for cmap in (*OUTLINE_CMAPS, *{figures.cmap_of(m) for m in ("CT", "CBV", "CBF", "MTT", "Tmax")}):
        for colour in (figures.EXPERT, figures.PREDICTED):
            assert figures.colour_contrast(colour, cmap) >= 40, (colour, cmap)
    assert figures.colour_contrast("red", "inferno") < 40 and figures.colour_contrast("#3399ff", "viridis") < 40
    for kind in ("deuteranopia", "protanopia", "tritanopia"):  # a colour-blind-safe pair
        a, b = (figures._lab(_simulate(to_rgb(c), kind)) for c in (figures.EXPERT, figures.PREDICTED))
        assert np.linalg.norm(a - b) >= 40, kind


def _outlines(ax):
    """``[(colour as RGB, colormap name)]`` of every contour drawn on an image panel."""
    from matplotlib.colors import to_rgb

    cmap = ax.images[0].get_cmap().name
    return [(to_rgb(c.get_edgecolor()[0]), cmap) for c in ax.collections]


def test_every_outline_drawn_shows_on_its_panel():
    """Segmentation grids, the synthetic map, attention and batch figures: every outline's colour
    stands off the colormap of the image it is drawn on."""
    truth = disk()
    grid = [
        [
            figures.Panel(rng.random((32, 32)), truth, truth, cmap="inferno", label="Ms (a.u.)"),
            figures.Panel(rng.random((32, 32)), truth, truth, cmap="viridis", label="attention"),
            figures.Panel(rng.random((32, 32)), truth, truth, cmap="magma", label="Tmax (s)"),
        ]
    ]
    channels = {m: rng.random((32, 32)) for m in ("CT", "CBF", "Tmax")}
    figs = [
        figures.segmentation_grid(grid),
        figures.synthetic_map_figure(channels, rng.random((32, 32)), truth),
        figures.draw_attention(rng.random((32, 32)), truth, {1: rng.random((16, 16))}, 1),
        figures.attention_levels(rng.random((1, 32, 32)), truth[None], {"trained": {1: rng.random((1, 32, 32))}}),
        figures.study_figure(
            {m: rng.random((32, 32, 2)) * 50 for m in ("CT", "CBF", "Tmax")}, 0, np.stack([truth] * 2, -1)
        ),
        figures.batch_figure(rng.random((1, 2, 32, 32)), truth[None].astype(float), ["CT", "Tmax"], ["x"]),
    ]
    seen = 0
    for fig in figs:
        for ax in panels(fig):
            for colour, cmap in _outlines(ax):
                assert figures.colour_contrast(colour, cmap) >= 40, (colour, cmap)
                seen += 1
    assert seen >= 12


def test_each_colorbar_names_the_map_beside_it():
    """A row of different maps gets a colorbar per panel, each with that panel's label; a grid
    whose columns hold one map each (Figures 2 and 3) one colorbar per column, named by it."""
    truth = disk()
    row = [
        figures.Panel(rng.random((32, 32)), truth, None, "CT", "gray", (0, 100), "CT (HU)"),
        figures.Panel(
            rng.random((32, 32)), truth, truth, "", "magma", (0, 150), "CBF relative to the healthy hemisphere (%)"
        ),
        figures.Panel(rng.random((32, 32)), truth, truth, "", "magma", (0, 20), "Tmax (s)"),
    ]
    fig = figures.segmentation_grid([row])
    assert [b.get_ylabel() for b in fig.axes if not b.images] == [p.label for p in row]
    columns = [("CBV", "CBV / brain mean"), ("Tmax", "Tmax / 20 s")]
    grid = [
        [figures.Panel(rng.random((32, 32)), truth, truth, "", "magma", (0, 1.5), label) for _, label in columns]
    ] * 3
    fig = figures.segmentation_grid(grid, row_labels=("base", "MR", "MR+ATT"), col_labels=[m for m, _ in columns])
    bars = [b for b in fig.axes if not b.images]
    assert [b.get_xlabel() for b in bars] == [label for _, label in columns]  # under each column
    assert "normalised Tmax" not in {b.get_xlabel() for b in bars} | {b.get_ylabel() for b in bars}


def test_every_axis_of_the_plots_has_units():
    t = np.arange(20.0)
    figs = [
        figures.time_curves(t, {"arterial input": np.exp(-((t - 5) ** 2)), "normal (3 voxels)": t * 0}),
        figures.lesion_volume_histogram([3.0, 15.0, 40.0]),
        figures.draw_threshold_curve(np.linspace(0, 1, 11), np.linspace(0, 1, 11), np.linspace(0, 1, 11), 0.5),
        figures.darkening_figure(np.array([60.0, 600]), np.array([1.0, 8]), np.array([1.0, 8])),
    ]
    for fig in figs:
        for ax in fig.axes:
            assert ax.get_ylabel(), fig
        assert fig.axes[0].get_xlabel()


def test_histograms_have_units_and_keep_both_curves_in_view(phantom_root):
    """Chapter 01's histograms: each axis in the modality's units, and the uncalibrated maps' x range
    ends near the bulk of both curves, not at the few vessel voxels (which squeezed CBF into a fifth)."""
    from stroke_helpers.chapters import load_studies
    from stroke_helpers.datasets import brain_mask

    studies = load_studies(phantom_root, 3)
    fig = figures.modality_histograms(studies)
    for ax, m in zip(fig.axes, ("CT", "CBV", "CBF", "MTT", "Tmax")):
        unit = figures.row_of(m).unit
        assert ax.get_xlabel() == f"{m} ({unit})" and unit in ax.get_ylabel()
    cbf = fig.axes[2]
    healthy = np.concatenate([s.CBF[brain_mask(s) & ~s.mask.astype(bool)] for s in studies])
    assert np.percentile(healthy, 95) > 0.5 * cbf.get_xlim()[1]  # the bulk of healthy CBF spans over half the axis


def test_architecture_is_drawn_from_the_models_own_layers():
    from stroke_helpers.model import CrossAttentionAutoencoder

    widths = (4, 8, 16, 32, 64, 128)
    fig = figures.architecture_figure(CrossAttentionAutoencoder(3, widths), size=64)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(t == "ATT" for t in texts) == 5  # one gate per decoder level
    for level, (c, side) in enumerate(zip(widths, (64, 32, 16, 8, 4, 2)), start=1):
        assert any(f"level {level}\n{c} ch, {side}x{side}" in t for t in texts), level
    assert any("X_e 4 ch, X_d 8 ch, F_int 4" in t for t in texts)  # read from the gate's convolutions
    assert sum(t.startswith("1x1 conv") for t in texts) == 6 and any("W = 0.5 (output)" in t for t in texts)
    assert any(t.startswith("1x1 conv 128->1\nW = 0.03") for t in texts)  # the bottleneck's head
    assert "input: 3 channels, 64x64 px" in texts
    plain = figures.architecture_figure(CrossAttentionAutoencoder(3, widths, attention=False, multilevel=False))
    texts = [t.get_text() for t in plain.axes[0].texts]
    assert "ATT" not in texts and sum(t == "skip (copy)" for t in texts) == 5
    assert sum(t.startswith("1x1 conv") for t in texts) == 1 and "no attention" in plain.axes[0].get_title()
