"""The course site, and the badges and chapter table README shares with it.

``python docs/site/build.py [--out _site] [--strict]`` renders the committed, already executed
chapters (``notebooks/0*.ipynb``, never executed again), ``docs/glossary.md``,
``docs/decisions.md`` and ``docs/instructor-guide.md`` as a static HTML site, and prints how long
that took. It needs the ``site`` extra (``pip install -e ".[site]"``).

Why Sphinx + myst-nb rather than Jupyter Book 1.x: Jupyter Book 1 is a command line and a theme
around these same two packages that pins older Sphinx releases, and its successor (Jupyter Book 2,
mystmd) is a Node tool. Called directly they are three pip packages (with the ``furo`` theme), one
``conf.py`` beside this file and an in-process build, with ``nb_execution_mode = "off"``.

The build works on a copy (a temporary folder laid out like the repository, ``notebooks/`` and
``docs/``), so the committed files are only read:

- each figure gets alt text through myst-nb's cell-level image options (cell metadata
  ``mystnb.image.alt``), derived from the markdown that introduces it (its section and last
  paragraph);
- a link to a repository file that is not part of the site (``../stroke_helpers/metrics.py``,
  ``../README.md``) becomes a link to that file on GitHub, from the one configured repository URL;
- the front page lists the chapters with their goals and study times (:func:`chapter_table`, the
  table README holds too).

``--out`` (default ``_site``, gitignored) is written whole: built beside it, then swapped in. A
folder this command did not write (no ``.stroke-site`` marker inside) is never replaced.

``python docs/site/build.py badges [--write]`` prints README's Colab and Binder badge lines and
each chapter's Colab badge, rendered from ``[tool.stroke_helpers] repository`` in
``pyproject.toml``; ``--write`` points README's and the chapters' badges and links at that
repository (for a fork: change that one line, then run this).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MARKER = ".stroke-site"  # in every folder this command wrote
DOCS = ("docs/glossary.md", "docs/decisions.md", "docs/instructor-guide.md")  # the site's pages besides the chapters
COLAB_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_SVG = "https://mybinder.org/badge_logo.svg"
EXPLORER_SVG = "https://img.shields.io/badge/Binder-explorer%20app-579aca"
GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9._-]+?)/?$")
# a markdown link or image, as tests/test_links.py reads them: [text](target "title")
LINK = re.compile(r"(!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?)([^)\s>]*)(>?(?:\s+\"[^\"]*\")?\s*\))")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# --- the repository, its badges and the chapters ------------------------------------------------


def repository(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The repository's GitHub URL, ``[tool.stroke_helpers] repository`` in ``pyproject.toml``."""
    import tomllib

    url = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["stroke_helpers"]["repository"]
    if not GITHUB.match(url):
        raise ValueError(f"{pyproject}: repository = {url!r} is not https://github.com/OWNER/NAME")
    return url.rstrip("/")


def owner_name(url: str) -> str:
    """``OWNER/NAME`` of a GitHub repository URL."""
    owner, name = GITHUB.match(url).groups()
    return f"{owner}/{name}"


def readme_badges(url: str) -> list[str]:
    """README's three badge lines: chapter 01 on Colab, the chapters and the explorer app on Binder."""
    path = owner_name(url)
    return [
        f"[![Open in Colab]({COLAB_SVG})](https://colab.research.google.com/github/{path}/blob/main/notebooks/01_data_exploration.ipynb)",
        f"[![Binder: notebooks]({BINDER_SVG})](https://mybinder.org/v2/gh/{path}/HEAD?urlpath=lab/tree/notebooks)",
        f"[![Binder: explorer app]({EXPLORER_SVG})](https://mybinder.org/v2/gh/{path}/HEAD?urlpath=voila/render/notebooks/explorer.ipynb)",
    ]


def chapter_badge(url: str, notebook: str) -> str:
    """The Colab badge line under a chapter's title (``notebook``: its file name)."""
    return f"[![Open in Colab]({COLAB_SVG})](https://colab.research.google.com/github/{owner_name(url)}/blob/main/notebooks/{notebook})"


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("0*.ipynb"))


