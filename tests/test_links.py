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
