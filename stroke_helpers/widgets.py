"""Interactive viewers for the notebooks (after SimpleITK-Notebooks' ``gui.py``).

Each viewer is a small class that owns its ipywidgets, ``observe``s them and redraws into an
``Output``; the drawing itself is a pure function (arrays in, a matplotlib Figure out) that tests
and headless runs call directly. ``viewer.figure()`` gives the current view as a static figure,
which is what a notebook rendered on GitHub (or run by papermill) shows.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from .figures import WINDOWS, display_window, draw_attention, draw_slice, draw_threshold_curve
from .isles import MODALITIES, Study
from .metrics import threshold_sweep


class _Viewer:
    """Owns ``self.controls`` and an ``Output``; subclasses define ``figure()``."""

    def __init__(self, controls: list[W.Widget]):
        self.controls = controls
        self.output = W.Output()
        for c in controls:
            c.observe(self._redraw, names="value")
        self.widget = W.VBox([W.HBox(controls), self.output])

    def figure(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _redraw(self, _change=None) -> None:
        with self.output:
            self.output.clear_output(wait=True)
            fig = self.figure()
            plt.show()
            plt.close(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._redraw()
        display(self.widget)


class StudyBrowser(_Viewer):
    """Browse studies: study, modality, slice, display window and lesion overlay."""

    def __init__(self, studies: list[Study]):
        if not studies:
            raise ValueError("StudyBrowser needs at least one study")
        self.studies = {s.name: s for s in studies}
        first = studies[0]
        self.study = W.Dropdown(options=list(self.studies), description="study")
        self.modality = W.Dropdown(options=[m for m in MODALITIES if m in first.images], value="CT", description="map")
        self.z = W.IntSlider(0, 0, first.n_slices - 1, description="slice")
        self.window = W.FloatRangeSlider(value=WINDOWS["CT"], min=-100, max=1500, step=1, description="window")
        self.overlay = W.Checkbox(True, description="lesion")
        self.study.observe(self._on_study, names="value")
        self.modality.observe(self._on_modality, names="value")
        super().__init__([self.study, self.modality, self.z, self.window, self.overlay])

    def _on_study(self, change) -> None:
        self.z.max = self.studies[change["new"]].n_slices - 1

    def _on_modality(self, change) -> None:
        lo, hi = display_window(change["new"], self.studies[self.study.value].images[change["new"]])
        self.window.max = max(self.window.max, hi)
        self.window.value = (lo, hi)

    def figure(self):
        return draw_slice(
            self.studies[self.study.value], self.modality.value, self.z.value, self.window.value, self.overlay.value
        )


class AttentionExplorer(_Viewer):
    """Pick a decoder level and a slice; shows that level's attention map over the slice.

    ``images (N, S, S)`` (one channel to show), ``masks (N, S, S)``, ``attention``:
    ``{level: (N, h, w)}`` arrays (from ``model(x, attention=True)``).
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, attention: dict[int, np.ndarray]):
        self.images, self.masks, self.attention = images, masks, attention
        self.level = W.Dropdown(options=sorted(attention), value=min(attention), description="level")
        self.index = W.IntSlider(0, 0, len(images) - 1, description="slice")
        super().__init__([self.level, self.index])

    def figure(self):
        i = self.index.value
        maps = {lvl: a[i] for lvl, a in self.attention.items()}
        return draw_attention(self.images[i], self.masks[i], maps, self.level.value, f"slice {i}")


class ThresholdExplorer(_Viewer):
    """A threshold slider over per-study probabilities: Dice and precision against it."""

    def __init__(self, probabilities: list[np.ndarray], truths: list[np.ndarray], thresholds=None):
        self.thresholds = np.linspace(0.05, 0.95, 19) if thresholds is None else np.asarray(thresholds)
        self.dice, self.precision = threshold_sweep(probabilities, truths, self.thresholds)
        self.threshold = W.FloatSlider(
            0.5, min=float(self.thresholds[0]), max=float(self.thresholds[-1]), step=0.05, description="threshold"
        )
        super().__init__([self.threshold])

    def figure(self):
        return draw_threshold_curve(self.thresholds, self.dice, self.precision, self.threshold.value)
