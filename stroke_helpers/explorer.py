"""The classroom explorer app: one study at a time, in tabs, without code on the screen.

``python -m stroke_helpers explore [--data DIR] [--run RUN] [--port P]`` serves
``notebooks/explorer.ipynb`` (one call: :meth:`Explorer.from_environment`) with Voilà on
127.0.0.1. Tabs: the maps with window/level, the 4D series with its time-attenuation curves,
the classical thresholds, and with a trained run its prediction against the expert mask
(threshold slider, Dice, precision) and its attention per decoder level and synthetic map ``Ms``.
Without a run it shows the shipped checkpoint's cascade when that was trained on the data
(:mod:`stroke_helpers.shipped`), else the data views and how to train a run.
"""

from __future__ import annotations

import html
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import ipywidgets as W

from . import locations, shipped
from .chapters import notebook_paths
from .datasets import largest_lesion_slice
from .isles import discover_cases, load_study
from .modalities import MODALITIES, channel_index
from .runs import ResultsFolder, RunFolder, in_shipped_checkpoint
from .widgets import AttentionExplorer, ClassicalExplorer, SeriesViewer, StudyBrowser, ThresholdExplorer

NOTEBOOK = "explorer.ipynb"  # in the checkout's notebooks/ (locations.notebooks)
TABS = ("Maps", "4D series", "Classical thresholds", "Prediction", "Attention and Ms")
HOW_TO_TRAIN = (
    "No trained run given, so only the data views. Train one (about a minute on a CPU):<br>"
    "<code>python -m stroke_helpers train --preset smoke --data {data} --out runs/smoke</code><br>"
    "then <code>python -m stroke_helpers explore --data {data} --run runs/smoke</code> "
    "(a cascade folder from <code>reproduce</code>, e.g. <code>results/cpu/runs/cascade</code>, also shows Ms)."
)


def check_run(run: str | Path | None) -> Path | None:
    if run is None or str(run) == "":
        return None
    folder = RunFolder(run)
    if not folder.exists():
        raise FileNotFoundError(f"{run}: not a trained run (no {folder.config.name} or {folder.cascade.name})")
    return folder.path


def run_outputs(predictor, images) -> dict:
    """A run applied to one study's slices ``images (Z, 5, S, S)``: probabilities, and per decoder
    level the attention maps and the mean positive similarities; ``ms`` for a cascade (else None)."""
    import torch

    with torch.no_grad():
        x = images[:, predictor.channels]
        ms = predictor.synthetic_map(images) if predictor.cascade else None
        if ms is not None:
            x = torch.cat([x, ms], dim=1)
        out = predictor.model.float().cpu()(x.float(), attention=True)
    return {
        "probabilities": torch.sigmoid(out.logits[:, 0]).numpy(),
        "attention": {lvl: g.attention[:, 0].numpy() for lvl, g in out.attention.items()},
        "similarities": {lvl: g.similarities.mean(1).numpy() for lvl, g in out.attention.items()},
        "ms": None if ms is None else ms[:, 0].numpy(),
    }


