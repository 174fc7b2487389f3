"""Where everything lives: data, results, the shipped checkpoint, the atlas, the notebooks.

The one module that knows a location. Each place is chosen as nilearn's fetchers choose theirs:
an argument, then an environment variable, then a default::

    data folder       argument  $STROKE_DATA_DIR     WORK/data
    a dataset         argument  -                    DATA/<name>       (synthetic, synthetic_smoke, isles2018, isles24)
    the atlas         argument  -                    DATA/atlas
    results folder    argument  $STROKE_RESULTS      WORK/results/<preset>
    a reference CT    argument  $STROKE_REAL_CT      DATA/reference/real_ct.nii(.gz)
    the CT template   argument  $STROKE_CT_TEMPLATE  DATA/reference/scct_stripped_hu.nii.gz
    a slice cache     argument  $STROKE_CACHE_DIR    DATASET/.cache, else (read-only data) CACHE/<name>-<hash>
    notebooks         -         -                    CHECKOUT/notebooks
    shipped checkpoint -        -                    CHECKOUT/checkpoints/cpu

``CACHE`` is ``$STROKE_CACHE_DIR`` when set, else the platform's cache folder
(``$XDG_CACHE_HOME`` or ``~/.cache``, ``/stroke_helpers``): a dataset in a read-only folder (a
class's shared copy) is used as it is, its slice cache written there instead.

``WORK`` is the working directory, or its parent when that is ``notebooks/`` (where Jupyter
starts a chapter), so a notebook and the command line find the same ``data/`` and ``results/``.
``CHECKOUT`` is the source checkout the package was imported from: the notebooks and the
shipped checkpoint live only there, and :func:`checkout` says so in one line when the package
runs from an installed wheel. Package code never reads anything beside the checkout.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .isles import IslesError, discover_cases

DATA_ENV = "STROKE_DATA_DIR"
RESULTS_ENV = "STROKE_RESULTS"
PRESET_ENV = "STROKE_PRESET"  # the chapters' preset (CI runs the committed notebooks with smoke)
REAL_CT_ENV = "STROKE_REAL_CT"
CT_TEMPLATE_ENV = "STROKE_CT_TEMPLATE"
CACHE_ENV = "STROKE_CACHE_DIR"
#: The slice cache's folder inside a dataset (:func:`cache`).
CACHE_NAME = ".cache"
#: What ``explore`` hands to the app's kernel: the data folder and the run it shows.
EXPLORE_DATA_ENV, EXPLORE_RUN_ENV = "STROKE_EXPLORE_DATA", "STROKE_EXPLORE_RUN"

_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


class NotADatasetError(IslesError):
    """A folder given as a dataset that holds no ISLES-layout cases."""


class NotACheckoutError(FileNotFoundError):
    """Something that only a source checkout has, asked for from an installed package."""


def checkout() -> Path:
    """The source checkout the package was imported from (it holds ``notebooks/``)."""
    if (_PACKAGE_PARENT / "pyproject.toml").is_file() and (_PACKAGE_PARENT / "notebooks").is_dir():
        return _PACKAGE_PARENT
    raise NotACheckoutError(
        f"{_PACKAGE_PARENT}: stroke_helpers is installed, not run from a clone of the repository; "
        "the notebooks and the shipped checkpoint are only in a clone (git clone, then pip install -e .)"
    )


def in_checkout() -> bool:
    try:
        checkout()
    except NotACheckoutError:
        return False
    return True


def notebooks() -> Path:
    """``CHECKOUT/notebooks``: the chapters and the explorer app's notebook."""
    return checkout() / "notebooks"


def shipped_checkpoint() -> Path:
    """``CHECKOUT/checkpoints/cpu``: the shipped checkpoint (:mod:`stroke_helpers.shipped`)."""
    return checkout() / "checkpoints" / "cpu"


def work() -> Path:
    """The folder ``data/`` and ``results/`` are looked for in: the working directory, or its
    parent when that is ``notebooks/`` (where Jupyter starts a chapter)."""
    cwd = Path.cwd()
    return cwd.parent if cwd.name == "notebooks" else cwd


def _given(path: str | os.PathLike | None) -> Path | None:
    return Path(path).expanduser() if path not in (None, "") else None


