"""The documentation's promises: every relative link in the markdown (README, docs, SECURITY.md,
LICENSE-content.md, the notebooks' markdown cells) leads to a file that exists, every chapter
links the glossary, and CITATION.cff is valid YAML with the keys CFF 1.2.0 requires."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

# [text](target) and ![alt](target); the text may hold one level of brackets, the target an
# optional "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_sources() -> list[tuple[str, Path, str]]:
    """``(label, file the links are relative to, markdown text)`` for every markdown document
    and every markdown cell of the notebooks."""
    files = [
        ROOT / "README.md",
        ROOT / "SECURITY.md",
        ROOT / "LICENSE-content.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    out = [(p.relative_to(ROOT).as_posix(), p, p.read_text(encoding="utf-8")) for p in files]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                out.append((f"{nb.relative_to(ROOT).as_posix()} cell {i}", nb, "".join(cell["source"])))
    return out


def relative_links(text: str) -> list[str]:
    """The relative link targets in ``text``, without ``#fragment``; code blocks and code spans
    are not links (a link whose text is a code span still is)."""
    text = CODE_SPAN.sub("code", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(text):
        if not target or target.startswith("#") or SCHEME.match(target):
            continue
        path = unquote(target.split("#", 1)[0])
        if path:
            targets.append(path)
    return targets


def broken_links(sources) -> list[str]:
    return [
        f"{label}: ({target})"
        for label, path, text in sources
        for target in relative_links(text)
        if not (path.parent / target).exists()
    ]


def test_the_expected_documents_exist():
    for name in ("README.md", "SECURITY.md", "LICENSE", "LICENSE-content.md", "CITATION.cff", "docs/glossary.md"):
        assert (ROOT / name).is_file(), name


def test_every_relative_link_resolves():
    sources = markdown_sources()
    assert sum(len(relative_links(text)) for _, _, text in sources) >= 10  # the parser finds links at all
    assert broken_links(sources) == []


def test_the_checker_catches_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("x")
    doc = tmp_path / "doc.md"
    text = (
        "[ok](there.md) [ok too](there.md#part) ![img](there.md) [`code` text](there.md) "
        "[web](https://example.org/missing.md) [mail](mailto:a@b.c) [anchor](#section) "
        "[gone](missing.md) ![gone too](fig/missing.png#x) [also [nested] gone](../nowhere.md)\n"
        "`[not a link](missing-in-code.md)`\n```\n[not a link either](missing-in-fence.md)\n```\n"
    )
    assert broken_links([("doc.md", doc, text)]) == [
        "doc.md: (missing.md)",
        "doc.md: (fig/missing.png)",
        "doc.md: (../nowhere.md)",
    ]


def test_every_chapter_introduction_links_the_glossary():
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        first = next(c for c in json.loads(nb.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "markdown")
        assert "../docs/glossary.md" in relative_links("".join(first["source"])), nb.name
    assert "docs/glossary.md" in relative_links((ROOT / "README.md").read_text(encoding="utf-8"))


def _cff_top_level_keys(text: str) -> set[str]:
    """Top-level mapping keys of a YAML file, for when PyYAML is not installed."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][A-Za-z0-9_-]*):", text, re.M)}


def test_citation_cff_parses_and_cites_the_paper():
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    required = {"cff-version", "message", "title", "authors"}
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with papermill
        assert required <= _cff_top_level_keys(text)
        assert re.search(r'^cff-version: "?1\.2\.0"?$', text, re.M)
        pytest.skip("PyYAML not installed: checked the top-level keys only")
    cff = yaml.safe_load(text)
    assert required <= set(cff), required - set(cff)
    assert str(cff["cff-version"]) == "1.2.0"
    assert cff["authors"] and all(isinstance(a, dict) for a in cff["authors"])
    assert cff["license"] == "MIT"
    paper = cff["references"][0]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"*{paper['title']}*" in readme  # the same title as README's first paragraph
    assert [a["family-names"] for a in paper["authors"]] == ["Florez", "Gómez", "García", "Martínez"]
    assert paper["year"] == 2024


# --- badges and links to the repository, from its one configured URL ------------------------------


