"""Nothing lost, nothing half-written, every file read is checked (issue 23, items 1, 3, 4).

- ``--force`` replaces only what the project wrote; a run's files are kept without ``--resume``
  or ``--force``; output files are kept unless ``--force``, and a folder is refused.
- A full disk is one line and leaves no temporary file, and the run resumes afterwards; one
  process writes a folder at a time; a read-only dataset works; interrupted swaps are cleaned up.
- A malformed checkpoint, configuration, cascade description, shipped description, learning
  curve, split or score file is one line naming the file and the field.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import make_case

import data_download
from stroke_helpers import datasets, files, locations, report, shipped
from stroke_helpers.__main__ import main
from stroke_helpers.download import install_archive
from stroke_helpers.phantom import generate_dataset
from stroke_helpers.presets import PRESETS
from stroke_helpers.runs import (
    ResultsFolder,
    RunError,
    RunFolder,
    TrainConfig,
    load_checkpoint,
    load_config,
    read_cascade,
    read_history,
    read_metrics,
    read_split,
)
from stroke_helpers.train import train

ROOT = Path(__file__).resolve().parents[1]


def _one_line(capsys) -> str:
    """The one ``error:`` line, the last thing on stderr (after any progress bar)."""
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in lines) == 1, err
    return lines[-1]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train_argv(data, out, *extra) -> list[str]:
    return ["train", "--data", str(data), "--preset", "smoke", "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def resumable_run(phantom_root, tmp_path_factory) -> Path:
    """One smoke epoch that keeps its ``last.pt`` (model, optimiser, history)."""
    out = tmp_path_factory.mktemp("nothing_lost") / "run"
    train(TrainConfig(data=str(phantom_root), out=str(out), preset="smoke", epochs=1, progress=False, keep_last=True))
    assert RunFolder(out).last.is_file()
    return out


# --- 1. nothing lost ---------------------------------------------------------------------------


def test_synthetic_force_replaces_only_a_dataset_it_wrote(phantom_root, tmp_path, capsys):
    argv = ["synthetic", "--train-cases", "1", "--test-cases", "0", "--no-pwi", "--workers", "1", "--force"]
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("four years of work")
    assert data_download.main([*argv, "--out", str(thesis)]) == 2
    err = _one_line(capsys)
    assert "not a synthetic dataset written by data_download.py" in err and "truth/cases.csv" in err, err
    assert (thesis / "thesis.tex").read_text() == "four years of work"

    isles = tmp_path / "isles"  # a real-layout dataset without the phantom's truth: installed data
    make_case(isles / "TRAINING", 1)
    before = _snapshot(isles)
    assert data_download.main([*argv, "--out", str(isles)]) == 2
    assert "an ISLES dataset without the phantom's truth" in _one_line(capsys)
    assert _snapshot(isles) == before

    mine = tmp_path / "synthetic"  # the phantom's, with a file of someone's put into it
    shutil.copytree(phantom_root, mine, ignore=shutil.ignore_patterns(".cache"))
    (mine / "notes.txt").write_text("mine")
    (mine / "TRAINING" / "draft.docx").write_text("mine too")
    assert data_download.main([*argv, "--out", str(mine)]) == 2
    err = _one_line(capsys)
    assert "notes.txt" in err and "TRAINING/draft.docx" in err, err
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "TRAINING" / "case_6").is_dir()

    (mine / "notes.txt").unlink()
    (mine / "TRAINING" / "draft.docx").unlink()
    (mine / ".cache").mkdir()  # the loader's own cache belongs to the dataset
    assert data_download.main([*argv, "--out", str(mine)]) == 0
    assert sorted(p.name for p in (mine / "TRAINING").iterdir()) == ["case_1"]
    assert not files.partial(mine).exists() and not mine.with_name("synthetic.old").exists()


def test_isles_force_replaces_only_installed_splits(tmp_path, capsys):
    src = tmp_path / "src" / "TRAINING"
    make_case(src, 1)
    archive = tmp_path / "small.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(src.parent).as_posix())
    out = tmp_path / "isles2018"
    (out / "TRAINING" / "case_7").mkdir(parents=True)
    (out / "TRAINING" / "results.xlsx").write_text("a spreadsheet")
    (out / ".extract-left-by-a-killed-install").mkdir()
    argv = ["isles2018", "--archive", str(archive), "--md5", files_md5(archive), "--out", str(out), "--force"]
    assert data_download.main(argv) == 2
    err = _one_line(capsys)
    assert "not an installed split" in err and "results.xlsx" in err, err
    assert (out / "TRAINING" / "results.xlsx").read_text() == "a spreadsheet"
    assert not (out / ".extract-left-by-a-killed-install").exists()  # cleaned up all the same
    (out / "TRAINING" / "results.xlsx").unlink()
    assert install_archive(archive, out, md5=files_md5(archive), force=True) == ["TRAINING"]
    assert sorted(p.name for p in (out / "TRAINING").iterdir()) == ["case_1"]
    assert not (out / "TRAINING.old").exists() and not list(out.glob(".extract-*"))


def files_md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_shared_run_is_never_overwritten_without_force(resumable_run, phantom_root, tmp_path, capsys):
    shared = tmp_path / "shared"  # what SECURITY.md says to share: no last.pt
    shutil.copytree(resumable_run, shared, ignore=shutil.ignore_patterns("last.pt"))
    (shared / "metrics.json").write_text('{"studies": [], "summary": {}}')
    before = _snapshot(shared)
    for extra in ((), ("--resume",)):
        assert main(_train_argv(phantom_root, shared, "--epochs", "1", *extra)) == 2
        err = _one_line(capsys)
        assert "holds a run without last.pt" in err and "--force" in err, err
        assert _snapshot(shared) == before
    (shared / "thesis.tex").write_text("not a run file")
    assert main(_train_argv(phantom_root, shared, "--epochs", "1", "--force")) == 0
    assert not (shared / "metrics.json").exists()  # the old scores went with the old weights
    assert (shared / "thesis.tex").read_text() == "not a run file"  # --force removes run files only
    assert (shared / "best.pt").read_bytes() != before["best.pt"]
    assert not list(shared.glob(".tmp-*")) and not files.lock_path(shared).exists()


def test_a_finished_run_needs_resume_or_force(resumable_run, phantom_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(resumable_run, run)
    before = _snapshot(run)
    assert main(_train_argv(phantom_root, run, "--epochs", "1")) == 2
    assert "already holds a run; pass --resume to continue it, --force to replace it" in _one_line(capsys)
    assert _snapshot(run) == before


def test_the_shipped_checkpoint_is_never_written(phantom_root, tmp_path, capsys):
    bundle = tmp_path / "cpu"
    run = bundle / "runs" / "MR_All"
    run.mkdir(parents=True)
    (bundle / "shipped.json").write_text("{}")
    (run / "history.csv").write_text("epoch,train_loss,val_dice\n1,0.5,0.5\n")
    before = _snapshot(bundle)
    for extra in ((), ("--resume",), ("--force",)):
        assert main(_train_argv(phantom_root, run, "--epochs", "1", *extra)) == 2
        assert "part of the shipped checkpoint, which is never written" in _one_line(capsys)
    argv = ["reproduce", "--preset", "smoke", "--data", str(phantom_root), "--out", str(bundle), "--no-progress"]
    assert main(argv) == 2
    assert "part of the shipped checkpoint" in _one_line(capsys)
    assert _snapshot(bundle) == before and not list(bundle.rglob(".*lock"))


def test_reproduce_refuses_a_folder_that_is_not_a_results_folder(phantom_root, tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "report.md").write_text("my own report")
    argv = ["reproduce", "--preset", "smoke", "--data", str(phantom_root), "--out", str(thesis), "--no-progress"]
    assert main(argv) == 2
    assert "not a results folder" in _one_line(capsys)
    assert (thesis / "report.md").read_text() == "my own report" and sorted(os.listdir(thesis)) == ["report.md"]


def test_output_files_are_kept_unless_force_and_a_folder_is_refused(resumable_run, phantom_root, tmp_path, capsys):
    kept = tmp_path / "baseline.json"
    kept.write_text("keep me")
    assert main(["baseline", str(phantom_root), "--out", str(kept)]) == 2
    assert "baseline.json exists; pass --force to replace it" in _one_line(capsys)
    assert kept.read_text() == "keep me"
    assert main(["baseline", str(phantom_root), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: a folder; --out takes a file name" in _one_line(capsys)
    assert main(["baseline", str(phantom_root), "--out", str(kept), "--force"]) == 0
    assert json.loads(kept.read_text())["studies"] == 6 and not list(tmp_path.glob(".tmp-*"))
    capsys.readouterr()

    study = str(phantom_root / "TESTING" / "case_1")
    argv = ["predict", "--run", str(resumable_run), "--study", study, "--device", "cpu", "--out"]
    assert main([*argv, str(tmp_path)]) == 2
    assert "a folder; --out takes a file name" in _one_line(capsys)
    assert not tmp_path.with_name(tmp_path.name + ".nii.gz").exists()


# --- 2. nothing half-written -------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_the_run_resumes(resumable_run, phantom_root, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(resumable_run, run)
    (run / "last.pt.tmp").write_bytes(b"")  # what the previous version left on a full disk
    (run / ".tmp-0badf00d-config.json").write_bytes(b"")
    (run / "notes.tmp").write_text("someone's, not a temporary file of ours")
    before = _snapshot(run)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # every write of the run fails as a full disk makes it
    assert main(_train_argv(phantom_root, run, "--epochs", "2", "--resume")) == 2
    err = _one_line(capsys)
    assert err == f"error: no space left on {files.mount_point(run)} while writing {run / 'config.json'}", err
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "history.csv", "last.pt"] + [
        "notes.tmp",
        "split.json",
    ]  # the leftovers of a killed run removed, nothing else
    leftovers = (".tmp-0badf00d-config.json", "last.pt.tmp")
    assert _snapshot(run) == {k: v for k, v in before.items() if k not in leftovers}  # the run, intact

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(_train_argv(phantom_root, run, "--epochs", "2", "--resume")) == 0
    assert [r["epoch"] for r in read_history(run)] == [1, 2]


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode == 0


def _fill(disk: Path, leave: int = 0) -> Path:
    """A file taking all the free space of ``disk`` but about ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
            f.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("needs root and mount to make a small tmpfs (the monkeypatched tests cover the rest)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)])


def test_a_really_full_disk(resumable_run, phantom_root, small_disk, capsys):
    run = small_disk / "run"
    shutil.copytree(resumable_run, run)
    filler = _fill(small_disk)
    assert main(_train_argv(phantom_root, run, "--epochs", "2", "--resume")) == 2
    err = _one_line(capsys)
    assert err == f"error: no space left on {small_disk} while writing {run / 'config.json'}", err
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp-")]
    assert load_checkpoint(run / "last.pt", resume=True)["epoch"] == 1
    filler.unlink()
    assert main(_train_argv(phantom_root, run, "--epochs", "2", "--resume")) == 0
    assert [r["epoch"] for r in read_history(run)] == [1, 2]

    state = load_checkpoint(run / "best.pt")  # torch.save's own error for it: "unexpected pos"
    filler = _fill(small_disk, leave=len((run / "best.pt").read_bytes()) // 2)
    with pytest.raises(files.NoSpaceError, match=f"no space left on {small_disk} while writing .*other.pt"):
        files.save_torch(state, small_disk / "other.pt")
    assert sorted(os.listdir(small_disk)) == ["filler", "run"]

    syn = small_disk / "synthetic"
    filler.unlink()
    _fill(small_disk, leave=4096)
    argv = ["synthetic", "--out", str(syn), "--train-cases", "1", "--test-cases", "0", "--no-pwi", "--workers", "1"]
    assert data_download.main(argv) == 2
    err = _one_line(capsys)
    assert f"no space left on {small_disk}" in err and "partial dataset" in err and "was removed" in err, err
    assert not syn.exists() and not files.partial(syn).exists()


def test_files_helpers_leave_nothing_on_error(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    files.write_json({"v": 1}, target)
    with pytest.raises(TypeError):
        files.write_json({"v": object()}, target)  # cannot be encoded: nothing replaced
    assert json.loads(target.read_text()) == {"v": 1} and os.listdir(tmp_path) == ["a.json"]

    def no_room(fd):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "fsync", no_room)  # where NFS and ext4 report it: at the flush
    with pytest.raises(files.NoSpaceError, match=f"disk quota exceeded on .* while writing {target}"):
        files.write_json({"v": 2}, target)
    assert json.loads(target.read_text()) == {"v": 1} and os.listdir(tmp_path) == ["a.json"]
    monkeypatch.undo()

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files._Recording, "write", full)  # torch.save says "unexpected pos"
    with pytest.raises(files.NoSpaceError, match=f"no space left on .* while writing {tmp_path / 'last.pt'}"):
        files.save_torch({"model": {"w": torch.zeros(1000)}}, tmp_path / "last.pt")
    assert os.listdir(tmp_path) == ["a.json"]
    with pytest.raises(files.WriteError, match="a folder, not a file"):
        files.write_text(tmp_path, "x")


def test_one_writer_per_run_folder(phantom_root, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom stroke_helpers import files\n"
            f"with files.lock({str(run)!r}, 'train --out run (seed 0)'):\n    print('held', flush=True)\n    time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_train_argv(phantom_root, run, "--epochs", "1", "--seed", "1")) == 2
        err = _one_line(capsys)
        assert f"{run} is being written by pid {holder.pid} on " in err and "train --out run (seed 0)" in err, err
        assert not run.exists()  # the second writer wrote nothing
        syn = ["synthetic", "--out", str(run), "--train-cases", "1", "--test-cases", "0", "--no-pwi"]
        assert data_download.main(syn) == 2
        assert f"is being written by pid {holder.pid}" in _one_line(capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert files.lock_path(run).exists()  # a killed holder leaves its lock file: stale, taken over
    with files.lock(run, "the next writer"):
        assert f"pid {holder.pid}" in capsys.readouterr().out  # said whose lock it took over
    assert not files.lock_path(run).exists()


def _read_only(folder: Path, monkeypatch) -> None:
    """``folder`` made read-only; as root (where permissions do not stop a write) the
    project's writability check is told so too."""
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    if os.access(folder, os.W_OK):
        real = locations.writable
        monkeypatch.setattr(locations, "writable", lambda p: not Path(p).is_relative_to(folder) and real(p))


def test_a_read_only_dataset_caches_elsewhere(phantom_root, tmp_path, monkeypatch):
    data = tmp_path / "class_share" / "synthetic"
    shutil.copytree(phantom_root, data, ignore=shutil.ignore_patterns(".cache"))
    _read_only(data, monkeypatch)
    monkeypatch.setenv("STROKE_CACHE_DIR", str(tmp_path / "my_cache"))
    size = PRESETS["smoke"].size
    try:
        first = datasets.build_slices(data, "TRAINING", size, progress=False)
        assert not (data / ".cache").exists()
        cached = list((tmp_path / "my_cache").glob("synthetic-*/slices_TRAINING_*.npz"))
        assert len(cached) == 1 and locations.cache(data) == cached[0].parent

        def no_preprocessing(*args, **kwargs):
            raise AssertionError("the cache was not used")

        monkeypatch.setattr(datasets, "load_study", no_preprocessing)
        again = datasets.build_slices(data, "TRAINING", size, progress=False)
        assert torch.equal(first.images, again.images) and first.studies == again.studies
        monkeypatch.delenv("STROKE_CACHE_DIR")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert locations.cache(data).parent == tmp_path / "xdg" / "stroke_helpers"
    finally:
        for p in [data, *data.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


def test_a_read_only_dataset_with_its_own_cache_is_read_as_it_is(phantom_root, tmp_path, monkeypatch):
    data = tmp_path / "synthetic"
    shutil.copytree(phantom_root, data, ignore=shutil.ignore_patterns(".cache"))
    size = PRESETS["smoke"].size
    built = datasets.build_slices(data, "TRAINING", size, progress=False)  # the teacher's, while writable
    _read_only(data, monkeypatch)
    monkeypatch.setenv("STROKE_CACHE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(datasets, "load_study", lambda *a, **k: pytest.fail("preprocessed again"))
    try:
        assert datasets.build_slices(data, "TRAINING", size, progress=False).studies == built.studies
        assert not (tmp_path / "elsewhere").exists()
    finally:
        for p in [data, *data.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


def test_interrupted_swaps_are_recovered(phantom_root, tmp_path, capsys):
    out = tmp_path / "synthetic"  # killed between its two renames: only OUT.old and OUT.partial
    shutil.copytree(phantom_root, out.with_name("synthetic.old"), ignore=shutil.ignore_patterns(".cache"))
    files.partial(out).mkdir()
    (files.partial(out) / "half").write_text("half a dataset")
    with pytest.raises(FileExistsError, match="force=True"):
        generate_dataset(out, 1, 0, config=None, workers=1, progress=False)
    said = capsys.readouterr().out
    assert "synthetic.partial: left by an interrupted run; removed" in said
    assert f"put back as {out}" in said
    assert (out / "TRAINING" / "case_6").is_dir() and not out.with_name("synthetic.old").exists()
    assert not files.partial(out).exists()

    results = tmp_path / "results"  # a killed ship: its partial bundle, and the previous one set aside
    for name in shipped.CHAPTER_RUNS:
        metrics = ResultsFolder(results).run(name).metrics()
        metrics.parent.mkdir(parents=True)
        metrics.write_text("{}")
    bundle = tmp_path / "cpu"
    bundle.mkdir()
    (bundle / "shipped.json").write_text("{}")
    (tmp_path / "cpu.partial").mkdir()
    (tmp_path / "cpu.old").mkdir()
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        shipped.ship(results, bundle, progress=False)
    assert not (tmp_path / "cpu.partial").exists() and not (tmp_path / "cpu.old").exists()
    assert (bundle / "shipped.json").is_file()
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("x")
    with pytest.raises(FileExistsError, match="not a shipped checkpoint"):
        shipped.ship(results, thesis, force=True, progress=False)
    assert (thesis / "chapter1.tex").read_text() == "x"


# --- 3. every file read is checked -------------------------------------------------------------


def test_a_last_pt_without_its_optimizer_cannot_resume(resumable_run, phantom_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(resumable_run, run)
    state = torch.load(run / "last.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, run / "last.pt")
    before = _snapshot(run)
    assert main(_train_argv(phantom_root, run, "--epochs", "2", "--resume")) == 2
    assert (
        _one_line(capsys)
        == f"error: {run / 'last.pt'}: cannot resume: it has no optimizer state (a shared or shipped checkpoint?)"
    )
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda s: s.update(model=[1, 2]), "'model' is a list, not a dict of tensors"),
        (lambda s: s["model"].update(extra="text"), "'model['extra']' is 'text' (a str), not a tensor"),
        (lambda s: s.update(epoch="1"), "'epoch' is '1' (a str), not a whole number"),
        (lambda s: s.pop("config"), "'config' is missing, not a dict"),
    ],
)
def test_a_malformed_best_pt_is_one_line(resumable_run, phantom_root, tmp_path, capsys, change, field):
    run = tmp_path / "run"
    shutil.copytree(resumable_run, run)
    state = torch.load(run / "best.pt", weights_only=True)
    change(state)
    torch.save(state, run / "best.pt")
    out = tmp_path / "mask.nii.gz"
    argv = ["predict", "--run", str(run), "--study", str(phantom_root / "TESTING" / "case_1"), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 2
    assert _one_line(capsys) == f"error: {run / 'best.pt'}: not a usable checkpoint: {field}"
    assert not out.exists()


def test_a_malformed_cascade_json_is_one_line(tmp_path, capsys):
    run = tmp_path / "cascade"
    run.mkdir()
    info = {"mode": "in-sample", "folds": 0, "scale": "1.2", "modalities": ["CT"], "preset": "smoke"}
    (run / "cascade.json").write_text(json.dumps(info))
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 2
    assert _one_line(capsys) == (
        f"error: {run / 'cascade.json'}: not a cascade description: 'scale' is '1.2' (a str), not a positive number"
    )
    for bad, field in (({"folds": -1}, "'folds'"), ({"mode": "sideways"}, "'mode'"), ({"scale": 0}, "'scale'")):
        (run / "cascade.json").write_text(json.dumps(info | {"scale": 1.2} | bad))
        with pytest.raises(RunError, match=f"cascade.json: not a cascade description: {field}"):
            read_cascade(run)


@pytest.mark.parametrize(
    "described, field",
    [
        ({}, "'preset' is missing"),
        ({"preset": ["cpu"]}, "'preset' is a list"),
        ([], None),
    ],
)
def test_a_malformed_shipped_json_is_one_line(tmp_path, described, field):
    (tmp_path / "shipped.json").write_text(json.dumps(described))
    expected = field or "not a shipped checkpoint description .a JSON list, not an object."
    with pytest.raises(RunError, match=f"shipped.json: (not a shipped checkpoint description: )?{expected}"):
        shipped.manifest(tmp_path)
    good = json.loads((ROOT / "checkpoints" / "cpu" / "shipped.json").read_text())
    (tmp_path / "shipped.json").write_text(json.dumps(good | {"leakage": {"cascade": {"training": "high"}}}))
    with pytest.raises(RunError, match="'leakage' is a dict, not a dict of Dice values per cascade"):
        shipped.manifest(tmp_path)


def test_malformed_run_records_name_the_file_and_the_field(resumable_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(resumable_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"seed": "0"}))
    with pytest.raises(RunError, match=r"config.json: bad run configuration \(field seed is '0', not int\)"):
        load_config(run)
    (run / "config.json").write_text(json.dumps(config | {"train_studies": "TRAINING/case_1"}))
    with pytest.raises(RunError, match="field train_studies is 'TRAINING/case_1', not a list of strings or null"):
        load_config(run)

    (run / "split.json").write_text(json.dumps({"train": "TRAINING/case_1", "val": []}))
    with pytest.raises(RunError, match="split.json: not a run's split: 'train' is 'TRAINING/case_1'"):
        read_split(run)

    (run / "history.csv").write_text("epoch,train_loss,val_dice\n1,0.5,0.4\n2,0.4,oops\n")
    with pytest.raises(RunError, match=r"history.csv: line 3, column val_dice: 'oops' is not a number"):
        read_history(run)
    (run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(RunError, match="history.csv: not a learning curve .no column train_loss, val_dice."):
        read_history(run)

    (run / "metrics.json").write_text('{"studies": [],\n')
    with pytest.raises(RunError, match=f"{run / 'metrics.json'}: not valid JSON"):
        read_metrics(run / "metrics.json")
    (run / "metrics.json").write_text(json.dumps({"studies": [{"study": "a", "dice": "0.5"}], "summary": {}}))
    with pytest.raises(RunError, match=r"studies\[0\].dice is '0.5' \(a str\), not a number"):
        read_metrics(run / "metrics.json")


def test_reproduce_s_report_names_a_corrupt_file(tmp_path):
    results = ResultsFolder(tmp_path)
    metrics = results.run("MR+ATT_All").metrics()
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"studies":\n')
    with pytest.raises(RunError, match=re.escape(f"{metrics}: not valid JSON (Expecting value: line 2")):
        report.per_study(tmp_path, "MR+ATT_All")
    metrics.write_text(json.dumps({"studies": {}, "summary": {}}))
    with pytest.raises(RunError, match=re.escape(f"{metrics}: not a run's scores: 'studies' is a dict, not a list")):
        report.per_study(tmp_path, "MR+ATT_All")
