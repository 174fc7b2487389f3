"""Three presets, one code path (SPEC §1): ``paper``, ``cpu`` and ``smoke``.

``paper`` is exactly the paper: widths 32 .. 1024, 224 px slices, 600 epochs, AdamW with
lr 3e-2 and weight decay 1e-5, batch 8. ``cpu`` keeps the 6-level shape but is sized for the
whole tutorial (30 training runs behind Tables 1 and 2, and the cascade) to run in under an
hour on a 2-core laptop: widths 8 .. 256, 96 px, 4 epochs, and lr 3e-3, because in so few
epochs the paper's 3e-2 collapses to an all-background model (validation Dice 0.00 after 3
epochs, against 0.74 with 3e-3; measured on the synthetic set). ``smoke`` is tiny, for tests,
and has its own small synthetic dataset (10 training + 2 test studies in ``DATA/synthetic_smoke``).
Every deviation from ``paper`` is printed when a run starts (:func:`deviations`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .model import PAPER_WIDTHS


@dataclass(frozen=True)
class Preset:
    name: str
    widths: tuple[int, ...]
    size: int
    epochs: int
    batch_size: int = 8
    lr: float = 3e-2
    weight_decay: float = 1e-5
    n_val: int = 19  # studies held out for validation
    augment: float = 0.5  # probability of each augmentation
    dataset: str = "synthetic"  # folder under DATA that `reproduce` generates and the notebooks read
    cases: tuple[int, int] = (94, 62)  # training and test studies of that generated dataset


PRESETS = {
    "paper": Preset("paper", PAPER_WIDTHS, 224, 600),
    "cpu": Preset("cpu", (8, 16, 32, 64, 128, 256), 96, 4, lr=3e-3),
    "smoke": Preset("smoke", (4, 4, 8, 8, 16, 16), 64, 1, batch_size=4, dataset="synthetic_smoke", cases=(10, 2)),
}

#: Settings that describe the data, not the training: never reported as deviations.
_DATA_FIELDS = ("name", "dataset", "cases")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def deviations(preset: Preset, **overrides) -> list[str]:
    """``"field: paper value -> this value"`` for every training setting that differs from the paper."""
    values = {**asdict(preset), **{k: v for k, v in overrides.items() if v is not None}}
    paper = asdict(PRESETS["paper"])
    return [f"{k}: {paper[k]} -> {values[k]}" for k in paper if k not in _DATA_FIELDS and values[k] != paper[k]]
