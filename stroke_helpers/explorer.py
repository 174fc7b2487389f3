"""The classroom explorer app: one study at a time, in tabs, without code on the screen.

``python -m stroke_helpers explore [--data DIR] [--run RUN] [--port P]`` serves
``notebooks/explorer.ipynb`` (one call: :func:`app`) with Voilà on 127.0.0.1, behind a token made
for each start (:func:`serve` says what the server checks). Tabs: the maps with window/level, the
4D series with its time-attenuation curves, the classical thresholds, and with a trained run its
prediction against the expert mask (threshold slider, Dice, precision) and its attention per
decoder level and synthetic map ``Ms``.
Without a run it shows the shipped checkpoint's cascade when that was trained on the data
(:mod:`stroke_helpers.shipped`), else the data views and how to train a run.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import webbrowser
from pathlib import Path

import ipywidgets as W

from . import locations, shipped
from .chapters import notebook_paths
from .datasets import largest_lesion_slice
from .isles import discover_cases, load_study
from .modalities import MODALITIES, channel_index
from .runs import ResultsFolder, RunFolder, in_shipped_checkpoint
from .widgets import AttentionExplorer, ClassicalExplorer, SeriesViewer, StudyBrowser, ThresholdExplorer

TOKEN_BYTES = 24  # the per-start token: 48 hex digits
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


def check_run_loads(run: Path) -> None:
    """Load ``run`` as the app will (:class:`~stroke_helpers.inference.Predictor`: its model or
    both cascade stages, and its split), so that a broken run is refused in one line
    (:class:`~stroke_helpers.runs.RunError`) before the server starts."""
    from .inference import Predictor
    from .runs import RunError

    try:
        Predictor(run, device="cpu").split  # noqa: B018 - read it: the app lists the validation studies
    except (RunError, OSError) as exc:
        raise RunError(str(exc).strip().splitlines()[0]) from None
    except Exception as exc:  # noqa: BLE001 - whatever else breaks a run, said in one line
        raise RunError(f"{run}: cannot be loaded ({one_line(exc)})") from None


def one_line(exc: BaseException) -> str:
    """An exception in one readable line: its message's first line (with its type where the
    message alone would not say what happened, e.g. a ``KeyError``)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc  # not its repr
    lines = str(text).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if first and isinstance(exc, (OSError, ValueError, RuntimeError)):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def server_log(text: str) -> None:
    """Write ``text`` to the server's log (the terminal that runs ``explore``), never to the page.

    In a kernel ``sys.stderr`` is the page's stderr stream and its ``fileno()`` the kernel's own
    standard error, which Voilà's terminal receives; elsewhere that is standard error itself."""
    data = text if text.endswith("\n") else text + "\n"
    try:
        os.write(sys.stderr.fileno(), data.encode(errors="replace"))
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        print(data, end="", file=sys.__stderr__ or sys.stderr)


def error_html(exc: BaseException, what: str) -> str:
    """The page's line for an error of the app (``error: ...``, no traceback, no code); the
    traceback goes to the server log."""
    server_log(f"explorer: {what} failed:\n{''.join(traceback.format_exception(exc))}")
    return (
        f'<span class="stroke-error" style="color:#b00">error: {html.escape(one_line(exc))}'
        " (details in the server log)</span>"
    )


