"""Interactive viewers for the notebooks and the explorer app (after SimpleITK-Notebooks' ``gui.py``).

Each viewer is a small class that owns its ipywidgets and ``observe``s them. It draws its figure
once with a pure function of :mod:`stroke_helpers.figures` and then, on every change, updates
that figure in place (``set_data``, ``set_clim``, new outlines) and shows it as a PNG in an
``Image`` widget: no figure is rebuilt, and it works the same in JupyterLab, Voilà and Colab
whatever the matplotlib backend. ``viewer.figure()`` gives the current view as a new static
figure (what tests and headless runs call); a notebook that is not live (GitHub, nbviewer)
shows the PNG that the viewer's display carries beside the widget.

A bad value never raises out of a slider callback: the viewer shows a one-line ``error: ...``
above its picture (and in ``viewer.error``).
"""

from __future__ import annotations

import base64
import html
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from .datasets import brain_mask, largest_lesion_slice
from .figures import (
    Panel,
    axial,
    cmap_of,
    display_window,
    draw_levels,
    draw_maps,
    draw_overlays,
    draw_series,
    figure_png,
    update_levels,
    update_maps,
    update_overlays,
    update_series,
)
from .isles import Study, load_study
from .metrics import dice, precision, recall, threshold_sweep
from .modalities import MODALITIES
from .modalities import modality as row_of
from .perfusion import relative_cbf, select_aif, tissue_mask

# A study browser shows the input maps in channel order (modalities.MODALITIES); each window
# slider's range is its row's ``slider`` in the modality table (:func:`window_range`).
_WIDE = {"description_width": "initial"}
_WRAP = W.Layout(flex_flow="row wrap")


def window_range(modality: str, volume: np.ndarray) -> tuple[float, float, float]:
    """``(min, max, step)`` of a window slider for one map, in its units: the modality table's,
    or for an uncalibrated map (CBF, CBV: ``slider`` None) from the volume's positive voxels."""
    fixed = row_of(modality).slider
    if fixed is not None:
        return fixed
    positive = volume[volume > 0]
    top = float(f"{1.5 * np.percentile(positive, 99.9):.2g}") if positive.size else 1.0
    return 0.0, top, top / 500


def set_range(slider, lo: float, hi: float, step: float, value) -> None:
    """Give a range slider new limits and value without a transient clamp in between."""
    with slider.hold_trait_notifications():
        slider.min, slider.max = min(slider.min, lo), max(slider.max, hi)
        slider.step, slider.value = step, value
        slider.min, slider.max = lo, hi


def case_name(case: Study | str | Path) -> str:
    """``SPLIT/case_N``, the name a :class:`~stroke_helpers.isles.Study` of that folder has."""
    if isinstance(case, Study):
        return case.name
    return f"{Path(case).parent.name}/{Path(case).name}"


