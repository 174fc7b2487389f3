"""Archives and downloads: checksums, safe extraction, resume after a cut connection, the CLI."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import make_case

import data_download
from stroke_helpers.download import DownloadError, download, install_archive, safe_extract


def _zip_tree(src: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(src.parent).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


@pytest.fixture
def training_zip(tmp_path) -> Path:
    """A small ISLES-layout archive with the junk the real one carries."""
    src = tmp_path / "src" / "TRAINING"
    make_case(src, 1)
    make_case(src, 2, seed=1)
    return _zip_tree(src, tmp_path / "ISLES_small.zip", {"__MACOSX/TRAINING/._case_1": b"junk"})


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_install_archive(training_zip, tmp_path):
    out = tmp_path / "isles"
    assert install_archive(training_zip, out, md5=md5(training_zip)) == ["TRAINING"]
    assert sorted(p.name for p in (out / "TRAINING").iterdir()) == ["case_1", "case_2"]
    assert not (out / "__MACOSX").exists() and not list(out.glob(".extract-*"))


def test_wrong_checksum_writes_nothing(training_zip, tmp_path):
    out = tmp_path / "isles"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        install_archive(training_zip, out, md5="0" * 32)
    assert not out.exists() or not any(out.iterdir())


def test_known_checksum_of_official_name(training_zip, tmp_path):
    official = training_zip.with_name("ISLES2018_Training.zip")
    shutil.copy(training_zip, official)
    with pytest.raises(DownloadError, match="expected b6d16c456e173743e30a3fbdb3bd29a5"):
        install_archive(official, tmp_path / "isles")


def test_existing_dataset_needs_force(training_zip, tmp_path):
    out = tmp_path / "isles"
    install_archive(training_zip, out)
    marker = out / "TRAINING" / "case_1" / "keep.txt"
    marker.write_text("mine")
    with pytest.raises(DownloadError, match="already exists; pass --force"):
        install_archive(training_zip, out)
    assert marker.read_text() == "mine"
    install_archive(training_zip, out, force=True)
    assert not marker.exists() and (out / "TRAINING" / "case_2").is_dir()


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "TRAINING/../../evil.txt"])
def test_path_traversal_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("TRAINING/case_1/ok.txt", "fine")
        zf.writestr(member, "evil")
    dest = tmp_path / "x" / "dest"
    with pytest.raises(DownloadError, match="refusing archive member"):
        safe_extract(archive, dest)
    assert not (tmp_path / "x" / "evil.txt").exists() and not list(dest.rglob("*.txt"))


def test_symlink_member_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("TRAINING/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="symbolic link"):
        safe_extract(archive, tmp_path / "dest")


def test_archive_without_layout(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.txt", "hello")
    with pytest.raises(DownloadError, match="no TRAINING/ or TESTING/ folder"):
        install_archive(archive, tmp_path / "out")
    (tmp_path / "corrupt.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        install_archive(tmp_path / "corrupt.zip", tmp_path / "out2")


class _Server:
    """A local HTTP server (127.0.0.1) serving one payload with Range support; it can cut the
    first response half-way to simulate a dropped connection."""

    def __init__(self, payload: bytes, cut_first: bool):
        self.payload, self.cut_first, self.ranges = payload, cut_first, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                start = 0
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.end_headers()
                if outer.cut_first:
                    outer.cut_first = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-body
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ISLES_small.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_resumes_after_cut(training_zip, tmp_path):
    payload = training_zip.read_bytes()
    with _Server(payload, cut_first=True) as server:
        path = download(server.url, md5(training_zip), tmp_path / "dl", progressbar=False)
    assert path.read_bytes() == payload
    assert server.ranges[0] is None
    # the second request asked only for the bytes it did not have
    offset = int(server.ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= len(payload) // 2
    assert not list((tmp_path / "dl" / ".partial").glob("*.part"))


def test_download_wrong_checksum_keeps_nothing(training_zip, tmp_path):
    with _Server(training_zip.read_bytes(), cut_first=False) as server:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            download(server.url, "0" * 32, tmp_path / "dl", progressbar=False)
    assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]


def test_cli_isles_from_url_and_verify(training_zip, tmp_path, capsys):
    out = tmp_path / "isles"
    with _Server(training_zip.read_bytes(), cut_first=True) as server:
        code = data_download.main(["isles2018", "--url", server.url, "--md5", md5(training_zip), "--out", str(out)])
    assert code == 0
    assert "TRAINING: 2 cases, 4 slices" in capsys.readouterr().out
    # a second install without --force is refused with a one-line error and exit 2
    assert data_download.main(["isles2018", "--archive", str(training_zip), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_verify_broken_tree(tmp_path, capsys):
    make_case(tmp_path / "TRAINING", 1, CBV=None)
    assert data_download.main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s)" in err and "case_1: missing modality CBV" in err


def test_cli_synthetic_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "syn"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert data_download.main(["synthetic", "--out", str(out), "--train-cases", "1", "--test-cases", "0"]) == 2
    assert (out / "mine.txt").read_text() == "keep"
    assert "pass --force (force=True)" in capsys.readouterr().err


def test_zip_helper_is_valid(training_zip):
    with zipfile.ZipFile(io.BytesIO(training_zip.read_bytes())) as zf:
        assert any(n.startswith("TRAINING/case_1/") for n in zf.namelist())
