"""The widgets in a real browser: Debian's chromium driven by Playwright for Python.

The tests start JupyterLab and the Voilà app (``python -m stroke_helpers explore``) on
127.0.0.1, move a slider with the keyboard, and assert that the picture changed (screenshots
compared) and that no error appeared in the page, the viewer or the kernel's output. They skip
with a message where Playwright or a chromium is missing (``apt-get install chromium``,
``pip install -e ".[test]"``; Playwright is pointed at the system browser, never downloads one).
The app's server is also checked over plain HTTP: only its token (or the cookie that a visit with
it sets) opens the app, and requests with a foreign ``Host`` or ``Origin`` are refused.

``STROKE_SCREENSHOTS=docs python -m pytest tests/test_browser.py`` also saves what the browser
showed (``docs/explorer.png`` is README's screenshot of the app, ``docs/jupyterlab_01.png``).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the page's own resources may point at a CDN; there is no network here, and that is not an error
IGNORED_CONSOLE = ("Failed to load resource", "net::ERR_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # it answers
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {seconds} s:\n{log.read_text()[-3000:]}")


def start(cmd: list[str], url: str, tmp: Path, env: dict) -> subprocess.Popen:
    log = tmp / "server.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True
    )
    try:
        wait_for_http(url, proc, log)
    except Exception:
        proc.terminate()
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it started (its own process group: Voilà, kernels)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    time.sleep(1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
    except ProcessLookupError:
        pass


def server_env(phantom_root: Path, tmp: Path) -> dict:
    """Kernels import this checkout, read the phantom data, write nothing outside ``tmp``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "STROKE_DATA_DIR": str(phantom_root.parent),
        "STROKE_PRESET": "cpu",  # whose dataset folder is "synthetic", the phantom's
        "STROKE_RESULTS": str(tmp / "results"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter_runtime"),
        "MPLBACKEND": "Agg",
    }


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: (
            errors.append(f"console: {m.text}")
            if m.type == "error" and not any(s in m.text for s in IGNORED_CONSOLE)
            else None
        ),
    )
    return errors


WATCH = """(img) => {
    window.__t0 = null; window.__t1 = null;
    document.addEventListener('keydown', () => { window.__t0 = performance.now(); }, {capture: true, once: true});
    new MutationObserver((_, obs) => { window.__t1 = performance.now(); obs.disconnect(); })
        .observe(img, {attributes: true, attributeFilter: ['src']});
}"""
OPPOSITE = {"ArrowLeft": "ArrowRight", "ArrowRight": "ArrowLeft"}