class Explorer:
    """The app: a study picker above tabs whose viewers are built for the study when first shown."""

    def __init__(self, data: str | Path, run: str | Path | None = None):
        self.data = locations.require_dataset(data)
        self.run = check_run(run)
        self.predictor = None
        val: list[str] = []
        if self.run is not None:
            from .inference import Predictor

            self.predictor = Predictor(self.run, device="cpu")
            val = self.predictor.split["val"]
        cases = discover_cases(self.data)
        self.cases = {f"TRAINING/{c.name}": c for c in cases}
        options = [(f"{n} (validation)" if n in val else n, n) for n in self.cases]
        first = next((n for n in self.cases if n in val), next(iter(self.cases)))
        self.study = W.Dropdown(
            options=options, value=first, description="study", style={"description_width": "initial"}
        )
        self.tabs = W.Tab(children=[W.VBox() for _ in TABS], titles=TABS)
        self.status = W.HTML()
        self.viewers: dict[str, object] = {}
        self._built: dict[str, str] = {}
        self._loaded: tuple[str, object] | None = None
        self.study.observe(lambda _c: self._show(), names="value")
        self.tabs.observe(lambda _c: self._show(), names="selected_index")
        shipped_note = " (the shipped checkpoint)" if self.run and in_shipped_checkpoint(self.run) else ""
        run_line = f"run <code>{html.escape(str(self.run))}</code>{shipped_note}" if self.run else "no trained run"
        header = W.HTML(f"data <code>{html.escape(str(self.data))}</code>, {run_line}")
        self.widget = W.VBox([header, self.study, self.status, self.tabs])
        self.widget.add_class("stroke-explorer")
        self._show()

    @classmethod
    def from_environment(cls, preset: str = "cpu", data: str = "", results: str = "") -> Explorer:
        """What ``explore`` passes (``$STROKE_EXPLORE_DATA``, ``$STROKE_EXPLORE_RUN``); without
        them (a notebook run by hand or by CI), the notebook parameters' data and the cascade of
        their results when it has been trained (resolved as the chapters resolve them)."""
        if locations.EXPLORE_DATA_ENV in os.environ:
            return cls(os.environ[locations.EXPLORE_DATA_ENV], os.environ.get(locations.EXPLORE_RUN_ENV) or None)
        _, data, results = notebook_paths(preset, data, results)
        cascade = ResultsFolder(results).run("cascade")
        return cls(data, cascade.path if cascade.is_cascade else None)

    def load(self):
        name = self.study.value
        if self._loaded is None or self._loaded[0] != name:
            self._loaded = (name, load_study(self.cases[name]))
        return self._loaded[1]

    def _show(self) -> None:
        """Build the selected tab's viewer for the selected study (once per study)."""
        tab = TABS[self.tabs.selected_index or 0]
        if self._built.get(tab) == self.study.value:
            return
        self.status.value = "<i>loading ...</i>"
        try:
            content = self._build(tab)
            self.status.value = ""
        except Exception as exc:  # one line in the app, not a traceback
            content = W.HTML("")
            self.status.value = (
                f'<span class="stroke-error" style="color:#b00">error: {html.escape(str(exc).splitlines()[0])}</span>'
            )
        self._built[tab] = self.study.value
        self.tabs.children = [content if t == tab else c for t, c in zip(TABS, self.tabs.children)]

    def _build(self, tab: str) -> W.Widget:
        study = self.load()
        if tab == "Maps":
            viewer = StudyBrowser([study])
        elif tab == "4D series":
            viewer = SeriesViewer(study)
        elif tab == "Classical thresholds":
            viewer = ClassicalExplorer(study)
        elif self.predictor is None:
            return W.HTML(HOW_TO_TRAIN.format(data=html.escape(str(self.data))))
        else:
            from .datasets import preprocess_study

            images, mask, _ = preprocess_study(study, self.predictor.size)
            out = run_outputs(self.predictor, images)
            truth = mask.numpy().astype(bool)
            tmax = images[:, channel_index("Tmax")].numpy()
            if tab == "Prediction":
                viewer = ThresholdExplorer([out["probabilities"]], [truth], images=[tmax], names=[study.name])
            else:
                if not out["attention"]:
                    return W.HTML("This run has no attention gates (trained with <code>--no-attention</code>).")
                channels = [MODALITIES[c] for c in self.predictor.channels]
                viewer = AttentionExplorer(
                    images[:, self.predictor.channels].numpy(),
                    truth,
                    out["attention"],
                    out["similarities"],
                    channels,
                    out["ms"],
                )
                viewer.index.value = largest_lesion_slice(truth)
        self.viewers[tab] = viewer
        viewer.render()
        return viewer.widget

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def default_run(data: Path, run: str | Path | None) -> Path | None:
    """``run``, or without one the shipped cascade when it was trained on ``data`` (said in a line)."""
    if run is None and shipped.fits(data):
        run = ResultsFolder(shipped.repository_bundle()).run("cascade").path
        print(f"no --run: showing the shipped checkpoint's cascade, {run}")
    return check_run(run)


def serve(data: str | Path | None, run: str | Path | None, port: int = 8866, open_browser: bool = True) -> int:
    """Serve the app with Voilà on 127.0.0.1 until interrupted; Voilà's exit status."""
    data = locations.require_dataset(locations.dataset("synthetic", data)).resolve()
    run = default_run(data, run)
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: not a port number (1-65535)")
    if importlib.util.find_spec("voila") is None:
        raise RuntimeError("voila is not installed: pip install voila")
    notebook = locations.notebooks() / NOTEBOOK
    if not notebook.exists():
        raise FileNotFoundError(f"{notebook}: the app's notebook is missing")
    env = {
        **os.environ,
        locations.EXPLORE_DATA_ENV: str(data),
        locations.EXPLORE_RUN_ENV: str(run.resolve()) if run else "",
    }
    cmd = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--Voila.ip=127.0.0.1"]
    cmd += ["--show_tracebacks=True", *([] if open_browser else ["--no-browser"])]
    print(f"explorer: http://127.0.0.1:{port}/  (data {data}; {f'run {run}' if run else 'no run'}); Ctrl+C stops it")
    voila = subprocess.Popen(cmd, env=env)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:  # Ctrl+C or SIGTERM here stops Voila (and with it its kernels) too
        return voila.wait()
    except KeyboardInterrupt:
        voila.terminate()
        try:
            voila.wait(15)
        except subprocess.TimeoutExpired:
            voila.kill()
        return 0
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
