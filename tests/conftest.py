"""Shared fixtures: a small phantom dataset (generated once) and a writer for hand-made cases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from stroke_helpers.isles import write_case
from stroke_helpers.phantom import PhantomConfig, generate_dataset

REAL_CT = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "SMIR.Brain.XX.O.CT.345562.nii"
ATLAS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "atlas"
CT_TEMPLATE = Path(__file__).resolve().parents[1].parent / "shared" / "ct-template" / "scct_stripped_hu.nii.gz"
TOKENS_3D = ("CT", "CBF", "CBV", "MTT", "Tmax", "OT")


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system chromium (``$STROKE_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on PATH)."""
    found = os.environ.get("STROKE_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    return found if found and Path(found).exists() else None


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser); skips, saying why, without either."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is missing: pip install -e '.[test]'"
    )
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium found (apt-get install chromium, or set STROKE_CHROMIUM); browser tests skipped")
    with sync_api.sync_playwright() as p:
        quiet = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu", *quiet])
        yield b
        b.close()


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A synthetic ISLES-layout dataset: 6 training cases (some patients with two slabs), 2 test."""
    out = tmp_path_factory.mktemp("phantom") / "synthetic"
    config = PhantomConfig(atlas=str(ATLAS_DIR) if ATLAS_DIR.is_dir() else None)
    return generate_dataset(out, train_cases=6, test_cases=2, seed=7, config=config, workers=1, progress=False)


@pytest.fixture(scope="session")
def smoke_grid(phantom_root, tmp_path_factory) -> Path:
    """The three All runs, MONAI's AttentionUnet on All, the threshold baselines' scores and both
    cascades of a smoke grid on the phantom (what chapters 2-5 and the report read)."""
    from stroke_helpers.grid import CASCADES, EXTRA_RUNS, ROWS, TABLE2, Grid

    results = tmp_path_factory.mktemp("results")
    grid = Grid(phantom_root, results, "smoke", progress=False, options={"device": "cpu"})  # whatever "auto" finds
    for row in ROWS:
        grid.run(row, TABLE2[-1])
    for row, modalities in EXTRA_RUNS:
        grid.run(row, modalities)
    grid.thresholds()
    for folder in CASCADES:
        grid.cascade(folder)
    return grid.results


def make_case(
    split_dir: Path, number: int = 1, shape=(32, 32, 2), frames: int = 10, seed: int = 0, **overrides
) -> Path:
    """Write a small, valid ISLES case with random content through the phantom's writer.

    ``overrides`` replace or drop (value ``None``) volumes by token.
    """
    rng = np.random.default_rng(seed)
    vols = {
        "CT": rng.integers(0, 80, shape),
        "CBF": rng.integers(1, 600, shape),
        "CBV": rng.integers(1, 90, shape),
        "MTT": rng.uniform(1, 15, shape),
        "Tmax": rng.uniform(0, 15, shape),
        "OT": (rng.random(shape) > 0.8).astype(np.uint8),
        "4DPWI": rng.integers(0, 100, (*shape, frames)),
    }
    for k, v in overrides.items():
        if v is None:
            vols.pop(k)
        else:
            vols[k] = v
    ids = {t: 1000 * number + i for i, t in enumerate(("4DPWI", *TOKENS_3D))}
    return write_case(split_dir, number, vols, (0.976562, 0.976562, 5.0003), ids, time_step=1.5)
