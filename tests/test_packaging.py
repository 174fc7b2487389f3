"""The repository's promises: environment.yml agrees with pyproject, README's test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


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
