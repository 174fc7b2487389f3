"""The shipped checkpoint: what the repository carries, how it is made, and when chapters use it."""

import hashlib
import json
import shutil

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

from stroke_helpers import answers, chapters, locations, readme, shipped  # noqa: E402
from stroke_helpers.baseline import THRESHOLDS  # noqa: E402
from stroke_helpers.cascade import stage1_maps  # noqa: E402
from stroke_helpers.datasets import build_slices  # noqa: E402
from stroke_helpers.engine import autocast_dtype  # noqa: E402
from stroke_helpers.grid import ALL_RUN, MONAI_RUN, ROWS, TABLE1, TABLE2, run_name  # noqa: E402
from stroke_helpers.inference import Predictor, evaluate  # noqa: E402
from stroke_helpers.locations import NotADatasetError  # noqa: E402
from stroke_helpers.model import count_parameters  # noqa: E402
from stroke_helpers.presets import PRESETS  # noqa: E402
from stroke_helpers.report import comparisons  # noqa: E402
from stroke_helpers.runs import ResultsFolder, RunError, has_weights, load_synthetic_maps, read_split  # noqa: E402
from stroke_helpers.truth import read_config  # noqa: E402

WEIGHT_FILES = (f"{ALL_RUN}/best.pt", "cascade/stage1/best.pt", "cascade/stage2/best.pt")


@pytest.fixture(scope="module")
def bundle(smoke_grid, phantom_root, tmp_path_factory):
    """The smoke grid shipped the way ``python -m stroke_helpers ship`` ships the cpu one."""
    return shipped.ship(smoke_grid, tmp_path_factory.mktemp("ship") / "cpu", progress=False)


@pytest.fixture(scope="module")
def arrays(phantom_root):
    return build_slices(phantom_root, "TRAINING", PRESETS["smoke"].size, progress=False)


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} has no {old!r}: the test would test nothing"
    path.write_text(text.replace(old, new, 1))


