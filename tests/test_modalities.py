"""The modality table: canonical order, normalisation arithmetic, one-line refusals, one row per modality."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest
from conftest import make_case

from stroke_helpers import figures, isles, widgets
from stroke_helpers import modalities as M
from stroke_helpers.__main__ import main
from stroke_helpers.datasets import normalise
from stroke_helpers.isles import Study, find_case_files, load_study, modality_token, write_case

CANONICAL = ("CT", "CBV", "CBF", "MTT", "Tmax")


def test_table_has_every_input_in_canonical_order():
    assert M.MODALITIES == CANONICAL  # the network's channel order: trained checkpoints depend on it
    assert list(M.TABLE)[: len(CANONICAL)] == list(CANONICAL)  # inputs first, in that order
    assert [m for m, row in M.TABLE.items() if not row.is_input] == ["4DPWI", "OT"]
    assert M.ALL == "CT,CBV,CBF,MTT,Tmax"
    assert isles.MODALITIES is M.MODALITIES  # the loader's list is the table's
    assert M.PERFUSION_MAPS == ("CBV", "CBF", "MTT", "Tmax")
    assert all(name == row.name for name, row in M.TABLE.items())
    tokens = [row.token for row in M.TABLE.values()]
    assert len(set(tokens)) == len(tokens)
    # what the archives hold, as the loader and the phantom's writer used to spell it
    assert {m: row.token for m, row in M.TABLE.items()} == {
        "CT": "CT",
        "4DPWI": "CT_4DPWI",
        "CBF": "CT_CBF",
        "CBV": "CT_CBV",
        "MTT": "CT_MTT",
        "Tmax": "CT_Tmax",
        "OT": "OT",
    }
    assert {m: np.dtype(row.dtype) for m, row in M.TABLE.items()} == {
        "CT": np.int32,
        "4DPWI": np.int16,
        "CBF": np.uint16,
        "CBV": np.uint16,
        "MTT": np.float64,
        "Tmax": np.float64,
        "OT": np.uint8,
    }
    assert M.id_order() == ("4DPWI", "CT", "CBF", "CBV", "MTT", "Tmax", "OT")
    units = {m: (row.unit, row.physical_unit) for m, row in M.TABLE.items()}
    assert units["CBF"] == ("a.u.", "mL/100 g/min") and units["CBV"] == ("a.u.", "mL/100 g")
    assert units["CT"] == ("HU", "HU") and units["Tmax"] == ("s", "s") and units["4DPWI"] == ("HU", "HU")


def test_canonical_order_and_channels():
    assert M.canonical_modalities("Tmax,CBV") == ("CBV", "Tmax")
    assert M.canonical_modalities(["Tmax", "CT", "CBF"]) == ("CT", "CBF", "Tmax")
    assert M.channel_indices("Tmax,CT") == [0, 4]
    assert M.channel_index("Tmax") == 4 and M.channel_index("CBV") == 1
    assert M.canonical_modalities((), allow_empty=True) == ()


def _old_normalise(m: str, x: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The formulas datasets.normalise had before the table, written out."""
    if m == "CT":
        out = np.clip((x - 0.0) / (100.0 - 0.0), 0, 1)
    elif m in ("CBF", "CBV"):
        ref = float(x[brain].mean()) if brain.any() else 0.0
        out = np.clip(x / ref, 0, 4) if ref > 0 else np.zeros_like(x)
    else:
        out = np.clip(x / 20.0, 0, 1.5)
    return out.astype(np.float32)


