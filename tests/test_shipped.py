"""The shipped checkpoint: what the repository carries, how it is made, and when chapters use it."""

import json
import shutil

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

from stroke_helpers import chapters, shipped  # noqa: E402
from stroke_helpers.datasets import build_slices  # noqa: E402
from stroke_helpers.download import data_dir  # noqa: E402
from stroke_helpers.figures import save  # noqa: E402
from stroke_helpers.grid import ALL_RUN, ROWS, TABLE1, TABLE2, run_name  # noqa: E402
from stroke_helpers.inference import Predictor, evaluate  # noqa: E402
from stroke_helpers.model import count_parameters  # noqa: E402
from stroke_helpers.presets import PRESETS  # noqa: E402
from stroke_helpers.runs import load_config, read_split  # noqa: E402

WEIGHT_FILES = (f"{ALL_RUN}/best.pt", "cascade/stage1/best.pt", "cascade/stage2/best.pt")


@pytest.fixture(scope="module")
def bundle(smoke_grid, phantom_root, tmp_path_factory):
    """The smoke grid shipped the way ``python -m stroke_helpers ship`` ships the cpu one."""
    return shipped.ship(smoke_grid, tmp_path_factory.mktemp("ship") / "cpu", progress=False)


def test_the_repository_ships_a_trained_cpu_checkpoint():
    manifest = json.loads((shipped.SHIPPED / shipped.MANIFEST).read_text())
    assert manifest["preset"] == "cpu" and manifest["commands"] == list(shipped.COMMANDS)
    files = [shipped.SHIPPED / "runs" / f for f in WEIGHT_FILES]
    assert all(f.stat().st_size < 5e6 for f in files)  # a few MB: fp16
    assert files[0].read_bytes() == files[1].read_bytes()  # stage 1 is the All model: one git blob
    assert sorted(p.relative_to(shipped.SHIPPED / "runs").as_posix() for p in shipped.SHIPPED.rglob("*.pt")) == sorted(
        WEIGHT_FILES
    )
    state = torch.load(files[2], weights_only=True)
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    for name, channels in ((ALL_RUN, 5), ("cascade", 6)):
        predictor = Predictor(shipped.SHIPPED / "runs" / name, "cpu")
        assert predictor.config.in_channels == channels and predictor.config.settings.widths == PRESETS["cpu"].widths
        assert count_parameters(predictor.model) == count_parameters(predictor.config.build_model()) > 1e6
        probs = predictor(torch.rand(2, 5, PRESETS["cpu"].size, PRESETS["cpu"].size))
        assert probs.shape == (2, PRESETS["cpu"].size, PRESETS["cpu"].size) and 0 <= probs.min() <= probs.max() <= 1
    for row in ROWS:  # every table run's scores and learning curve ship, so the tables can be shown
        for mods in TABLE1 + TABLE2:
            run = shipped.SHIPPED / "runs" / run_name(row, mods)
            assert (run / "metrics.json").is_file() and (run / "metrics_test.json").is_file()
            assert (run / "history.csv").is_file()
    for key in ("MR+ATT_All val", "cascade test"):  # trained, not a stub
        assert manifest["mean_dice"][key]["shipped (fp16)"] > 0.5


def test_shipped_scores_hold_on_the_default_dataset():
    """The shipped model scores what its manifest says on the default synthetic dataset as
    generated here (CI generates it before running this test; elsewhere it skips without it)."""
    data = data_dir(None) / "synthetic"
    manifest = json.loads((shipped.SHIPPED / shipped.MANIFEST).read_text())
    if shipped.data_fingerprint(data) != manifest["data_fingerprint"]:
        pytest.skip(f"{data}: not the default synthetic dataset (python data_download.py synthetic makes it)")
    result = evaluate(shipped.SHIPPED / "runs" / ALL_RUN, "val", "cpu", progress=False, data=data, write=False)
    assert result["summary"]["dice"]["mean"] == pytest.approx(
        manifest["mean_dice"]["MR+ATT_All val"]["shipped (fp16)"], abs=0.01
    )


def test_ship_halves_the_weights_and_scores_them_again(bundle, smoke_grid, phantom_root):
    assert not bundle.with_name("cpu.partial").exists()
    for f in WEIGHT_FILES:
        full, half = (torch.load(r / "runs" / f, weights_only=True)["model"] for r in (smoke_grid, bundle))
        assert all(half[k].dtype == (torch.float16 if v.is_floating_point() else v.dtype) for k, v in full.items())
    assert not list(bundle.rglob("last.pt")) and not list(bundle.rglob("synthetic_maps*"))
    for name in ("MR_All", "base_All", "cascade_oof"):  # scores without weights
        assert (bundle / "runs" / name / "metrics.json").is_file() and not shipped.has_weights(bundle / "runs" / name)
    assert (bundle / "runs" / "cascade_oof" / "fold_0" / "history.csv").is_file()
    arrays = build_slices(phantom_root, "TRAINING", PRESETS["smoke"].size, progress=False)
    images = arrays.images[:8]
    for name in shipped.WEIGHTS:
        full, half = Predictor(smoke_grid / "runs" / name, "cpu"), Predictor(bundle / "runs" / name, "cpu")
        assert (full(images) - half(images)).abs().max() < 0.02
    manifest = json.loads((bundle / shipped.MANIFEST).read_text())
    assert manifest["preset"] == "smoke" and manifest["data_fingerprint"] == shipped.data_fingerprint(phantom_root)
    for scores in manifest["mean_dice"].values():
        assert scores["shipped (fp16)"] == pytest.approx(scores["grid (fp32 weights)"], abs=0.02)
    shipped_val = json.loads((bundle / "runs" / ALL_RUN / "metrics.json").read_text())
    assert round(shipped_val["summary"]["dice"]["mean"], 4) == manifest["mean_dice"][f"{ALL_RUN} val"]["shipped (fp16)"]
    with pytest.raises(FileExistsError, match="--force"):
        shipped.ship(smoke_grid, bundle, progress=False)
    with pytest.raises(shipped.RunError, match="no evaluated run"):
        shipped.ship(bundle / "runs" / "MR_All", bundle.with_name("other"), progress=False)


