"""The arterial territory atlas fetcher: md5-pinned download, local copy, corrupted copy refused."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest
from conftest import ATLAS_DIR

import data_download
from stroke_helpers.download import ATLAS_MD5, DownloadError, fetch_arterial_atlas, md5sum

needs_atlas = pytest.mark.skipif(not ATLAS_DIR.is_dir(), reason="needs the atlas copy in ../shared/atlas")


@needs_atlas
def test_local_copy_is_installed_after_md5_check(tmp_path):
    out = tmp_path / "data" / "atlas"
    assert data_download.main(["atlas", "--out", str(out), "--from", str(ATLAS_DIR)]) == 0
    assert {p.name for p in out.iterdir()} == set(ATLAS_MD5)
    assert all(md5sum(out / n) == m for n, m in ATLAS_MD5.items())


@needs_atlas
def test_corrupted_copy_is_refused_and_nothing_installed(tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(ATLAS_DIR, bad)
    (bad / "ArterialAtlasLables.txt").chmod(0o644)
    with open(bad / "ArterialAtlasLables.txt", "ab") as f:
        f.write(b"x")
    out = tmp_path / "atlas"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_arterial_atlas(out, source=bad)
    assert not out.exists()
    assert data_download.main(["atlas", "--out", str(out), "--from", str(bad)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err and not out.exists()


@needs_atlas
def test_download_from_a_local_http_server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ATLAS_DIR))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        out = fetch_arterial_atlas(tmp_path / "atlas", base_url=url, progressbar=False)
    finally:
        server.shutdown()
    assert all(md5sum(out / n) == m for n, m in ATLAS_MD5.items())


def test_synthetic_without_atlas_warns_and_records_geometric(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = ["synthetic", "--out", str(out), "--atlas", str(tmp_path / "none"), "--train-cases", "1"]
    assert data_download.main([*argv, "--test-cases", "0", "--workers", "1", "--no-pwi"]) == 0
    assert "using geometric territories" in capsys.readouterr().out
    from stroke_helpers.truth import read_config

    assert read_config(out)["territories"] == "geometric"
