"""The chapters as a whole: execute them with papermill, and publish executed ones into the
repository (the committed notebooks carry real outputs)."""

from __future__ import annotations

import time
from pathlib import Path

from . import locations
from .runs import ResultsFolder

NOTEBOOKS = (
    "01_data_exploration",
    "02_cross_attention_module",
    "03_multilevel_refinement_training",
    "04_cascade_synthetic_maps",
    "05_results_and_figures",
)


def run_notebooks(results: Path, parameters: dict, notebook_dir: Path | None = None) -> list[Path]:
    """Execute every chapter with papermill into ``RESULTS/notebooks``, in the chapters' own
    folder (default: the checkout's ``notebooks/``) so relative paths resolve as in Jupyter."""
    import papermill as pm

    notebook_dir = Path(notebook_dir or locations.notebooks())
    target = ResultsFolder(results).notebooks
    target.mkdir(parents=True, exist_ok=True)
    done = []
    for name in NOTEBOOKS:
        src = Path(notebook_dir) / f"{name}.ipynb"
        if not src.exists():
            raise FileNotFoundError(f"{src}: notebook missing")
        t0 = time.perf_counter()
        pm.execute_notebook(src, target / src.name, parameters=parameters, cwd=str(notebook_dir), progress_bar=False)
        print(f"notebook {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        done.append(target / src.name)
    return done


def publish_notebooks(executed: Path, notebook_dir: Path | None = None, names=NOTEBOOKS) -> list[Path]:
    """Copy executed chapters (``reproduce``'s ``OUT/notebooks``) over the repository's, with
    their outputs but without papermill's injected-parameters cell and run paths, so that the
    committed notebooks keep literal parameters that resolve on any machine."""
    import nbformat

    notebook_dir = Path(notebook_dir or locations.notebooks())
    done = []
    for name in names:
        nb = nbformat.read(Path(executed) / f"{name}.ipynb", as_version=4)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        papermill = nb.metadata.get("papermill", {})
        for key in ("input_path", "output_path", "parameters"):
            papermill.pop(key, None)
        nbformat.write(nb, Path(notebook_dir) / f"{name}.ipynb")
        done.append(Path(notebook_dir) / f"{name}.ipynb")
    return done
