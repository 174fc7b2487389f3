"""Three presets, one code path (docs/decisions.md §3): ``paper``, ``cpu`` and ``smoke``.

``paper`` is exactly the paper: widths 32 .. 1024, 224 px slices, 600 epochs, AdamW with
lr 3e-2 and weight decay 1e-5, batch 8. Every preset uses the same learning-rate schedule,
which the paper does not name: one epoch of linear warm-up, then cosine decay
(:func:`stroke_helpers.train.lr_factor`). ``cpu`` keeps the 6-level shape but is sized for
the whole tutorial (the grid behind Tables 1 and 2, extra seeds and the cascades) on a 2-core
laptop: widths 8 .. 256, 96 px, 12 epochs, and lr 3e-3. Measured on the synthetic set (seed 0,
2-core AVX512-BF16 CPU, about 2.3 s per epoch with batched augmentation): with the schedule,
MR+ATT on All reaches a plateau in 12 epochs (validation Dice 0.65 on phantom v2); the
paper's lr 3e-2 and even 1e-2 collapse a base MTT model to all background (Dice 0.00 at every
epoch of 12), 3e-3 does not (0.58). ``smoke`` is tiny, for tests,
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
    warmup_epochs: float = 1.0  # linear lr warm-up, then cosine decay (train.lr_factor; the paper names no schedule)
    dataset: str = "synthetic"  # folder under DATA that `reproduce` generates and the notebooks read
    cases: tuple[int, int] = (94, 62)  # training and test studies of that generated dataset
    seeds: int = 3  # seeds of the All row and of both cascades in the grid (the spread between seeds)


PRESETS = {
    "paper": Preset("paper", PAPER_WIDTHS, 224, 600),
    "cpu": Preset("cpu", (8, 16, 32, 64, 128, 256), 96, 12, lr=3e-3),
    "smoke": Preset("smoke", (4, 4, 8, 8, 16, 16), 64, 1, batch_size=4, dataset="synthetic_smoke", cases=(10, 2)),
}

#: Settings that describe the data, not the training: never reported as deviations.
_DATA_FIELDS = ("name", "dataset", "cases", "seeds")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def deviations(preset: Preset, **overrides) -> list[str]:
    """``"field: paper value -> this value"`` for every training setting that differs from the paper."""
    values = {**asdict(preset), **{k: v for k, v in overrides.items() if v is not None}}
    paper = asdict(PRESETS["paper"])
    return [f"{k}: {paper[k]} -> {values[k]}" for k in paper if k not in _DATA_FIELDS and values[k] != paper[k]]