def app(preset: str = "cpu", data: str = "", results: str = ""):
    """The notebook's one call: :meth:`Explorer.from_environment`, or where that fails its error
    in one line (the traceback in the server log), so that the page never shows code."""
    try:
        return Explorer.from_environment(preset, data, results)
    except Exception as exc:  # noqa: BLE001 - one line in the app, not a traceback
        return W.HTML(error_html(exc, "starting the app"))


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
        except Exception as exc:  # noqa: BLE001 - one line in the app, the traceback in the server log
            content = W.HTML("")
            self.status.value = error_html(exc, f"the {tab} tab of {self.study.value}")
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
                    architecture = html.escape(self.predictor.config.architecture)
                    why = (
                        "trained with <code>--no-attention</code>"
                        if architecture == "cross-attention"
                        else f"the {architecture} architecture returns none"
                    )
                    return W.HTML(f"This run shows no cross-attention maps ({why}).")
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


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:``port`` (bound as the server binds it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def voila_config(token: str) -> dict:
    """What the server enforces (Voilà 0.5 on jupyter_server 2; the only config file it reads):
    the token for every page, API and websocket request (``Voila.token``, checked by jupyter_server's
    identity provider; a visit with ``?token=`` sets a login cookie), ``Host`` headers limited to
    ``localhost`` and loopback addresses (``allow_remote_access`` off: DNS rebinding gets 403), no
    cross-origin access (``allow_origin`` empty: a foreign ``Origin`` on the kernel websocket gets
    403), no tracebacks in the page and no files served from the notebook folder. ``static_path``
    only lets jupyter_server draw its error pages (without it each refused websocket logs a
    traceback); it adds no route."""
    from jupyter_server import DEFAULT_STATIC_FILES_PATH

    tornado = {"allow_remote_access": False, "local_hostnames": ["localhost"], "allow_origin": ""}
    return {
        "Voila": {"token": token, "tornado_settings": {**tornado, "static_path": DEFAULT_STATIC_FILES_PATH}},
        "VoilaConfiguration": {"show_tracebacks": False, "file_allowlist": []},
    }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _open_browser_when_ready(url: str, port: int, voila: subprocess.Popen, folder: Path) -> None:
    """Open ``url`` once the server answers, through a local page that redirects to it (as Jupyter
    does), so that the token is not on the browser's command line for other users to read."""

    def target():
        end = time.monotonic() + 120
        while voila.poll() is None and time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.3)
                continue
            page = folder / "open.html"
            link = html.escape(url)
            _write_private(page, f'<meta http-equiv="refresh" content="0;url={link}"><a href="{link}">explorer</a>')
            webbrowser.open(page.as_uri(), new=2)
            return

    threading.Thread(target=target, daemon=True).start()


def serve(data: str | Path | None, run: str | Path | None, port: int = 8866, open_browser: bool = True) -> int:
    """Serve the app with Voilà on 127.0.0.1 until interrupted; Voilà's exit status.

    Before anything starts, in one line each: the data folder, the run (loaded as the app loads
    it), the port (free on 127.0.0.1; Voilà never moves to another one). The server then takes
    only requests that carry the token of this start (printed in the URL) or its cookie, with a
    local ``Host`` and no foreign ``Origin`` (:func:`voila_config`); errors show in the page as
    one line, their details in this terminal."""
    data = locations.require_dataset(locations.dataset("synthetic", data)).resolve()
    run = default_run(data, run)
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: not a port number (1-65535)")
    if importlib.util.find_spec("voila") is None:
        raise RuntimeError("voila is not installed: pip install voila")
    notebook = locations.notebooks() / NOTEBOOK
    if not notebook.exists():
        raise FileNotFoundError(f"{notebook}: the app's notebook is missing")
    if run is not None:
        check_run_loads(run)
    if port_in_use(port):
        raise RuntimeError(f"--port {port}: already in use on 127.0.0.1; pick another port with --port")
    env = {
        **os.environ,
        locations.EXPLORE_DATA_ENV: str(data),
        locations.EXPLORE_RUN_ENV: str(run.resolve()) if run else "",
    }
    token = secrets.token_hex(TOKEN_BYTES)  # as Jupyter makes one
    url = f"http://127.0.0.1:{port}/?token={token}"
    with tempfile.TemporaryDirectory(prefix="stroke-explore-") as folder:  # mode 0700
        _write_private(Path(folder) / "voila.json", json.dumps(voila_config(token)))
        cmd = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--Voila.ip=127.0.0.1"]
        cmd += ["--Voila.port_retries=0", "--no-browser", f"--Voila.config_file_paths={folder}"]
        print(f"explorer: {url}  (data {data}; {f'run {run}' if run else 'no run'}); Ctrl+C stops it", flush=True)
        voila = subprocess.Popen(cmd, env=env)
        if open_browser:
            _open_browser_when_ready(url, port, voila, Path(folder))
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