def read_notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_notebook(nb: dict, path: Path) -> None:
    """Write ``nb`` as the committed chapters are written (nbformat's layout), byte for byte."""
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def intro(path: Path) -> dict:
    """A chapter's title, goals (its "What you will learn" list) and study time, read from its
    first markdown cell."""
    cell = next(c for c in read_notebook(path)["cells"] if c["cell_type"] == "markdown")
    text = "".join(cell["source"])
    title = re.search(r"^# (.+)$", text, re.M).group(1).strip()
    learn = text.split("**What you will learn**", 1)[1]
    goals = [" ".join(g.split()) for g in re.findall(r"^- (.+?)(?=^- |^\s*$|\Z)", learn, re.M | re.S)]
    study = re.search(r"\*Study time: ([^.(*]+?)\s*[.(*]", text)
    return {
        "title": title,
        "goals": [g.rstrip(";.") for g in goals],
        "study_time": study.group(1).strip() if study else None,
    }


def chapter_table(prefix: str = "notebooks/", root: Path = ROOT) -> str:
    """The chapters, their goals and study times as a markdown table; ``prefix`` leads from the
    page that holds it to ``notebooks/``."""
    rows = ["| chapter | you will learn | study time |", "|---|---|---|"]
    for path in chapters(root):
        c = intro(path)
        if c["study_time"] is None:
            raise ValueError(f"{path.name}: its first markdown cell has no '*Study time: ...*' line")
        rows.append(f"| [{c['title']}]({prefix}{path.name}) | {'; '.join(c['goals'])} | {c['study_time']} |")
    return "\n".join(rows)


# --- the site's sources ---------------------------------------------------------------------------


def _outside_fences(text: str, edit) -> str:
    """``edit`` applied to the parts of ``text`` outside fenced code blocks."""
    out, last = [], 0
    for m in FENCE.finditer(text):
        out += [edit(text[last : m.start()]), m.group(0)]
        last = m.end()
    return "".join([*out, edit(text[last:])])


def retarget_links(text: str, source: str, url: str, pages: set[str], root: Path = ROOT) -> str:
    """Links in markdown ``text`` of the repository file ``source`` that lead to a repository file
    outside the site's ``pages`` now lead to that file on GitHub."""

    def link(m: re.Match) -> str:
        target = m.group(2)
        if not target or target.startswith("#") or SCHEME.match(target):
            return m.group(0)
        path, _, fragment = target.partition("#")
        resolved = (root / source).parent / path
        try:
            rel = resolved.resolve().relative_to(root).as_posix()
        except ValueError:  # outside the repository: leave it, the build warns
            return m.group(0)
        if rel in pages or not resolved.exists():
            return m.group(0)
        kind = "tree" if resolved.is_dir() else "blob"
        return f"{m.group(1)}{url}/{kind}/main/{rel}{'#' + fragment if fragment else ''}{m.group(3)}"

    return _outside_fences(text, lambda part: LINK.sub(link, part))


def _plain(markdown: str) -> str:
    """Markdown as plain text, on one line."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)
    text = re.sub(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)  # HTML tags, not "rCBF < 30 %"
    text = re.sub(r"(?<!\w)_([^_]+)_(?!\w)", r"\1", re.sub(r"[`*]+", "", text)).lstrip("#").strip()
    return " ".join(text.split())


def _shorten(text: str, limit: int = 300) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(": "), cut.rfind("; "))
    if end > limit // 3:
        return cut[: end + 1] if cut[end] == "." else cut[:end] + " …"
    return cut[: cut.rfind(" ")] + " …"


def figure_alt(section: str, markdown: str) -> str:
    """Alt text for the figures of a code cell: its section, then the last paragraph of the
    markdown that introduces it."""
    paragraphs = [p for p in re.split(r"\n\s*\n", markdown) if p.strip() and not p.lstrip().startswith("#")]
    words = _plain(paragraphs[-1]) if paragraphs else ""
    head = f"Figure ({section})" if section else "Figure"
    return _shorten(f"{head}: {words}" if words else head)


def add_alt_text(nb: dict) -> int:
    """Give every code cell that shows an image the alt text :func:`figure_alt` derives (unless
    it sets its own ``mystnb.image.alt``). Returns how many cells got one."""
    section, markdown, n = "", "", 0
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            markdown = text
            headings = re.findall(r"^#{1,3} (.+)$", text, re.M)
            if headings:
                section = _plain(headings[-1])
            continue
        images = [o for o in cell.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {}))]
        if cell["cell_type"] != "code" or not images:
            continue
        options = cell.setdefault("metadata", {}).setdefault("mystnb", {}).setdefault("image", {})
        if not options.get("alt"):
            options["alt"] = figure_alt(section, markdown)
            n += 1
    return n


def index_page(url: str) -> str:
    toc = "\n".join(f"notebooks/{p.stem}" for p in chapters())
    docs = "\n".join(d.removesuffix(".md") for d in DOCS)
    return f"""# Stroke lesion segmentation from CT perfusion