def _from_env(name: str) -> Path | None:
    return _given(os.environ.get(name))


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data folder: ``path``, else ``$STROKE_DATA_DIR``, else ``WORK/data``."""
    return _given(path) or _from_env(DATA_ENV) or work() / "data"


def dataset(name: str, path: str | os.PathLike | None = None) -> Path:
    """A dataset's folder: ``path``, else ``DATA/name`` (``synthetic``, ``isles2018``, ``isles24``, ...)."""
    return _given(path) or data_root() / name


def atlas(path: str | os.PathLike | None = None) -> Path:
    """The arterial territory atlas: ``path``, else ``DATA/atlas``."""
    return dataset("atlas", path)


def results(preset: str, path: str | os.PathLike | None = None) -> Path:
    """A results folder (what ``reproduce`` writes): ``path``, else ``$STROKE_RESULTS``, else
    ``WORK/results/PRESET``."""
    return _given(path) or _from_env(RESULTS_ENV) or work() / "results" / preset


def results_given(path: str | os.PathLike | None = None) -> bool:
    """Whether the results folder was named (argument or ``$STROKE_RESULTS``), not defaulted."""
    return (_given(path) or _from_env(RESULTS_ENV)) is not None


def chapter_preset(preset: str) -> str:
    """The chapters' preset: ``$STROKE_PRESET`` when set, else the notebook's parameter."""
    return os.environ.get(PRESET_ENV) or preset


def writable(path: str | os.PathLike) -> bool:
    """Whether files can be made in the folder ``path`` (or in the folder that would hold it)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def cache(data: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Where the slice cache of the dataset ``data`` is written: ``path``, else
    ``DATA/.cache`` when it can be written, else ``$STROKE_CACHE_DIR/<name>-<hash>``, else
    ``~/.cache/stroke_helpers/<name>-<hash>`` (``$XDG_CACHE_HOME`` when set), the hash that of
    the dataset's absolute path, so two read-only datasets never share a cache."""
    if _given(path) is not None:
        return _given(path)
    data = Path(data)
    own = data / CACHE_NAME
    if writable(own):
        return own
    base = _from_env(CACHE_ENV) or (_from_env("XDG_CACHE_HOME") or Path.home() / ".cache") / "stroke_helpers"
    digest = hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:12]
    return base / f"{data.resolve().name}-{digest}"


def caches(data: str | os.PathLike) -> list[Path]:
    """Where a slice cache of ``data`` may already be, in order: the dataset's own ``.cache``
    (made by whoever could write it), then :func:`cache`."""
    return list(dict.fromkeys([Path(data) / CACHE_NAME, cache(data)]))


def reference_ct(path: str | os.PathLike | None = None) -> Path | None:
    """A real ISLES 2018 CT to compare the phantom with: ``path``, else ``$STROKE_REAL_CT``, else
    ``DATA/reference/real_ct.nii(.gz)``, else training case 1 of ``DATA/isles2018``; None when
    there is none (it is never part of the repository)."""
    for candidate in (_given(path), _from_env(REAL_CT_ENV)):
        if candidate is not None:
            return candidate if candidate.is_file() else None
    reference = data_root() / "reference"
    isles = sorted((data_root() / "isles2018" / "TRAINING" / "case_1").glob("*.CT.*/*.nii*"))
    found = [p for p in (reference / "real_ct.nii", reference / "real_ct.nii.gz", *isles) if p.is_file()]
    return found[0] if found else None


def ct_template(path: str | os.PathLike | None = None) -> Path | None:
    """The real-CT template in HU (Rorden et al. 2012): ``path``, else ``$STROKE_CT_TEMPLATE``,
    else ``DATA/reference/scct_stripped_hu.nii.gz``; None when there is none."""
    candidate = _given(path) or _from_env(CT_TEMPLATE_ENV) or data_root() / "reference" / "scct_stripped_hu.nii.gz"
    return candidate if candidate.is_file() else None


def require_dataset(path: str | os.PathLike, hint: str = "get one: python data_download.py synthetic") -> Path:
    """``path`` when it is an ISLES-layout dataset (``TRAINING/case_N`` folders); otherwise the
    one "this is not a dataset" error, with ``hint`` saying how to make one."""
    path = Path(path)
    if not (path / "TRAINING").is_dir() or not discover_cases(path, "TRAINING"):
        why = "no such folder" if not path.exists() else "no TRAINING/case_N folders"
        raise NotADatasetError(f"{path}: not an ISLES-layout dataset ({why}); {hint}")
    return path