def test_chapters_fall_back_to_the_shipped_checkpoint(bundle, smoke_grid, phantom_root, tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED", bundle)
    empty = tmp_path / "results" / "smoke"
    folder, note = shipped.results_for_chapters(empty, phantom_root, "smoke")
    assert folder == bundle and "SHIPPED CHECKPOINT" in note and "reproduce --preset smoke" in note
    assert shipped.describe(folder).startswith("shipped checkpoint") and shipped.describe(smoke_grid).startswith(
        "grid run"
    )
    assert shipped.results_for_chapters(smoke_grid, phantom_root, "smoke") == (smoke_grid, "")  # the grid's own first
    folder, note = shipped.results_for_chapters(empty, phantom_root, "cpu")
    assert folder == empty and "for the smoke preset only" in note
    other = tmp_path / "other"
    shutil.copytree(phantom_root / "truth", other / "truth")
    cases = other / "truth" / "cases.csv"
    cases.write_text(cases.read_text().replace("right", "left", 1))
    folder, note = shipped.results_for_chapters(empty, other, "smoke")
    assert folder == empty and f"which {other} is not" in note
    # notebook_paths: only an empty `results` (and no $STROKE_RESULTS) falls back
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STROKE_RESULTS", raising=False)
    monkeypatch.delenv("STROKE_PRESET", raising=False)
    assert chapters.notebook_paths("smoke", str(phantom_root))[2] == bundle
    assert chapters.notebook_paths("smoke", str(phantom_root), str(empty))[2] == empty
    monkeypatch.setattr(chapters, "REPOSITORY", tmp_path)  # never into the bundle, nor into this checkout here
    assert chapters.figures_folder(bundle) == tmp_path / "results" / "cpu" / "figures"
    assert chapters.figures_folder(smoke_grid) == smoke_grid / "figures"


def test_chapters_run_on_the_shipped_checkpoint(bundle, smoke_grid, phantom_root, capsys):
    arrays = build_slices(phantom_root, "TRAINING", PRESETS["smoke"].size, progress=False)
    leak, grid_leak = chapters.leakage(bundle, arrays), chapters.leakage(smoke_grid, arrays)
    assert set(leak) == {"in-sample", "validation"} and "cascade_oof has no synthetic maps" in capsys.readouterr().out
    for key in leak:  # the in-sample maps, made again from the shipped stage 1, are the cascade's own
        assert leak[key] == pytest.approx(grid_leak[key], abs=0.02)
    study, z = chapters.largest_lesion_slice(arrays, read_split(bundle / "runs" / ALL_RUN)["val"])
    assert chapters.paper_figure(bundle, arrays, TABLE1, study, z, "Figure 2 (label)") is None
    assert "Figure 2: needs the weights of 15 runs" in capsys.readouterr().out
    assert save(None, bundle / "figure2.png") is None and not (bundle / "figure2.png").exists()
    assert "not here" in chapters.synthetic_map_file(bundle / "runs" / "cascade", phantom_root, arrays.studies[0])
    assert chapters.figure4(bundle, arrays, n=2).axes  # needs only the two shipped models
    assert load_config(bundle / "runs" / "cascade" / "stage2").in_channels == 6


def test_data_fingerprint(phantom_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(phantom_root / "truth", copy / "truth")
    config = copy / "truth" / "config.csv"
    config.write_text(config.read_text().replace("\natlas,", "\natlas,/elsewhere"))  # machine path: ignored
    assert shipped.data_fingerprint(copy) == shipped.data_fingerprint(phantom_root) is not None
    config.write_text(config.read_text().replace("\nseed,7", "\nseed,8"))
    assert shipped.data_fingerprint(copy) != shipped.data_fingerprint(phantom_root)
    assert shipped.data_fingerprint(tmp_path / "isles") is None  # real data has no truth folder


def test_the_explorer_app_defaults_to_the_shipped_cascade(bundle, phantom_root, tmp_path, monkeypatch, capsys):
    from stroke_helpers.explorer import default_run

    monkeypatch.setattr(shipped, "SHIPPED", bundle)
    assert default_run(phantom_root, None) == bundle / "runs" / "cascade"
    assert "shipped checkpoint's cascade" in capsys.readouterr().out
    assert default_run(phantom_root, bundle / "runs" / ALL_RUN) == bundle / "runs" / ALL_RUN  # a given run wins
    assert default_run(tmp_path, None) is None  # other data: no run, the data views only