def site_module():
    """``docs/site/build.py``, which renders the badges and the chapter table (stdlib only)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stroke_site_build", ROOT / "docs" / "site" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_and_chapters() -> list[tuple[str, str]]:
    return [(label, text) for label, _, text in markdown_sources() if label == "README.md" or "notebooks/" in label]


# a URL that names a repository and a path in it: GitHub, Colab and Binder
REPO_URLS = re.compile(
    r"https://(?:github\.com/(?P<gh>[\w.-]+/[\w.-]+)/(?:blob|tree)/main/(?P<gh_path>[^\s)#?\"'>`]+)"
    r"|colab\.research\.google\.com/github/(?P<colab>[\w.-]+/[\w.-]+)/blob/main/(?P<colab_path>[^\s)#?\"'>`]+)"
    r"|mybinder\.org/v2/gh/(?P<binder>[\w.-]+/[\w.-]+)/HEAD\?urlpath=(?:lab/tree|voila/render)/(?P<binder_path>[^\s)#&\"'>`]+))"
)


def repository_links(text: str) -> list[tuple[str, str]]:
    """``(owner/name, path)`` of every GitHub, Colab or Binder URL in ``text`` that names a file."""
    found = []
    for m in REPO_URLS.finditer(text):
        for kind in ("gh", "colab", "binder"):
            if m.group(kind):
                found.append((m.group(kind), unquote(m.group(f"{kind}_path"))))
    return found


def test_badges_are_rendered_from_the_configured_repository():
    site = site_module()
    url = site.repository()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    badges = site.readme_badges(url)
    assert "\n".join(badges) in readme, "README's badges differ: python docs/site/build.py badges --write"
    assert sum(line.startswith("[![") for line in readme.splitlines()) == len(badges)  # no other badge
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        first = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
        assert site.chapter_badge(url, nb.name) in first.splitlines(), nb.name
    for label, text in readme_and_chapters():
        assert "OWNER/REPO" not in text, label
    assert f"git clone {url} && cd {url.rsplit('/', 1)[1]} &&" in readme  # README's Colab set-up cell


def test_every_badge_and_link_to_the_repository_names_a_file_that_exists():
    site = site_module()
    repo = site.owner_name(site.repository())
    links = [(label, owner, path) for label, text in readme_and_chapters() for owner, path in repository_links(text)]
    ours = [(label, path) for label, owner, path in links if owner == repo]
    assert len(ours) >= 8  # README's three badges and one per chapter, at least
    assert [(label, path) for label, path in ours if not (ROOT / path).exists()] == []
    # a Colab or Binder link opens this repository, no other
    for label, text in readme_and_chapters():
        for m in REPO_URLS.finditer(text):
            assert (m.group("colab") or m.group("binder") or repo) == repo, (label, m.group(0))


def test_the_link_checker_reads_repository_urls():
    text = (
        "[![b](x.svg)](https://colab.research.google.com/github/a/b/blob/main/notebooks/01.ipynb) "
        "https://mybinder.org/v2/gh/a/b/HEAD?urlpath=voila/render/notebooks/explorer.ipynb "
        "[src](https://github.com/a/b/blob/main/stroke_helpers/metrics.py#L3) https://github.com/a/b"
    )
    assert repository_links(text) == [
        ("a/b", "notebooks/01.ipynb"),
        ("a/b", "notebooks/explorer.ipynb"),
        ("a/b", "stroke_helpers/metrics.py"),
    ]


def test_readme_lists_the_chapters_as_their_introductions_do():
    """README's chapter table is rendered from each chapter's first cell: title, goals, study time."""
    site = site_module()
    table = site.chapter_table()
    assert table.count("\n| [") == 5 and "about" in table
    assert table in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README's chapter table differs from the chapters' introductions; it should read:\n" + table
    )


def test_the_instructor_guide_names_only_checks_that_exist():
    from stroke_helpers import answers

    guide = (ROOT / "docs" / "instructor-guide.md").read_text(encoding="utf-8")
    named = set(re.findall(r"answers\.(check_\w+)", guide))
    assert named, "the guide names the exercises' checks"
    assert sorted(n for n in named if not hasattr(answers, n)) == []
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        assert nb.name in guide, nb.name


def test_a_fork_retargets_every_badge_and_link():
    """``python docs/site/build.py badges --write`` after a fork changed ``repository``."""
    site = site_module()
    old, new = "https://github.com/a/b", "https://github.com/fork-owner/b2"
    text = "\n".join(site.readme_badges(old)) + (
        "\n`!git clone https://github.com/a/b && cd b && pip install -e .` and `%cd b/notebooks`; "
        "[code](https://github.com/a/b/blob/main/stroke_helpers/metrics.py) "
        "[atlas](https://github.com/Chin-Fu-Liu/Arterial_Atlas) abcd b"
    )
    out = site.retarget(text, new)
    assert "\n".join(site.readme_badges(new)) in out
    assert "git clone https://github.com/fork-owner/b2 && cd b2 &&" in out and "%cd b2/notebooks" in out
    assert "https://github.com/fork-owner/b2/blob/main/stroke_helpers/metrics.py" in out
    assert "https://github.com/Chin-Fu-Liu/Arterial_Atlas" in out and out.endswith("abcd b")
    assert site.retarget(out, new) == out