A course on *Deep Cascade Cross-attentional Architecture to Segment Acute Ischemic Stroke Lesions
from CTP Sequences* (Florez, Gómez, García, Martínez, 2024): five chapters, each one lesson, shown
here as they were executed and committed (on the synthetic phantom dataset, `cpu` preset). To run
them, clone [the repository]({url}) and follow its README (the fast path reads the shipped
checkpoint and takes about 2 minutes), or open a chapter in Colab with the badge under its title.

{chapter_table(prefix="notebooks/")}

The words the chapters use are defined in the [glossary](docs/glossary.md), how the paper became
code in the [decisions](docs/decisions.md); teachers will find lesson plans, answers and common
misconceptions in the [instructor guide](docs/instructor-guide.md).

```{{toctree}}
:caption: Chapters
:maxdepth: 1
:hidden:

{toc}
```

```{{toctree}}
:caption: Reference
:maxdepth: 1
:hidden:

{docs}
```
"""


def stage(src: Path, url: str) -> dict:
    """Lay out the site's sources in ``src`` (a copy; the repository is only read)."""
    pages = {f"notebooks/{p.name}" for p in chapters()} | set(DOCS)
    missing = [d for d in DOCS if not (ROOT / d).is_file()]
    if missing:
        raise FileNotFoundError(f"the site needs {', '.join(missing)}")
    (src / "notebooks").mkdir(parents=True)
    (src / "docs").mkdir()
    figures = 0
    for path in chapters():
        nb = read_notebook(path)
        figures += add_alt_text(nb)
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = retarget_links("".join(cell["source"]), f"notebooks/{path.name}", url, pages)
        write_notebook(nb, src / "notebooks" / path.name)
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        (src / doc).write_text(retarget_links(text, doc, url, pages), encoding="utf-8")
    (src / "index.md").write_text(index_page(url), encoding="utf-8")
    return {"pages": len(pages) + 1, "figure_cells": figures}


# --- the build ------------------------------------------------------------------------------------


def check_out(out: Path) -> None:
    """Refuse an ``--out`` this command did not write."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise FileExistsError(
            f"{out}: exists and was not written by this command (no {MARKER} inside): pick another --out"
        )
    if out.resolve() in (ROOT, *ROOT.parents) or ROOT / "notebooks" in (out.resolve(), *out.resolve().parents):
        raise FileExistsError(f"{out}: the repository, a folder above it or one in notebooks/: pick another --out")


def build(out: Path, strict: bool = False, quiet: bool = True) -> dict:
    """Build the site into ``out``; returns what was built and how long it took (seconds)."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    start = time.perf_counter()
    out = Path(out).absolute()
    check_out(out)
    url = repository()
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="stroke-site-") as tmp:
            src = Path(tmp) / "src"
            staged = stage(src, url)
            warnings = Path(tmp) / "warnings.txt"
            with warnings.open("w") as warn, patch_docutils(str(HERE)), docutils_namespace():
                app = Sphinx(
                    srcdir=str(src),
                    confdir=str(HERE),
                    outdir=str(Path(tmp) / "html"),  # myst-nb writes beside it (jupyter_execute/): kept in tmp
                    doctreedir=str(Path(tmp) / "doctrees"),
                    buildername="html",
                    status=None if quiet else sys.stdout,
                    warning=warn,
                    freshenv=True,
                    warningiserror=strict,
                    parallel=1,
                )
                app.build(force_all=True)
                status = app.statuscode
            problems = warnings.read_text().strip()
            if not status:
                shutil.copytree(Path(tmp) / "html", new, dirs_exist_ok=True)
        if problems:
            print(problems, file=sys.stderr)
        if status:
            raise RuntimeError(f"sphinx exited with status {status}")
        (new / ".buildinfo").unlink(missing_ok=True)
        if (new / "_sources").is_dir() and not any((new / "_sources").iterdir()):
            (new / "_sources").rmdir()
        (new / MARKER).write_text("written by docs/site/build.py; replaced whole by the next build\n")
        if out.exists():  # ours (check_out): swap it out, then remove it
            old = out.with_name(f".{out.name}.old-{time.time_ns()}")
            out.rename(old)
            new.rename(out)
            shutil.rmtree(old)
        else:
            new.rename(out)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    html = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    images = [p for p in (out / "_images").glob("*")] if (out / "_images").is_dir() else []
    return {**staged, "html": html, "images": len(images), "warnings": problems, "seconds": seconds}