def move_slider_and_compare(page, viewer, slider_index: int = 0, key: str = "ArrowLeft") -> float:
    """Screenshot the viewer's picture, move one of its sliders one step with the keyboard (the
    other way when it is at its end), wait for the new picture and assert that it differs; the
    browser's time from key press to new picture (ms)."""
    image = viewer.locator("img").first
    image.wait_for()
    page.wait_for_timeout(300)
    before = image.screenshot()
    for k in (key, OPPOSITE[key]):
        page.evaluate(WATCH, image.element_handle())
        viewer.locator(".noUi-handle").nth(slider_index).focus()
        page.keyboard.press(k)
        try:
            page.wait_for_function("window.__t1 !== null", timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the slider was at its end
            continue
    else:
        pytest.fail(f"no new picture after {key} and {OPPOSITE[key]} on slider {slider_index}")
    ms = page.evaluate("window.__t1 - window.__t0")
    page.wait_for_timeout(200)
    after = image.screenshot()
    assert after != before, "the picture did not change after the slider moved"
    return ms


def save_screenshot(page, name: str, element: str | None = None) -> None:
    """With ``$STROKE_SCREENSHOTS``, save the page (or one element of it) there as ``name``."""
    if os.environ.get("STROKE_SCREENSHOTS"):
        path = Path(os.environ["STROKE_SCREENSHOTS"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (page.locator(element).first if element else page).screenshot(path=str(path))


def assert_no_errors(page, errors: list[str]) -> None:
    viewer_errors = [t for t in page.locator(".stroke-error").all_inner_texts() if t.strip()]
    assert not viewer_errors, viewer_errors
    assert not errors, errors


#: True once a cell of the open notebook runs or has run (its prompt shows ``[*]`` or ``[n]``).
_STARTED = "() => [...document.querySelectorAll('.jp-InputArea-prompt')].some(e => /\\[[0-9*]/.test(e.textContent))"


def run_all_until(page, selector: str, tmp_path: Path):
    """Run All Cells from JupyterLab's menu, then wait for ``selector``. A menu click that started
    nothing (no cell prompt moved in 30 s; seen on a loaded machine) is clicked once more; a
    timeout says what the cells' prompts showed and leaves a screenshot in ``tmp_path``."""
    for attempt in range(2):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(_STARTED, timeout=30_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: nothing started
            if attempt:
                raise
    target = page.locator(selector).first
    try:
        target.wait_for(timeout=120_000)
    except Exception as exc:  # noqa: BLE001 - playwright's TimeoutError, with what the page showed
        page.screenshot(path=str(tmp_path / "timeout.png"))
        prompts = page.locator(".jp-InputArea-prompt").all_inner_texts()
        pytest.fail(
            f"{selector} did not appear in 120 s; cell prompts {prompts}; screenshot {tmp_path}/timeout.png: {exc}"
        )
    return target


def test_notebook_01_study_browser_in_jupyterlab(browser, phantom_root, tmp_path):
    """Notebook 01 up to its StudyBrowser cell, run in JupyterLab; a slice slider moves the picture."""
    nb = json.loads((ROOT / "notebooks" / "01_data_exploration.ipynb").read_text())
    cells = []
    for cell in nb["cells"]:
        cell["outputs"] = [] if cell["cell_type"] == "code" else cell.get("outputs")
        if cell["cell_type"] == "code":
            cell["execution_count"] = None
        cells.append({k: v for k, v in cell.items() if v is not None})
        if "StudyBrowser(" in "".join(cell["source"]) and cell["cell_type"] == "code":
            break
    else:
        pytest.fail("notebook 01 has no StudyBrowser cell")
    nb["cells"] = cells
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01.ipynb").write_text(json.dumps(nb))
    port, token = free_port(), "stroke-test"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=None"]
    cmd += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--allow-root"]
    server = start(
        cmd, f"http://127.0.0.1:{port}/api/status?token={token}", tmp_path, server_env(phantom_root, tmp_path)
    )
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors = watch_errors(page)
        page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/01.ipynb?token={token}&reset")
        page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
        viewer = run_all_until(page, ".stroke-viewer", tmp_path)
        move_slider_and_compare(page, viewer)  # the slice slider
        move_slider_and_compare(page, viewer, slider_index=1, key="ArrowRight")  # CT window, lower end
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        kernel_errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).all_inner_texts()
        assert not [t for t in kernel_errors if "Error" in t or "Traceback" in t], kernel_errors
        assert_no_errors(page, errors)
        save_screenshot(page, "jupyterlab_01.png")
    finally:
        stop(server)


@pytest.fixture(scope="module")
def tiny_run(phantom_root, tmp_path_factory) -> Path:
    """A one-epoch smoke model on the phantom: enough to draw a prediction and attention."""
    from stroke_helpers.runs import TrainConfig
    from stroke_helpers.train import train

    out = tmp_path_factory.mktemp("explorer_run") / "run"
    train(TrainConfig(data=str(phantom_root), out=str(out), preset="smoke", epochs=1, progress=False))
    return out


def start_explorer(args: list[str], tmp: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """``explore ARGS`` on a free port: the server and the URL it announced (with its token)."""
    port = free_port()
    cmd = [sys.executable, "-m", "stroke_helpers", "explore", *args, "--port", str(port), "--no-browser"]
    server = start(cmd, f"http://127.0.0.1:{port}/login", tmp, env)
    announced = re.search(r"explorer: (http://\S+)", (tmp / "server.log").read_text())
    if announced is None:
        stop(server)
        pytest.fail(f"explore announced no URL:\n{(tmp / 'server.log').read_text()[-3000:]}")
    return server, announced.group(1)


def test_explorer_app_in_voila(browser, phantom_root, tiny_run, tmp_path):
    """``explore`` serves the app at the URL it announces; each tab draws, sliders move pictures,
    and no error shows."""
    cmd = ["--data", str(phantom_root), "--run", str(tiny_run)]
    server, url = start_explorer(cmd, tmp_path, server_env(phantom_root, tmp_path))
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[0-9a-f]{48}", url), url
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors = watch_errors(page)
        page.goto(url)
        maps = page.locator(".stroke-viewer").first
        maps.wait_for(timeout=120_000)
        timings = {"Maps": move_slider_and_compare(page, maps)}
        save_screenshot(page, "explorer.png", ".stroke-explorer")
        for tab in ("4D series", "Classical thresholds", "Prediction", "Attention and Ms"):
            page.get_by_role("tab", name=tab).click()
            viewer = page.locator(".stroke-viewer:visible").first
            viewer.wait_for(timeout=60_000)
            timings[tab] = move_slider_and_compare(page, viewer, key="ArrowRight")
        print("browser redraw, key press to new picture (ms):", {k: round(v) for k, v in timings.items()})
        assert_no_errors(page, errors)
        assert "Traceback" not in page.content()
    finally:
        stop(server)


# Put on the server's PYTHONPATH (its kernels import it): the 4D series viewer fails, as a broken one would.
BREAK_SERIES_VIEWER = """
import importlib.abc
import importlib.machinery
import sys


class BreakSeriesViewer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "stroke_helpers.widgets":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)

            def render(self):
                raise RuntimeError('the 4D series viewer broke on purpose\\n  File "widgets.py", line 1, in render')

            module.SeriesViewer.render = render

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, BreakSeriesViewer())
"""


@pytest.fixture(scope="module")
def explorer_server(phantom_root, tmp_path_factory):
    """``explore`` without a run, its 4D series viewer broken (:data:`BREAK_SERIES_VIEWER`):
    ``(url with token, port, token, server log)``."""
    tmp = tmp_path_factory.mktemp("explorer_server")
    (tmp / "hook").mkdir()
    (tmp / "hook" / "sitecustomize.py").write_text(BREAK_SERIES_VIEWER)
    env = server_env(phantom_root, tmp)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp / "hook"), env["PYTHONPATH"]])
    server, url = start_explorer(["--data", str(phantom_root)], tmp, env)
    port, token = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=(\w+)", url).groups()
    try:
        yield url, int(port), token, tmp / "server.log"
    finally:
        stop(server)


def request(port: int, path: str, headers: dict | None = None, method: str = "GET", host: str | None = None):
    """One request, redirects not followed: ``(status, headers, body)``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, headers={"Host": host or f"127.0.0.1:{port}", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def websocket(origin: str, **credentials: str) -> dict:
    """The headers of a websocket handshake from a page at ``origin`` (plus ``Cookie=...``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    return {**headers, "Sec-WebSocket-Key": key, "Origin": origin, **credentials}


APP_CONTENT = (b"kernelId", b"application/vnd.jupyter.widget-view+json")  # what the rendered app page holds


@pytest.fixture(scope="module")
def app_page(explorer_server):
    """The app as its token opens it: ``(kernel id, login cookie)``."""
    url, port, token, _ = explorer_server
    status, headers, body = request(port, f"/?token={token}")
    assert status == 200 and all(s in body for s in APP_CONTENT), (status, body[:500])
    kernel = re.search(rb'"kernelId": "([0-9a-f-]+)"', body).group(1).decode()
    return kernel, headers["set-cookie"].split(";")[0]


def test_explorer_opens_only_with_its_token(explorer_server, app_page):
    url, port, token, _ = explorer_server
    for path in ("/", "/?token=0123abcd", "/api/kernels", f"/api/kernels/{app_page[0]}"):
        status, headers, body = request(port, path)
        login = status == 302 and headers["location"].startswith("/login?next=")
        assert login or (status == 403 and path.startswith("/api/")), (path, status)
        assert not any(s in body for s in APP_CONTENT)
    status, _, body = request(port, "/login?next=%2F")
    assert status == 200 and b"token" in body.lower() and not any(s in body for s in APP_CONTENT)
    assert request(port, f"/api/kernels/{app_page[0]}", {"Cookie": app_page[1]})[0] == 200
    assert request(port, f"/api/kernels/{app_page[0]}?token={token}")[0] == 200
    assert request(port, "/voila/files/explorer.ipynb")[0] == 403  # no files from the notebook folder


def test_explorer_refuses_foreign_hosts(explorer_server, app_page):
    """DNS rebinding: a page at evil.example that resolves to 127.0.0.1 sends ``Host: evil.example``."""
    url, port, token, log = explorer_server
    kernel, cookie = app_page
    evil = f"evil.example:{port}"
    assert request(port, f"/?token={token}", host=evil)[0] == 403
    assert request(port, f"/api/kernels/{kernel}", {"Cookie": cookie}, host=evil)[0] == 403
    handshake = websocket(f"http://{evil}", Cookie=cookie)
    assert request(port, f"/api/kernels/{kernel}/channels", handshake, host=evil)[0] == 403
    assert request(port, f"/api/kernels/{kernel}?token={token}", host=f"localhost:{port}")[0] == 200
    assert "Blocking request with non-local 'Host' evil.example" in log.read_text()


def test_explorer_refuses_foreign_origins(explorer_server, app_page):
    """A page elsewhere gets the login cookie sent along at best: the kernel websocket and the
    API refuse it from a foreign ``Origin``; from the app's own origin the websocket opens."""
    url, port, token, _ = explorer_server
    kernel, cookie = app_page
    channels = f"/api/kernels/{kernel}/channels"
    status, _, body = request(port, channels, websocket("http://evil.example", Cookie=cookie))
    assert status == 403 and b"Cross origin websockets not allowed" in body
    assert request(port, channels, websocket(f"http://127.0.0.1:{port}"))[0] == 403  # no cookie, no token
    for method, path in (("GET", f"/api/kernels/{kernel}"), ("DELETE", f"/api/kernels/{kernel}")):
        status, headers, _ = request(port, path, {"Origin": "http://evil.example", "Cookie": cookie}, method)
        assert status == 404 and "access-control-allow-origin" not in headers, (method, status)
    assert request(port, f"/api/kernels/{kernel}?token={token}")[0] == 200  # the DELETE did nothing
    assert request(port, channels, websocket(f"http://127.0.0.1:{port}", Cookie=cookie))[0] == 101


def test_explorer_shows_a_failing_viewer_in_one_line(browser, explorer_server):
    """A viewer that raises: one ``error:`` line in the app, no traceback or code in the page,
    the traceback in the server log."""
    url, _, _, log = explorer_server
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(url)
    page.locator(".stroke-viewer").first.wait_for(timeout=120_000)
    page.get_by_role("tab", name="4D series").click()
    error = page.locator(".stroke-error").first
    error.wait_for(timeout=60_000)
    assert error.inner_text() == "error: the 4D series viewer broke on purpose (details in the server log)"
    shown = page.locator("body").inner_text()
    assert "Traceback" not in page.content() and "widgets.py" not in shown and "File " not in shown, shown
    text = log.read_text()
    assert "explorer: the 4D series tab of TRAINING/" in text and 'File "widgets.py", line 1' in text
    page.close()