def _hashes(folder) -> dict:
    return {p: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_repository_ships_a_trained_cpu_checkpoint():
    described = shipped.manifest()
    assert described["preset"] == "cpu" and described["commands"][0] == shipped.RECIPE
    files = [locations.shipped_checkpoint() / "runs" / f for f in WEIGHT_FILES]
    assert all(f.stat().st_size < 5e6 for f in files)  # a few MB: fp16
    assert files[0].read_bytes() == files[1].read_bytes()  # stage 1 is the All model: one git blob
    weights = sorted(
        p.relative_to(locations.shipped_checkpoint() / "runs").as_posix()
        for p in locations.shipped_checkpoint().rglob("*.pt")
    )
    assert weights == sorted(WEIGHT_FILES)
    state = torch.load(files[2], weights_only=True)
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    for name, channels in ((ALL_RUN, 5), ("cascade", 6)):
        predictor = Predictor(locations.shipped_checkpoint() / "runs" / name, "cpu")
        assert predictor.config.in_channels == channels and predictor.config.settings.widths == PRESETS["cpu"].widths
        assert count_parameters(predictor.model) == count_parameters(predictor.config.build_model()) > 1e6
        size = PRESETS["cpu"].size
        probs = predictor(torch.rand(2, 5, size, size))
        assert probs.shape == (2, size, size) and 0 <= probs.min() <= probs.max() <= 1
        for split in ("val", "test"):  # the shipped scores are the shipped weights' (rescored by ship)
            scores = json.loads(
                (
                    locations.shipped_checkpoint() / "runs" / name / f"metrics{'_test' if split == 'test' else ''}.json"
                ).read_text()
            )
            assert (
                round(scores["summary"]["dice"]["mean"], 4)
                == described["mean_dice"][f"{name} {split}"]["shipped (fp16)"]
            )
            assert described["mean_dice"][f"{name} {split}"]["shipped (fp16)"] > 0.5  # trained, not a stub
    for row in ROWS:  # every table run's scores and learning curve ship, so the tables can be shown
        for mods in TABLE1 + TABLE2:
            run = locations.shipped_checkpoint() / "runs" / run_name(row, mods)
            assert (run / "metrics.json").is_file() and (run / "metrics_test.json").is_file()
            assert (run / "history.csv").is_file() and has_weights(run) == (run.name == ALL_RUN)
    assert set(described["leakage"]) == {"cascade", "cascade_oof"}
    with pytest.raises(RunError, match="never rewritten"):  # nothing writes into it
        evaluate(locations.shipped_checkpoint() / "runs" / ALL_RUN, progress=False)


def test_shipped_scores_hold_on_the_default_dataset():
    """Both shipped models score what the manifest says on the default synthetic dataset as
    generated here (CI generates it before running this test; elsewhere it skips without it)."""
    data = locations.dataset("synthetic")
    described = shipped.manifest()
    if not shipped.fits(data):
        pytest.skip(f"{data}: not the default synthetic dataset (python data_download.py synthetic makes it)")
    same_precision = (autocast_dtype(torch.device("cpu")) is not None) == (described["evaluated_in"] != "fp32")
    for name in shipped.WEIGHTS:
        result = evaluate(
            locations.shipped_checkpoint() / "runs" / name, "val", "cpu", progress=False, data=data, write=False
        )
        expected = described["mean_dice"][f"{name} val"]["shipped (fp16)"]
        assert result["summary"]["dice"]["mean"] == pytest.approx(expected, abs=0.002 if same_precision else 0.02)


def test_ship_halves_the_weights_and_scores_them_again(bundle, smoke_grid, phantom_root, arrays, tmp_path, monkeypatch):
    for f in WEIGHT_FILES:
        full, half = (torch.load(r / "runs" / f, weights_only=True)["model"] for r in (smoke_grid, bundle))
        assert all(half[k].dtype == (torch.float16 if v.is_floating_point() else v.dtype) for k, v in full.items())
    assert not list(bundle.rglob("last.pt")) and not list(bundle.rglob("synthetic_maps*"))
    for name in ("MR_All", "base_All", "cascade_oof", MONAI_RUN):  # scores without weights
        assert (bundle / "runs" / name / "metrics.json").is_file() and not has_weights(bundle / "runs" / name)
    assert (bundle / "runs" / "cascade_oof" / "fold_0" / "history.csv").is_file()
    for method in THRESHOLDS:  # the threshold baselines' per-study scores, as the grid wrote them
        for split in ("val", "test"):
            grid_scores, shipped_scores = (
                ResultsFolder(r).threshold(method).metrics(split) for r in (smoke_grid, bundle)
            )
            assert shipped_scores.read_bytes() == grid_scores.read_bytes()
    claims = [c["claim"] for c in comparisons(bundle, "test")]  # chapter 05's comparisons from the bundle
    assert "MR+ATT vs MONAI AttentionUnet (All)" in claims and any("vs best threshold (" in c for c in claims)
    images = arrays.images[:8]
    for name in shipped.WEIGHTS:
        full, half = Predictor(smoke_grid / "runs" / name, "cpu"), Predictor(bundle / "runs" / name, "cpu")
        assert (full(images) - half(images)).abs().max() < 0.02
    described = shipped.manifest(bundle)
    assert described["preset"] == "smoke" and described["data_fingerprint"] == shipped.data_fingerprint(phantom_root)
    leak = chapters.leakage(smoke_grid, arrays)
    assert described["leakage"]["cascade"]["training"] == round(leak["in-sample"], 4)
    assert described["leakage"]["cascade_oof"]["training"] == round(leak["out-of-fold"], 4)
    for scores in described["mean_dice"].values():
        assert scores["shipped (fp16)"] == pytest.approx(scores["grid (fp32 weights)"], abs=0.02)
        # under autocast, the halved models in fp32 too: what a CPU without bf16 units computes
        assert ("shipped, evaluated in fp32" in scores) == (described["evaluated_in"] != "fp32")
    if described["evaluated_in"] != "fp32":  # README's shipped table gets its last column from it
        assert "The last column is what a CPU without bf16 units computes." in readme.render_shipped(bundle)
    with pytest.raises(FileExistsError, match="--force"):
        shipped.ship(smoke_grid, bundle, progress=False)
    with pytest.raises(RunError, match="no evaluated run"):
        shipped.ship(bundle / "runs" / "MR_All", tmp_path / "other", progress=False)
    with pytest.raises(NotADatasetError, match="pass --data"):
        shipped.ship(smoke_grid, tmp_path / "other", data=tmp_path / "nowhere", progress=False)
    again = shipped.ship(smoke_grid, tmp_path / "again", progress=False)
    (again / "stale").write_text("from an earlier ship")
    shipped.ship(smoke_grid, again, force=True, progress=False)  # replaced whole, nothing left beside it
    assert not (again / "stale").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["again"]
    monkeypatch.setattr(locations, "shipped_checkpoint", lambda: tmp_path / "again")
    with pytest.raises(RunError, match="smoke-preset run"):  # the repository's checkpoint is the cpu preset's
        shipped.ship(smoke_grid, tmp_path / "again", force=True, progress=False)


def test_chapters_fall_back_to_the_shipped_checkpoint(bundle, smoke_grid, phantom_root, tmp_path, monkeypatch):
    monkeypatch.setattr(locations, "shipped_checkpoint", lambda: bundle)
    empty = tmp_path / "results" / "smoke"
    folder, note = shipped.results_for_chapters(empty, phantom_root, "smoke")
    assert folder == bundle and "no grid run yet" in note and "SHIPPED CHECKPOINT" in note
    assert "reproduce --preset smoke" in note
    assert shipped.source_label(folder) == f"shipped checkpoint {bundle.parent.name}/cpu"
    assert shipped.source_label(smoke_grid).startswith("grid run")
    assert shipped.results_for_chapters(smoke_grid, phantom_root, "smoke") == (smoke_grid, "")  # the grid's own first
    partial = tmp_path / "partial"  # an unfinished grid: the table runs, not yet the out-of-fold cascade
    shutil.copytree(smoke_grid, partial, ignore=shutil.ignore_patterns("cascade_oof"))
    folder, note = shipped.results_for_chapters(partial, phantom_root, "smoke")
    done = len(list(partial.glob("runs/*/metrics.json")))
    assert folder == bundle and f"the grid is not finished ({done} runs evaluated)" in note and done >= 4
    folder, note = shipped.results_for_chapters(empty, phantom_root, "cpu")
    assert folder == empty and "for the smoke preset only" in note
    other = tmp_path / "other"
    shutil.copytree(phantom_root / "truth", other / "truth")
    made = read_config(phantom_root)["territories"]  # atlas, or geometric where no atlas copy is beside
    changed = "geometric" if made == "atlas" else "atlas"
    _edit(other / "truth" / "config.csv", f"territories,{made}", f"territories,{changed}")
    folder, note = shipped.results_for_chapters(empty, other, "smoke")
    assert folder == empty and f"territories {changed} (trained: {made})" in note
    assert "not a generated synthetic dataset" in shipped.results_for_chapters(empty, tmp_path, "smoke")[1]
    # notebook_paths: only an empty `results` (and no $STROKE_RESULTS) falls back
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STROKE_RESULTS", raising=False)
    monkeypatch.delenv("STROKE_PRESET", raising=False)
    assert chapters.notebook_paths("smoke", str(phantom_root))[2] == bundle
    assert chapters.notebook_paths("smoke", str(phantom_root), str(empty))[2] == empty
    assert chapters.figures_folder(bundle) == tmp_path / "results" / "shipped" / "figures"  # never into the bundle
    assert chapters.figures_folder(smoke_grid) == smoke_grid / "figures"


def test_chapters_run_on_the_shipped_checkpoint_and_leave_it_untouched(
    bundle, smoke_grid, arrays, phantom_root, capsys
):
    before = _hashes(bundle)
    cascade = bundle / "runs" / "cascade"
    remade = stage1_maps(cascade / "stage1", arrays, torch.arange(len(arrays)).numpy(), torch.device("cpu"))[0]
    grid_maps = load_synthetic_maps(smoke_grid / "runs" / "cascade" / "synthetic_maps.pt", arrays)
    # the in-sample maps, made again from the fp16 stage 1: the same maps up to fp16 rounding, which a
    # few pixels of large similarity amplify (measured without ../shared: mean 0.002, max 0.08 over
    # 139,264 pixels, 78 of them above 0.05); a wrong stage 1 or wrong slices differ everywhere
    diff = (remade - grid_maps).abs()
    assert diff.mean() < 0.01 and (diff > 0.05).float().mean() < 0.002
    leak = chapters.leakage(bundle, arrays)
    assert set(leak) == {"in-sample", "out-of-fold", "validation"}
    assert leak["out-of-fold"] == shipped.manifest(bundle)["leakage"]["cascade_oof"]["training"]
    assert "out-of-fold: recorded from the grid's own maps" in capsys.readouterr().out
    right = max(("in-sample", "out-of-fold"), key=leak.get)
    assert answers.check_leak(leak, right) and not answers.check_leak(
        leak, ({"in-sample", "out-of-fold"} - {right}).pop()
    )
    with pytest.raises(ValueError, match="no out-of-fold figure"):
        answers.check_leak({"in-sample": 0.5, "validation": 0.5}, "in-sample")
    study, z = chapters.largest_lesion(arrays, read_split(bundle / "runs" / ALL_RUN)["val"])
    assert chapters.paper_figure(bundle, arrays, TABLE1, study, z, "Figure 2 (label)") is None
    assert "Figure 2: needs the weights of 15 runs" in capsys.readouterr().out
    assert "not here (the shipped checkpoint leaves" in chapters.synthetic_map_file(
        cascade, phantom_root, arrays.studies[0]
    )
    assert chapters.figure4(bundle, arrays, n=2).axes  # needs only the two shipped models
    assert _hashes(bundle) == before


def test_data_fingerprint(phantom_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(phantom_root / "truth", copy / "truth")
    config = copy / "truth" / "config.csv"
    _edit(config, "\natlas,", "\natlas,/elsewhere")  # the machine's atlas path: ignored
    _edit(config, "write_pwi,True", "write_pwi,False")  # --no-pwi writes the same maps: ignored
    _edit(config, "compress,True", "compress,False")
    assert shipped.data_fingerprint(copy) == shipped.data_fingerprint(phantom_root) is not None
    _edit(config, "phantom_version,", "phantom_version,1")  # another generator: another dataset
    assert shipped.data_fingerprint(copy) != shipped.data_fingerprint(phantom_root)
    shutil.copy(phantom_root / "truth" / "config.csv", config)
    _edit(copy / "truth" / "cases.csv", "right", "left")
    assert shipped.data_fingerprint(copy) != shipped.data_fingerprint(phantom_root)
    assert shipped.data_fingerprint(tmp_path / "isles") is None  # real data has no truth folder


def test_the_explorer_app_defaults_to_the_shipped_cascade(bundle, phantom_root, tmp_path, monkeypatch, capsys):
    from stroke_helpers.explorer import default_run

    monkeypatch.setattr(locations, "shipped_checkpoint", lambda: bundle)
    assert default_run(phantom_root, None) == bundle / "runs" / "cascade"
    assert "shipped checkpoint's cascade" in capsys.readouterr().out
    assert default_run(phantom_root, bundle / "runs" / ALL_RUN) == bundle / "runs" / ALL_RUN  # a given run wins
    assert default_run(tmp_path, None) is None  # other data: no run, the data views only


def test_ship_command(smoke_grid, tmp_path, capsys):
    from stroke_helpers.__main__ import main

    out = tmp_path / "cpu"
    assert main(["ship", "--results", str(smoke_grid), "--out", str(out), "--no-progress"]) == 0
    assert shipped.manifest(out)["commands"][1] == f"python -m stroke_helpers ship --results {smoke_grid} --out {out}"
    assert main(["ship", "--results", str(smoke_grid), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().endswith("already exists; pass --force to replace it")
