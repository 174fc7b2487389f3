"""The course site (``python docs/site/build.py``) built and opened in a real browser.

The site is built once into a temporary folder, served on 127.0.0.1 and opened page by page in
Debian's chromium through Playwright: every page loads without a console error, every image
served by the site renders and has alt text, and every internal link (and its ``#fragment``)
leads to a page and an element that exist. Images and scripts from elsewhere (the Colab badge,
MathJax from its CDN) cannot load where there is no network and are not the site's errors; the
test checks that only those are external. A link to the repository on GitHub must name a file
that exists in this checkout.

Skips, saying why, without the ``site`` extra (``pip install -e ".[site]"``), Playwright or a
chromium. ``STROKE_SCREENSHOTS=DIR`` also saves a screenshot of each page there.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "docs" / "site" / "build.py"
# what may come from outside the site: badges and MathJax (no network in CI: they fail to load)
EXTERNAL_OK = ("https://colab.research.google.com/assets/", "https://cdn.jsdelivr.net/npm/mathjax")


def site_module():
    spec = importlib.util.spec_from_file_location("stroke_site_build", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The site built by its command line, as CI builds it; returns its folder and the command's output."""
    for name in ("sphinx", "myst_nb", "furo"):
        pytest.importorskip(name, reason=f'{name} missing: the site extra is not installed (pip install -e ".[site]")')
    out = tmp_path_factory.mktemp("site") / "_site"
    done = subprocess.run(
        [sys.executable, str(BUILD), "--out", str(out), "--strict"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout.strip())
    return out, done.stdout


@pytest.fixture(scope="module")
def served(built):
    out, _ = built

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_the_build_prints_its_time_and_writes_every_page(built):
    out, stdout = built
    assert "built in" in stdout and " s -> " in stdout
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    chapters = {f"notebooks/{p.stem}.html" for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))}
    assert len(chapters) == 5 and chapters <= pages
    assert {"index.html", "docs/glossary.html", "docs/decisions.html", "docs/instructor-guide.html"} <= pages
    assert (out / ".stroke-site").is_file()


def test_the_build_never_replaces_a_folder_it_did_not_write(tmp_path):
    pytest.importorskip("sphinx", reason='the site extra is not installed (pip install -e ".[site]")')
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    done = subprocess.run([sys.executable, str(BUILD), "--out", str(foreign)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "not written by this command" in done.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_figures_get_alt_text_from_the_markdown_that_introduces_them():
    site = site_module()
    png = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    nb = {
        "cells": [
            {
                "cell_type": "markdown",
                "metadata": {},
                "source": "## 3. Intensities\n\nIntro.\n\n`select_aif` on *CBF* < 30 %:",
            },
            {"cell_type": "code", "metadata": {}, "source": "plot()", "outputs": [png]},
            {"cell_type": "code", "metadata": {}, "source": "print(1)", "outputs": [{"output_type": "stream"}]},
            {"cell_type": "code", "metadata": {"mystnb": {"image": {"alt": "own"}}}, "source": "", "outputs": [png]},
        ]
    }
    assert site.add_alt_text(nb) == 1
    assert nb["cells"][1]["metadata"]["mystnb"]["image"]["alt"] == "Figure (3. Intensities): select_aif on CBF < 30 %:"
    assert "mystnb" not in nb["cells"][2]["metadata"] and nb["cells"][3]["metadata"]["mystnb"]["image"]["alt"] == "own"


def _page_facts(page) -> dict:
    return page.evaluate(
        """() => ({
            images: Array.from(document.images).map(i => ({
                src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0, alt: i.getAttribute('alt') || ''})),
            links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
            ids: Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.getAttribute('name')),
        })"""
    )


def test_every_page_loads_renders_its_images_and_links_resolve(served, browser):
    out, base = served
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    shots = os.environ.get("STROKE_SCREENSHOTS")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, external, facts = [], set(), {}
    local = lambda u: u.startswith(base)  # noqa: E731

    def console(msg):
        where = msg.location.get("url", "")
        if msg.type == "error":
            if where and not local(where):
                external.add(where)  # an outside resource that could not load: checked below
            else:
                errors.append(f"{page.url}: {msg.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    for name in pages:
        response = page.goto(base + name, wait_until="load")
        assert response is not None and response.ok, name
        facts[name] = _page_facts(page)
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"site_{name.replace('/', '_')}.png"), full_page=False)
    page.close()
    assert errors == []
    assert all(u.startswith(EXTERNAL_OK) for u in external), external

    figures = 0
    for name, f in facts.items():
        for img in f["images"]:
            if local(img["src"]):
                assert img["ok"], f"{name}: {img['src']} does not render"
                assert img["alt"].strip(), f"{name}: {img['src']} has no alt text"
                figures += "/_images/" in img["src"]
            else:
                assert img["src"].startswith(EXTERNAL_OK), f"{name}: image from outside the site: {img['src']}"
    assert figures >= 20  # the chapters' figures are there at all

    broken, repo_files = [], set()
    repository = site_module().repository()
    for name, f in facts.items():
        for href in f["links"]:
            url, fragment = urldefrag(href)
            if local(url):
                path = urlsplit(url).path.removeprefix(urlsplit(base).path)
                target = path + "index.html" if path.endswith("/") or not path else path
                if not (out / target).is_file():
                    broken.append(f"{name}: {href}")
                elif fragment and target in facts and fragment not in facts[target]["ids"]:
                    broken.append(f"{name}: {href} (no #{fragment} there)")
            elif url.startswith(repository + "/"):
                repo_files.add(url.removeprefix(repository + "/").split("/", 2)[-1])
    assert broken == []
    assert repo_files, "no link to a repository file: the glossary's link to metrics.py should be one"
    assert all((ROOT / p).exists() for p in repo_files), sorted(p for p in repo_files if not (ROOT / p).exists())