# --- badges --write --------------------------------------------------------------------------------

#: where a repository path appears in README and the chapters: GitHub, Colab and Binder URLs
REPO_IN_URL = re.compile(r"(github\.com/|colab\.research\.google\.com/github/|mybinder\.org/v2/gh/)([\w.-]+/[\w.-]+)")


def retarget(text: str, url: str) -> str:
    """``text`` with every GitHub, Colab and Binder URL of a repository (and ``cd NAME`` after a
    clone) pointed at ``url``'s. Other GitHub URLs (the atlas's, MONAI's) are left alone: only the
    repository the badges name is replaced."""
    badge = re.search(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/", text)
    if not badge:
        return text
    old, new = badge.group(1), owner_name(url)
    text = REPO_IN_URL.sub(lambda m: m.group(1) + (new if m.group(2) == old else m.group(2)), text)
    return re.sub(rf"\bcd {re.escape(old.split('/')[1])}\b", f"cd {new.split('/')[1]}", text)


def write_badges(url: str) -> list[Path]:
    """Point README's and the chapters' badges and links at ``url``; returns the files changed."""
    changed = []
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if retarget(text, url) != text:
        readme.write_text(retarget(text, url), encoding="utf-8")
        changed.append(readme)
    for path in chapters():
        nb = read_notebook(path)
        first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        text = "".join(first["source"])
        if retarget(text, url) != text:
            first["source"] = retarget(text, url).splitlines(keepends=True)
            write_notebook(nb, path)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["badges"]:
        p = argparse.ArgumentParser(prog="docs/site/build.py badges", description="README's and the chapters' badges")
        p.add_argument("--write", action="store_true", help="point README's and the chapters' badges at the repository")
        args = p.parse_args(argv[1:])
        url = repository()
        if args.write:
            for path in write_badges(url):
                print(f"badges: {path.relative_to(ROOT)} now points at {url}")
        print("\n".join(readme_badges(url)))
        for path in chapters():
            print(f"{path.name}: {chapter_badge(url, path.name)}")
        return 0
    p = argparse.ArgumentParser(prog="docs/site/build.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", default="_site", help="output folder (default _site), replaced whole if this command wrote it"
    )
    p.add_argument("--strict", action="store_true", help="fail on any Sphinx warning (CI)")
    p.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    args = p.parse_args(argv)
    try:
        built = build(Path(args.out), strict=args.strict, quiet=not args.verbose)
    except ImportError as exc:
        print(f'error: {exc.name or exc}: the site needs the site extra: pip install -e ".[site]"', file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Sphinx's own errors, warnings under --strict among them: one line
        if not isinstance(exc, RuntimeError) and type(exc).__module__.split(".")[0] not in (
            "sphinx",
            "docutils",
            "myst_nb",
        ):
            raise
        print(f"error: the site did not build: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    print(
        f"site: {len(built['html'])} HTML pages ({built['pages']} sources), {built['images']} images, "
        f"alt text on {built['figure_cells']} figure cells, built in {built['seconds']:.1f} s -> {out / 'index.html'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
