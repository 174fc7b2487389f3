#!/usr/bin/env python
"""Widget redraw time: a slider change to a new picture, per viewer, in place vs rebuilt.

    python benchmarks/widgets_bench.py [--data DIR] [--run RUN] [--changes 15] [--out FILE.json]

Prints a table and writes JSON. Goal: a slider change redraws in under 200 ms on a
2-core CPU. "in place" is what the viewers do (update the one figure, encode a PNG for the
``Image`` widget); "rebuilt" draws a new figure every time (what the widgets did before), for
comparison. Times are in the kernel: the browser adds its round trip (the browser tests print it).
Without ``--run`` the prediction and attention viewers are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stroke_helpers.figures import figure_png  # noqa: E402


def timed_changes(viewer, slider, values, rebuild: bool) -> list[float]:
    """Milliseconds from setting ``slider.value`` to the PNG being ready, for each value."""
    viewer.render()
    out = []
    for v in values:
        if rebuild:
            viewer._held += 1  # set the value without the viewer's own redraw, then time a rebuilt figure
            slider.value = v
            viewer._held -= 1
            t0 = time.perf_counter()
            fig = viewer.figure()
            viewer.image.value = figure_png(fig)
            plt.close(fig)
        else:
            t0 = time.perf_counter()
            slider.value = v
        out.append(1000 * (time.perf_counter() - t0))
        assert viewer.error == "", viewer.error
    return out


def cycle(slider, n: int) -> list:
    """``n`` values that differ from one to the next, walking the slider back and forth."""
    lo, hi, step = slider.min, slider.max, getattr(slider, "step", 1) or 1
    span = np.arange(lo, hi + step / 2, step)[:40]
    if len(span) < 2:
        raise ValueError(f"slider {slider.description} has a single value")
    walk = np.concatenate([span, span[-2:0:-1]])
    values = [walk[(i + 1) % len(walk)] for i in range(n)]
    return [int(v) if isinstance(slider.value, int) else float(v) for v in values]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="ISLES-layout folder (default: DATA/synthetic)")
    ap.add_argument("--run", type=Path, help="a trained run or cascade (adds the prediction and attention viewers)")
    ap.add_argument("--changes", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "widgets.json")
    args = ap.parse_args(argv)

    from stroke_helpers import locations
    from stroke_helpers.explorer import TABS, Explorer
    from stroke_helpers.isles import discover_cases
    from stroke_helpers.widgets import ClassicalExplorer, SeriesViewer, StudyBrowser

    data = locations.dataset("synthetic", args.data)
    browser = StudyBrowser(discover_cases(data))
    study = browser.current
    series, classical = SeriesViewer(study), ClassicalExplorer(study)
    cases = [
        ("StudyBrowser (5 maps)", "slice", browser, browser.z),
        ("StudyBrowser (5 maps)", "Tmax window", browser, browser.windows["Tmax"]),
        ("SeriesViewer", "frame", series, series.t),
        ("ClassicalExplorer", "rCBF %", classical, classical.rcbf_percent),
    ]
    if args.run:
        app = Explorer(data, args.run)
        for tab, label, attr in (("Prediction", "threshold", "threshold"), ("Attention and Ms", "slice", "index")):
            app.tabs.selected_index = TABS.index(tab)
            viewer = app.viewers[tab]
            cases.append((type(viewer).__name__, label, viewer, getattr(viewer, attr)))

    rows = []
    for name, control, viewer, slider in cases:
        if isinstance(slider.value, tuple):  # a range slider: move its upper end
            lo = slider.value[0]
            values = [(lo, hi) for hi in cycle_range(slider, args.changes)]
        else:
            values = cycle(slider, args.changes)
        viewer.render()
        row = {"viewer": name, "control": control, "image_px": list(viewer._fig.canvas.get_width_height())}
        for mode in ("in place", "rebuilt"):
            ms = timed_changes(viewer, slider, values, rebuild=mode == "rebuilt")
            row[mode] = {"median_ms": round(float(np.median(ms)), 1), "max_ms": round(float(np.max(ms)), 1)}
        rows.append(row)

    result = {
        "benchmark": "widget redraw, slider change to new PNG",
        "data": str(data),
        "study": study.name,
        "study_shape": list(study.shape),
        "run": str(args.run) if args.run else None,
        "changes": args.changes,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "matplotlib": matplotlib.__version__,
        "rows": rows,
    }
    header = (
        f"{'viewer':24s} {'control':12s} {'picture':>9s} {'in place median / max':>22s} {'rebuilt median / max':>21s}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        a, b = r["in place"], r["rebuilt"]
        px = "x".join(map(str, r["image_px"]))
        print(
            f"{r['viewer']:24s} {r['control']:12s} {px:>9s} {a['median_ms']:>10.0f} / {a['max_ms']:>4.0f} ms"
            f" {b['median_ms']:>9.0f} / {b['max_ms']:>4.0f} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def cycle_range(slider, n: int) -> list[float]:
    lo, hi = slider.value[0], slider.max
    tops = np.linspace(lo + (hi - lo) * 0.2, lo + (hi - lo) * 0.8, 7)
    walk = np.concatenate([tops, tops[-2:0:-1]])
    return [float(walk[(i + 1) % len(walk)]) for i in range(n)]


if __name__ == "__main__":
    main()