@pytest.mark.parametrize("name", CANONICAL)
def test_normalisation_is_bit_identical_to_the_old_formulas(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    scale = {"CT": 400.0, "CBV": 150.0, "CBF": 900.0, "MTT": 40.0, "Tmax": 40.0}[name]
    x = (rng.normal(0.3, 0.6, (40, 36, 5)) * scale).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = 0
    for brain in (rng.random(x.shape) > 0.4, np.zeros(x.shape, bool)):
        new, old = M.TABLE[name].normalise(x, brain), _old_normalise(name, x, brain)
        assert new.dtype == np.float32 and new.shape == x.shape
        assert np.array_equal(new.view(np.uint32), old.view(np.uint32)), name
    # and through datasets.normalise, with every input at once
    images = {m: (rng.random((16, 16, 3)) * 300).astype(np.float32) for m in CANONICAL}
    study = Study("TRAINING/case_x", Path("x"), {}, images, None, (1.0, 1.0, 5.0), nib.Nifti1Header())
    brain = rng.random((16, 16, 3)) > 0.3
    for m, out in normalise(study, brain).items():
        assert np.array_equal(out, _old_normalise(m, images[m], brain)), m


def _one_line_refusal(exc: pytest.ExceptionInfo, name: str, choices: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and f"unknown modality {name}" in message and choices in message


def test_unknown_modality_is_refused_in_one_line():
    with pytest.raises(ValueError) as exc:
        M.canonical_modalities("FOO")
    _one_line_refusal(exc, "FOO", "choose from CT,CBV,CBF,MTT,Tmax")
    with pytest.raises(ValueError) as exc:
        M.modality("FOO")
    _one_line_refusal(exc, "FOO", "CT,CBV,CBF,MTT,Tmax,4DPWI,OT")
    with pytest.raises(ValueError) as exc:
        M.channel_indices(["CT", "FOO"])
    _one_line_refusal(exc, "FOO", "CT,CBV,CBF,MTT,Tmax")
    image = np.ones((8, 8, 2), np.float32)
    study = Study("TRAINING/case_x", Path("x"), {}, {"FOO": image}, None, (1.0, 1.0, 5.0), nib.Nifti1Header())
    with pytest.raises(ValueError) as exc:  # it used to take the seconds branch silently
        normalise(study, image > 0)
    _one_line_refusal(exc, "FOO", "CT,CBV,CBF,MTT,Tmax")
    with pytest.raises(ValueError, match="4DPWI is not a network input"):
        M.TABLE["4DPWI"].normalise(image, image > 0)
    for lookup in (
        figures.cmap_of,
        lambda m: figures.display_window(m, image),
        lambda m: widgets.window_range(m, image),
    ):
        with pytest.raises(ValueError) as exc:
            lookup("FOO")
        _one_line_refusal(exc, "FOO", "CT,CBV,CBF,MTT,Tmax")


def test_cli_refuses_an_unknown_modality_in_one_line(phantom_root, tmp_path, capsys):
    argv = ["train", "--data", str(phantom_root), "--out", str(tmp_path / "run"), "--modalities", "FOO"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown modality FOO"), err
    assert "CT,CBV,CBF,MTT,Tmax" in err[0]
    assert not (tmp_path / "run").exists()


def test_figures_and_widgets_show_maps_in_canonical_order():
    rng = np.random.default_rng(0)
    volumes = {m: rng.random((24, 24, 2)) * 50 for m in ("Tmax", "CBF", "CT", "MTT", "CBV")}
    fig = figures.study_figure(volumes, 0)
    assert [ax.get_title() for ax in fig.axes if ax.images] == list(CANONICAL)
    assert [b.get_ylabel() for b in fig.axes if not b.images] == ["HU", "a.u.", "a.u.", "s", "s"]
    plt.close(fig)
    fig = figures.maps_side_by_side({"true": volumes}, 0)
    assert [ax.get_title() for ax in fig.axes if ax.images] == [f"{m}, true" for m in M.PERFUSION_MAPS]
    plt.close(fig)
    assert widgets.StudyBrowser.__init__.__defaults__[0] == CANONICAL


def test_adding_a_modality_is_one_row(monkeypatch, tmp_path):
    """A CT angiography row (a file, not a network input): the loader finds its files, the
    writer writes them, figures and widgets know its unit, window, colormap and slider."""
    cta = M.Modality(
        "CTA", "CT_CTA", np.int16, "HU", "CT angiography", "image", window=(0, 400), cmap="gray", slider=(-100, 800, 1)
    )
    monkeypatch.setitem(M.TABLE, "CTA", cta)

    assert modality_token("SMIR.Brain.XX.O.CT_CTA.1.nii") == "CTA"
    assert modality_token("SMIR.Brain.XX.O.MR_CTA.1.nii.gz") == "CTA"
    case = make_case(tmp_path / "TRAINING")
    volume = np.full((32, 32, 2), 150.0)
    write_case(tmp_path / "TRAINING", 1, {"CTA": volume}, (1.0, 1.0, 5.0), {"CTA": 1007})
    files = find_case_files(case)
    assert files["CTA"].name == "SMIR.Brain.XX.O.CT_CTA.1007.nii"
    assert nib.load(files["CTA"]).get_data_dtype() == np.int16
    assert list(load_study(case).images) == list(CANONICAL)  # not an input: the network's view is unchanged

    assert figures.display_window("CTA", volume) == (0, 400) and figures.cmap_of("CTA") == "gray"
    assert widgets.window_range("CTA", volume) == (-100, 800, 1)
    fig = figures.draw_maps({"CTA": volume[:, :, 0]}, {"CTA": (0, 400)})
    assert [b.get_ylabel() for b in fig.axes if not b.images] == ["HU"]
    plt.close(fig)
    with pytest.raises(ValueError, match="unknown modality CTA; choose from CT,CBV,CBF,MTT,Tmax"):
        M.canonical_modalities("CTA")  # a file, not an input
