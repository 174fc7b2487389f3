"""Hostile and clumsy data input: each bad input gets one line naming the file and the problem
(through the CLI: exit 2, no traceback), and nothing is written, executed or left behind."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_case

import data_download
from stroke_helpers import download as dl
from stroke_helpers.__main__ import main as cli
from stroke_helpers.isles import IslesError, load_study, verify_dataset


def one_line_error(capsys, code, expected_code=2) -> str:
    assert code == expected_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def install_refused(capsys, archive: Path, out: Path) -> str:
    """``data_download.py isles2018 --archive`` on a bad archive: its one error line; nothing installed."""
    argv = ["isles2018", "--archive", str(archive), "--md5", dl.md5sum(archive), "--out", str(out)]
    err = one_line_error(capsys, data_download.main(argv))
    assert files_under(out) == []
    return err


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- downloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/ISLES2018_Training.zip", "example.org/a.zip"])
def test_only_http_urls(tmp_path, capsys, url):
    out = tmp_path / "isles"
    err = one_line_error(capsys, data_download.main(["isles2018", "--url", url, "--md5", "0" * 32, "--out", str(out)]))
    assert "only http:// and https:// URLs" in err and "checksum" not in err
    assert files_under(out) == []


class StatusServer:
    """127.0.0.1 server answering every request with one HTTP status."""

    def __init__(self, status: int):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_error(status)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ISLES2018_Training.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_status_is_one_line(tmp_path, capsys, status):
    server = StatusServer(status)
    out = tmp_path / "isles"
    try:
        argv = ["isles2018", "--url", server.url, "--md5", "0" * 32, "--out", str(out)]
        err = one_line_error(capsys, data_download.main(argv))
    finally:
        server.close()
    assert f"HTTP {status}" in err and server.url in err
    assert files_under(out) == []  # no empty temporary or .part file


def test_empty_temporaries_of_a_killed_download_are_removed(tmp_path, capsys):
    downloads = tmp_path / "downloads"
    (downloads / ".partial").mkdir(parents=True)
    (downloads / "tmpk3j2h1g0").touch()  # pooch's temporary, left by a SIGKILL
    (downloads / ".partial" / "abc-ISLES2018_Training.zip.part").touch()
    kept = downloads / ".partial" / "def-other.zip.part"
    kept.write_bytes(b"half a download")  # resumable: kept
    server = StatusServer(404)
    try:
        with pytest.raises(dl.DownloadError, match="HTTP 404"):
            dl.download(server.url, "0" * 32, downloads, progressbar=False)
    finally:
        server.close()
    assert files_under(downloads) == [kept]
    assert "removed 2 empty temporary file(s)" in capsys.readouterr().out


# --- archives ----------------------------------------------------------------------------------


def tar_with(tmp_path, member: tarfile.TarInfo) -> Path:
    archive = tmp_path / "special.tar"
    with tarfile.open(archive, "w") as tf:
        ok = tarfile.TarInfo("TRAINING/case_1/ok.txt")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"fine"))
        tf.addfile(member)
    return archive


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_special_members_refused(tmp_path, capsys, kind):
    member = tarfile.TarInfo("TRAINING/case_1/dev")
    member.type = kind
    archive = tar_with(tmp_path, member)
    err = install_refused(capsys, archive, tmp_path / "isles")
    assert "'TRAINING/case_1/dev'" in err and "special file" in err


def test_decompression_bomb_refused(tmp_path, capsys):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("TRAINING/case_1/SMIR.Brain.XX.O.CT.1/SMIR.Brain.XX.O.CT.1.nii", "w") as f:
            block = bytes(1 << 20)
            for _ in range(300):  # 300 MB of zeros, ~0.3 MB packed
                f.write(block)
    err = install_refused(capsys, archive, tmp_path / "isles")
    assert "declares 315 MB" in err and "compression ratio" in err


def test_oversized_member_and_full_disk_refused(tmp_path, monkeypatch):
    src = tmp_path / "src" / "TRAINING"
    make_case(src, 1)
    archive = shutil.make_archive(str(tmp_path / "small"), "zip", src.parent)
    monkeypatch.setattr(dl, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(dl.DownloadError, match=r"refusing archive member 'TRAINING/case_1/.*': it declares"):
        dl.safe_extract(archive, tmp_path / "a")
    monkeypatch.setattr(dl, "MAX_MEMBER_BYTES", 1 << 30)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(dl.DownloadError, match="needs 0.0 GB to extract but .* has 0.0 GB free"):
        dl.safe_extract(archive, tmp_path / "b")
    assert files_under(tmp_path / "a") == [] and files_under(tmp_path / "b") == []


# --- the loader and verify ---------------------------------------------------------------------


def test_verify_lists_folders_that_are_not_cases(tmp_path, capsys):
    make_case(tmp_path / "TRAINING", 1)
    (tmp_path / "TRAINING" / "case_2 (copy)").mkdir()
    (tmp_path / "TESTING" / "notes").mkdir(parents=True)
    _, problems = verify_dataset(tmp_path)
    assert any("TRAINING/case_2 (copy): not a case_N folder" in p for p in problems)
    assert any("TESTING/notes: not a case_N folder" in p for p in problems)
    assert data_download.main(["verify", str(tmp_path)]) == 1


def test_too_few_frames_refused(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1, frames=6)
    study = load_study(case)
    with pytest.raises(IslesError, match=r"TRAINING/case_1: SMIR.Brain.XX.O.CT_4DPWI.1000.nii has 6 frames"):
        _ = study.pwi
    _, problems = verify_dataset(tmp_path)
    assert any("has 6 frames; at least 10" in p for p in problems)


def test_modality_that_is_not_nifti_is_named(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1)
    ct = next(case.glob("*CT.*/*.nii"))
    os.replace(ct, ct.with_suffix(".txt"))
    with pytest.raises(IslesError, match=r"case_1: SMIR.Brain.XX.O.CT.1001.txt is not a NIfTI file"):
        load_study(case)
    garbage = next(case.glob("*CT_CBF.*/*.nii"))
    garbage.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(IslesError, match=r"cannot read SMIR.Brain.XX.O.CT_CBF.1002.nii"):
        load_study(case, modalities=("CBF",))


# --- impossible numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs: must be at least 1"),
        (["train", "--data", "d", "--out", "o", "--seed", "-1"], "--seed: must be at least 0"),
        (["cascade", "--data", "d", "--out", "o", "--folds", "1"], "--folds: 0 (in-sample) or at least 2"),
        (["cascade", "--data", "d", "--out", "o", "--folds", "-3"], "--folds: 0 (in-sample) or at least 2"),
        (["reproduce", "--seeds", "0"], "--seeds: must be at least 1"),
    ],
)
def test_impossible_numbers_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--train-cases", "-1", "must be at least 0"),
        ("--workers", "0", "must be at least 1"),
        ("--seed", "x", "not a whole number"),
    ],
)
def test_impossible_numbers_refused_by_data_download(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        data_download.main(["synthetic", "--out", str(tmp_path / "s"), flag, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# --- killing the synthetic generator -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie awaiting its (dead) parent's reaping counts as gone
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir() or shutil.which("pgrep") is None, reason="needs Linux /proc and pgrep")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
def test_killed_generation_leaves_no_worker_and_restarts_clean(tmp_path, signal_name):
    out = tmp_path / "synthetic"
    argv = [sys.executable, "data_download.py", "synthetic", "--out", str(out), "--train-cases", "80"]
    argv += ["--test-cases", "0", "--workers", "2", "--no-pwi"]
    proc = subprocess.Popen(  # Ctrl-C as a terminal delivers it (a background CI job starts with SIGINT ignored)
        argv,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = tmp_path / "synthetic.partial"
    deadline = time.time() + 120
    while not list(partial.glob("TRAINING/case_*")) and time.time() < deadline:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "the generator started no worker"
    assert proc.poll() is None, "the generator finished before it could be interrupted"
    proc.send_signal(getattr(signal, signal_name))
    _, err = proc.communicate(timeout=60)
    time.sleep(1.0)
    assert not [w for w in workers if _alive(w)]  # no worker survives its parent
    before = sorted((p, p.stat().st_size) for p in partial.rglob("*") if p.is_file())
    time.sleep(1.0)
    assert sorted((p, p.stat().st_size) for p in partial.rglob("*") if p.is_file()) == before  # nothing writing
    assert not out.exists()  # nothing installed
    if signal_name == "SIGINT":
        assert proc.returncode == 130 and b"interrupted: nothing was installed" in err and b"Traceback" not in err
    argv[argv.index("--train-cases") + 1] = "2"
    rerun = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an interrupted run; removed, starting again from scratch" in rerun.stdout
    assert (out / "TRAINING" / "case_1").is_dir() and not partial.exists()


def test_verify_names_an_unreadable_4d_series(tmp_path):
    case = make_case(tmp_path / "TRAINING", 1)
    pwi = next(case.glob("*4DPWI*/*.nii"))
    pwi.write_bytes(b"not a nifti at all")
    _, problems = verify_dataset(tmp_path)
    assert any(p.startswith(f"TRAINING/case_1: cannot read {pwi.name}") for p in problems), problems
