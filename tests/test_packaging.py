"""The repository's promises: environment.yml agrees with pyproject, README's test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch", "python-isal": "isal"}


def _names(specs) -> set[str]:
    return {re.split(r"[<>=!~ \[]", s.strip(), maxsplit=1)[0].lower() for s in specs if s.strip()}


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["test"])
    conda = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^ {2}- ([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in ("python", "pip", "conda-forge", "-e"):
            conda.add(CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower()))
    assert conda == wanted


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"```bash\n(.*pytest.*)\n```", readme).group(1)
    assert "python -m pytest" in test_cmd
    assert "python -m pytest" in ci and "ruff check" in ci and "ruff format --check" in ci


def _package_imports() -> dict[str, set[str]]:
    """``{module: package modules it imports}`` over the whole package (``phantom.series`` for
    subpackage modules), counting imports inside functions too."""
    import ast

    root = ROOT / "stroke_helpers"
    names = {
        p: ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__") for p in root.rglob("*.py")
    }
    known = set(names.values())
    graph = {}
    for path, module in names.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] if package else [])
            elif (node.module or "").startswith("stroke_helpers"):
                base = ""
            else:
                continue
            target = ".".join(x for x in (base, (node.module or "").removeprefix("stroke_helpers").lstrip(".")) if x)
            subs = {f"{target}.{a.name}".lstrip(".") for a in node.names} & known
            deps |= subs or {target}
        # importing a.b from outside package a runs a/__init__ first
        deps |= {d.rpartition(".")[0] for d in deps if "." in d and not module.startswith(d.rpartition(".")[0])}
        graph[module] = {d for d in deps if d in known} - {module, "__init__", ""}
    return graph


def test_no_import_circle_in_the_package():
    graph = _package_imports()
    assert graph["cascade"] and "inference" not in graph["cascade"]  # the circle this layout removed
    assert "phantom.anatomy" in graph["phantom.series"] and "isles" in graph["phantom.dataset"]  # subpackage walked
    done, stack = set(), []

    def visit(module):
        assert module not in stack, " -> ".join([*stack[stack.index(module) :], module])
        if module in done or module not in graph:
            return
        stack.append(module)
        for dep in graph[module]:
            visit(dep)
        stack.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_readme_and_package_docstring_list_every_module():
    import stroke_helpers

    modules = {p.stem for p in (ROOT / "stroke_helpers").glob("*.py")} - {"__init__", "__main__"}
    readme = (ROOT / "README.md").read_text()
    for module in sorted(modules):
        assert f":mod:`stroke_helpers.{module}`" in stroke_helpers.__doc__, module
        assert f"`stroke_helpers/{module}.py`" in readme, module


def test_chapters_follow_the_template_and_stay_small():
    """Every chapter: under 2 MB committed, a papermill parameters cell with a seed, a first
    code cell that prints the configuration and seeds, a take-away after results, exercises with
    a check or an expected answer, a quiz, a summary and references; no SPEC.md citations."""
    import json

    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        assert path.stat().st_size < 2_000_000, path.name
        nb = json.loads(path.read_text())
        cells = nb["cells"]
        params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        assert re.search(r"^seed = \d+", "".join(params["source"]), re.M), path.name
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        assert "print_config()" in code[1] and "seed_everything(seed)" in code[1], path.name
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        for heading in ("## Exercises", "## Quiz", "## Summary", "## References"):
            assert heading in text, (path.name, heading)
        # take-aways are markdown, or rendered from the results by a code cell (chapters.*_takeaway)
        rendered = sum("_takeaway(" in c or "**Take-away.**" in c for c in code)
        assert text.count("**Take-away.**") + rendered >= 3, path.name
        assert "answers.check_" in text or "Expected" in text, path.name
        assert "SPEC" not in text and "SPEC" not in "\n".join(code), path.name