class _Viewer:
    """Owns ``controls`` (each redraws on change), an error line and the picture.

    Subclasses define ``figure()`` (a new figure of the current view, from :mod:`figures`) and
    ``update(fig)`` (the same view drawn into an existing one, in place)."""

    def __init__(self, controls: list[W.Widget], rows: list[list[W.Widget]] | None = None):
        self.controls = controls
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.message = W.HTML("")
        self.error = ""
        self._fig = None
        self._held = 0
        for c in controls:
            c.observe(self._changed, names="value")
        rows = rows if rows is not None else [controls]
        self.widget = W.VBox([*(W.HBox(r, layout=_WRAP) for r in rows), self.message, self.image])
        self.widget.add_class("stroke-viewer")

    def figure(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, fig) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self) -> bytes:
        """Draw the current view (in place after the first time) and show it; the PNG bytes."""
        if self._fig is None:
            self._fig = self.figure()
            plt.close(self._fig)  # ours alone: never shown by the notebook's backend
        else:
            self.update(self._fig)
        png = figure_png(self._fig)
        self.image.value = png
        return png

    @contextmanager
    def hold(self):
        """Change several controls, then redraw once; an error on the way is shown, not raised."""
        self._held += 1
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - shown in the viewer
            self._held -= 1
            self._show(exc)
            return
        self._held -= 1
        self._changed()

    def _changed(self, _change=None) -> None:
        if self._held:
            return
        try:
            self.render()
            self._show(None)
        except Exception as exc:  # shown, not raised: a callback's exception would vanish in a log
            self._show(exc)

    def _show(self, exc: Exception | None) -> None:
        self.error = "" if exc is None else f"error: {exc}".splitlines()[0]
        self.message.value = f'<span class="stroke-error" style="color:#b00">{html.escape(self.error)}</span>'

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        if self._fig is None:
            self._changed()
        data = self.widget._repr_mimebundle_(**kwargs)
        if self.image.value:  # what a notebook that is not live shows
            data["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return data


class StudyBrowser(_Viewer):
    """Every study, its maps side by side on one slice slider, each with a window slider in its
    own units and a colorbar, the expert lesion outlined.

    ``studies``: loaded :class:`~stroke_helpers.isles.Study` objects or case folders (loaded when
    picked, the last ``cache`` kept), e.g. ``discover_cases(DATA)`` for the whole dataset.
    """

    def __init__(self, studies: list[Study | str | Path], maps=MODALITIES, cache: int = 3):
        if not studies:
            raise ValueError("StudyBrowser needs at least one study or case folder (got none)")
        self._sources = {case_name(s): s for s in studies}
        self._cache: OrderedDict[str, Study] = OrderedDict()
        self._cache_size = max(1, cache)
        first = self.load(next(iter(self._sources)))
        self.maps = [m for m in maps if m in first.images]
        if not self.maps:
            raise ValueError(f"{first.name}: none of the maps {', '.join(maps)} is loaded")
        self.study = W.Dropdown(options=list(self._sources), description="study")
        self.z = W.IntSlider(first.n_slices // 2, 0, first.n_slices - 1, description="slice")
        self.overlay = W.Checkbox(True, description="lesion outline", indent=False)
        self.windows = {}
        for m in self.maps:
            lo, hi, step = window_range(m, first.images[m])
            self.windows[m] = W.FloatRangeSlider(
                value=display_window(m, first.images[m]),
                min=lo,
                max=hi,
                step=step,
                description=f"{m} ({row_of(m).unit})",
                style=_WIDE,
                readout_format=".3g",
            )
        self.study.observe(self._on_study, names="value")
        top = [self.study, self.z, self.overlay]
        if len(self._sources) == 1:
            self.study.layout.display = "none"
        super().__init__([self.z, self.overlay, *self.windows.values()], rows=[top, list(self.windows.values())])

    def load(self, name: str) -> Study:
        if name not in self._sources:
            raise ValueError(f"unknown study {name!r}; choose from {', '.join(self._sources)}")
        if name not in self._cache:
            source = self._sources[name]
            self._cache[name] = source if isinstance(source, Study) else load_study(source)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(name)
        return self._cache[name]

    @property
    def current(self) -> Study:
        return self.load(self.study.value)

    def _on_study(self, change) -> None:
        with self.hold():
            s = self.load(change["new"])
            self.z.max = s.n_slices - 1
            for m in self.maps:
                if row_of(m).slider is None:  # from the volume: it changes with the study
                    set_range(self.windows[m], *window_range(m, s.images[m]), display_window(m, s.images[m]))

    def _view(self):
        s, z = self.current, self.z.value
        slices = {m: axial(s.images[m], z) for m in self.maps}
        windows = {m: self.windows[m].value for m in self.maps}
        outline = axial(s.mask, z) if self.overlay.value and s.mask is not None else None
        lesion = f", lesion {s.lesion_ml:.1f} mL" if s.mask is not None else ""
        return slices, windows, outline, f"{s.name}  slice {z} of 0-{s.n_slices - 1}{lesion}"

    def figure(self):
        return draw_maps(*self._view())

    def update(self, fig) -> None:
        update_maps(fig, *self._view())


class SeriesViewer(_Viewer):
    """The 4D perfusion series of one study: a time slider over the frames, and the
    time-attenuation curves of the arterial input and of a chosen voxel or region."""

    REGIONS = ("voxel", "5x5 voxels", "lesion in this slice")

    def __init__(self, study: Study):
        self.study = study
        self.series = study.pwi
        self.times = np.arange(self.series.shape[-1]) * study.pwi_time_step
        self.aif, _ = select_aif(self.series, brain_mask(study))
        nx, ny, nz, nt = self.series.shape
        z0 = largest_lesion_slice(study.mask, axis=-1) if study.mask is not None else nz // 2
        peak = int(np.argmax(self.aif))
        self.t = W.IntSlider(peak, 0, nt - 1, description="frame")
        self.z = W.IntSlider(z0, 0, nz - 1, description="slice")
        self.x = W.IntSlider(nx // 3, 0, nx - 1, description="voxel x")
        self.y = W.IntSlider(ny // 2, 0, ny - 1, description="voxel y")
        self.region = W.Dropdown(options=self.REGIONS, description="curve of")
        pwi = row_of("4DPWI")
        lo, hi, step = pwi.slider
        self.window = W.FloatRangeSlider(
            value=pwi.window, min=lo, max=hi, step=step, description=f"window ({pwi.unit})", style=_WIDE
        )
        controls = [self.t, self.z, self.x, self.y, self.region, self.window]
        super().__init__(controls, rows=[[self.t, self.z, self.window], [self.region, self.x, self.y]])

    def curves(self) -> dict[str, np.ndarray]:
        x, y, z = self.x.value, self.y.value, self.z.value
        curves = {"arterial input": self.aif}
        if self.region.value == "voxel":
            curves[f"voxel ({x}, {y}, {z})"] = self.series[x, y, z]
        elif self.region.value == "5x5 voxels":
            curves[f"5x5 around ({x}, {y}, {z})"] = self.series[max(x - 2, 0) : x + 3, max(y - 2, 0) : y + 3, z].mean(
                (0, 1)
            )
        else:
            inside = self.study.mask[:, :, z] > 0 if self.study.mask is not None else np.zeros(self.series.shape[:2])
            label = f"lesion, slice {z} ({int(inside.sum())} voxels)"
            curves[label] = self.series[:, :, z][inside > 0].mean(0) if inside.any() else np.zeros_like(self.aif)
        return curves

    def _view(self):
        t, z = self.t.value, self.z.value
        frame = self.series[:, :, z, t]
        title = f"{self.study.name}  slice {z}, t = {self.times[t]:.1f} s"
        return frame, self.window.value, (self.x.value, self.y.value), self.times, self.curves(), t, title

    def figure(self):
        return draw_series(*self._view())

    def update(self, fig) -> None:
        update_series(fig, *self._view())


class ThresholdExplorer(_Viewer):
    """A threshold slider over per-study probabilities: the thresholded prediction (green) and the
    expert outline (magenta) on a slice, with this study's Dice, precision and recall and the mean
    Dice over every study recomputed live, and the precomputed Dice and precision curves.

    ``probabilities``, ``truths``: per study ``(Z, S, S)``; ``images``: an input to show beside
    the probabilities (both outlined); ``names``: the studies' names.
    """

    def __init__(self, probabilities, truths, thresholds=None, images=None, names=None):
        if not len(probabilities) or len(probabilities) != len(truths):
            raise ValueError(
                f"ThresholdExplorer needs as many probability volumes as truths, at least one "
                f"(got {len(probabilities)} and {len(truths)})"
            )
        self.probabilities = [np.asarray(p) for p in probabilities]
        self.truths = [np.asarray(t).astype(bool) for t in truths]
        for p, t in zip(self.probabilities, self.truths):
            if p.shape != t.shape:
                raise ValueError(f"probabilities {p.shape} and truth {t.shape} differ in shape")
        self.images = None if images is None else [np.asarray(i) for i in images]
        self.names = list(names) if names is not None else [f"study {i}" for i in range(len(self.probabilities))]
        self.thresholds = np.linspace(0.05, 0.95, 19) if thresholds is None else np.asarray(thresholds)
        self.dice, self.precision = threshold_sweep(self.probabilities, self.truths, self.thresholds)
        lo, hi = float(self.thresholds[0]), float(self.thresholds[-1])
        self.threshold = W.FloatSlider(0.5, min=lo, max=hi, step=0.01, description="threshold")
        self.study = W.Dropdown(options=[(n, i) for i, n in enumerate(self.names)], description="study")
        self.z = W.IntSlider(0, 0, 0, description="slice")
        self.study.observe(self._on_study, names="value")
        if len(self.names) == 1:
            self.study.layout.display = "none"
        self._set_study(0)
        super().__init__([self.threshold, self.z], rows=[[self.study, self.z, self.threshold]])

    def _set_study(self, i: int) -> None:
        self.z.max = len(self.truths[i]) - 1
        self.z.value = largest_lesion_slice(self.truths[i])

    def _on_study(self, change) -> None:
        with self.hold():
            self._set_study(change["new"])

    def scores(self) -> dict[str, float]:
        """This study's Dice, precision, recall and the mean Dice over every study, at the threshold."""
        i, t = self.study.value, self.threshold.value
        pred, truth = self.probabilities[i] > t, self.truths[i]
        mean = float(np.mean([dice(p > t, y) for p, y in zip(self.probabilities, self.truths)]))
        return {
            "dice": dice(pred, truth),
            "precision": precision(pred, truth),
            "recall": recall(pred, truth),
            "mean": mean,
        }

    def _view(self):
        i, z, t = self.study.value, self.z.value, self.threshold.value
        s, n = self.scores(), len(self.names)
        studies = "study" if n == 1 else "studies"
        title = (
            f"{self.names[i]}, slice {z}: Dice {s['dice']:.3f}, precision {s['precision']:.3f}, "
            f"recall {s['recall']:.3f}\nthreshold {t:.2f}; mean Dice over {n} {studies} {s['mean']:.3f}"
        )
        outlines = {"truth": self.truths[i][z], "pred": self.probabilities[i][z] > t}
        probability = Panel(self.probabilities[i][z], caption=title, cmap="viridis", label="probability", **outlines)
        panels = [probability]
        if self.images is not None:  # the input beside the probabilities, both outlined
            image = self.images[i][z]
            window = (float(image.min()), float(image.max()) or 1.0)
            panels = [
                Panel(image, caption=title, window=window, **outlines),
                replace(probability, caption="probability"),
            ]
        curves = {"x": self.thresholds, "Dice": self.dice, "precision": self.precision, "current": t}
        return panels, curves

    def figure(self):
        return draw_overlays(*self._view())

    def update(self, fig) -> None:
        update_overlays(fig, *self._view())


class ClassicalExplorer(_Viewer):
    """The classical thresholds live: relative CBF below a percentage (the core) and Tmax above
    some seconds (core plus penumbra), each outlined (green) with the expert lesion (magenta) and its
    Dice over the whole study."""

    def __init__(self, study: Study):
        if study.mask is None:
            raise ValueError(f"{study.name}: no expert mask to score the thresholds against")
        self.study = study
        self.tissue = tissue_mask(study.CT, brain_mask(study))
        self.rcbf = relative_cbf(study.CBF, self.tissue, study.Tmax)
        self.truth = study.mask.astype(bool)
        z0 = largest_lesion_slice(self.truth, axis=-1)
        self.z = W.IntSlider(z0, 0, study.n_slices - 1, description="slice")
        self.rcbf_percent = W.IntSlider(30, 5, 80, description="rCBF below (%)", style=_WIDE)
        self.tmax_s = W.FloatSlider(6.0, min=1.0, max=15.0, step=0.5, description="Tmax above (s)", style=_WIDE)
        super().__init__([self.z, self.rcbf_percent, self.tmax_s])

    def regions(self) -> dict[str, np.ndarray]:
        return {
            f"rCBF < {self.rcbf_percent.value} %": self.tissue & (self.rcbf < self.rcbf_percent.value / 100),
            f"Tmax > {self.tmax_s.value:g} s": self.tissue & (self.study.Tmax > self.tmax_s.value),
        }

    def _view(self):
        z, s = self.z.value, self.study
        panels = []
        for (name, region), m in zip(self.regions().items(), ("CBF", "Tmax")):
            panels.append(
                Panel(
                    s.images[m][:, :, z],
                    self.truth[:, :, z],
                    region[:, :, z],
                    f"{name} over {m}: Dice {dice(region, self.truth):.3f} (study)",
                    cmap_of(m),
                    display_window(m, s.images[m]),
                    row_of(m).unit,
                )
            )
        return panels, None, f"{s.name}  slice {z}"

    def figure(self):
        return draw_overlays(*self._view())

    def update(self, fig) -> None:
        update_overlays(fig, *self._view())


class AttentionExplorer(_Viewer):
    """Pick a slice, a decoder level, an input channel, and attention or similarities.

    ``images``: ``(N, S, S)`` or ``(N, C, S, S)`` (with ``channels``, their names); ``masks (N, S, S)``;
    ``attention``: ``{level: (N, h, w)}`` (from ``model(x, attention=True)``); optionally
    ``similarities``: ``{level: (N, h, w)}`` (the positive similarities, averaged over features)
    and ``ms (N, S, S)``, the cascade's synthetic map, shown beside them.
    """

    def __init__(self, images, masks, attention, similarities=None, channels=None, ms=None):
        images = np.asarray(images)
        self.images = images[:, None] if images.ndim == 3 else images
        self.masks, self.attention, self.similarities, self.ms = np.asarray(masks), attention, similarities, ms
        if not attention:
            raise ValueError("AttentionExplorer needs attention maps (this model has no attention gates)")
        n_channels = self.images.shape[1]
        self.channels = list(channels) if channels is not None else [f"channel {c}" for c in range(n_channels)]
        if len(self.channels) != n_channels:
            raise ValueError(f"{len(self.channels)} channel names for {n_channels} channels")
        self.level = W.Dropdown(options=sorted(attention), value=min(attention), description="level")
        self.index = W.IntSlider(0, 0, len(self.images) - 1, description="slice")
        first = self.channels.index("Tmax") if "Tmax" in self.channels else 0
        self.channel = W.Dropdown(
            options=[(n, c) for c, n in enumerate(self.channels)], value=first, description="input"
        )
        kinds = ["attention", "similarities"] if similarities else ["attention"]
        self.kind = W.ToggleButtons(options=kinds, description="show")
        if n_channels == 1:
            self.channel.layout.display = "none"
        if len(kinds) == 1:
            self.kind.layout.display = "none"
        super().__init__([self.level, self.index, self.channel, self.kind])

    def _view(self):
        i, lvl = self.index.value, self.level.value
        source = self.attention if self.kind.value == "attention" else self.similarities
        name = f"{self.kind.value}, level {lvl}"
        maps, windows = {name: source[lvl][i]}, {name: (0.0, 1.0)} if self.kind.value == "attention" else {}
        if self.ms is not None:
            maps["synthetic map Ms"] = self.ms[i]
            windows["synthetic map Ms"] = (0.0, 1.5)
        title = f"{self.channels[self.channel.value]}, slice {i}"
        return self.images[i, self.channel.value], self.masks[i], maps, windows, title

    def figure(self):
        return draw_levels(*self._view())

    def update(self, fig) -> None:
        update_levels(fig, *self._view())
