"""Where everything lives: argument, then environment variable, then default, decided in one module."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stroke_helpers import locations
from stroke_helpers.locations import NotACheckoutError, NotADatasetError

PACKAGE = Path(locations.__file__).parent


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("STROKE_DATA_DIR", "STROKE_RESULTS", "STROKE_PRESET", "STROKE_REAL_CT", "STROKE_CT_TEMPLATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_argument_then_environment_then_default(clean_env, monkeypatch):
    work = clean_env
    assert locations.data_root() == work / "data"
    assert locations.dataset("synthetic") == work / "data" / "synthetic"
    assert locations.atlas() == work / "data" / "atlas"
    assert locations.results("cpu") == work / "results" / "cpu" and not locations.results_given()
    monkeypatch.setenv("STROKE_DATA_DIR", str(work / "env"))
    monkeypatch.setenv("STROKE_RESULTS", str(work / "runs"))
    assert locations.dataset("synthetic") == work / "env" / "synthetic"
    assert locations.results("cpu") == work / "runs" and locations.results_given()
    assert locations.dataset("synthetic", work / "arg") == work / "arg"  # an argument wins
    assert locations.results("cpu", "given") == Path("given")
    assert locations.chapter_preset("cpu") == "cpu"
    monkeypatch.setenv("STROKE_PRESET", "smoke")
    assert locations.chapter_preset("cpu") == "smoke"


def test_a_notebook_finds_the_same_data_as_the_command_line(clean_env, monkeypatch):
    (clean_env / "notebooks").mkdir()
    monkeypatch.chdir(clean_env / "notebooks")  # where Jupyter starts a chapter
    assert locations.data_root() == clean_env / "data"
    assert locations.results("smoke") == clean_env / "results" / "smoke"


def test_one_not_a_dataset_error(clean_env, phantom_root):
    assert locations.require_dataset(phantom_root) == phantom_root
    (clean_env / "empty" / "TRAINING").mkdir(parents=True)
    (clean_env / "thesis.txt").write_text("chapter 1")
    for folder, why in (("missing", "no such folder"), ("empty", "no TRAINING/case_N folders"), (".", "no TRAINING")):
        with pytest.raises(NotADatasetError, match=why) as err:
            locations.require_dataset(clean_env / folder, "make one")
        assert str(err.value).count("\n") == 0 and str(err.value).endswith("make one")


def test_reference_files_are_found_only_where_told(clean_env, monkeypatch):
    assert locations.reference_ct() is None and locations.ct_template() is None
    reference = clean_env / "data" / "reference"
    reference.mkdir(parents=True)
    (reference / "real_ct.nii.gz").write_bytes(b"")
    (reference / "scct_stripped_hu.nii.gz").write_bytes(b"")
    assert locations.reference_ct() == reference / "real_ct.nii.gz"
    assert locations.ct_template() == reference / "scct_stripped_hu.nii.gz"
    monkeypatch.setenv("STROKE_REAL_CT", str(clean_env / "nowhere.nii"))  # named but absent: none
    assert locations.reference_ct() is None


def test_checkout_only_things_say_so_from_an_installed_package(monkeypatch, tmp_path):
    assert locations.notebooks() == PACKAGE.parent / "notebooks"  # the tests run from a checkout
    assert locations.shipped_checkpoint() == PACKAGE.parent / "checkpoints" / "cpu"
    monkeypatch.setattr(locations, "_PACKAGE_PARENT", tmp_path / "site-packages")  # as a wheel installs it
    assert not locations.in_checkout()
    for what in (locations.notebooks, locations.shipped_checkpoint):
        with pytest.raises(NotACheckoutError, match="installed, not run from a clone"):
            what()
    from stroke_helpers import shipped

    assert shipped.manifest() is None  # no shipped checkpoint: the chapters need the grid, nothing breaks


def test_package_code_never_reads_beside_the_checkout():
    """Only locations.py knows a location; nothing reads ../shared (the tests may)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if '"shared"' in text or "'shared'" in text or "../shared" in text:
            offenders.append(f"{path.name}: shared")
        reads_env = re.search(r"environ[^\n]*[\"']STROKE_|getenv\([\"']STROKE_", text)
        if path.name != "locations.py" and ("parents[1]" in text or "Path(__file__)" in text or reads_env):
            offenders.append(f"{path.name}: a location of its own")
    assert offenders == []


def test_the_atlas_command_uses_the_same_data_folder(clean_env, monkeypatch):
    monkeypatch.setenv("STROKE_DATA_DIR", str(clean_env / "d"))
    result = subprocess.run(
        [sys.executable, str(PACKAGE.parent / "data_download.py"), "atlas", "--from", str(clean_env / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and str(clean_env / "none") in result.stderr
    assert not (clean_env / "d" / "atlas").exists()  # nothing half-installed
