"""README's "On a GPU" figures, computed again from the code: parameter and FLOP counts, file
sizes from them, and (with the default dataset) the training split's slices. A number in a
sentence is a claim; these tests keep those claims true when the model or the data change."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stroke_helpers import locations
from stroke_helpers.architectures import DEFAULT, build, get_architecture
from stroke_helpers.grid import CASCADES, ROWS, Grid
from stroke_helpers.model import CrossAttentionAutoencoder, count_parameters
from stroke_helpers.phantom import ISLES_SLICES
from stroke_helpers.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
ISLES_TRAINING_SLICES = sum(size * count for size, count in ISLES_SLICES.items())  # 502 in 94 slabs


def gpu_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## On a GPU") : text.index("## Results on the synthetic dataset")]


def parameters(preset: str) -> int:
    return count_parameters(CrossAttentionAutoencoder(5, PRESETS[preset].widths))


def step_flops(batch: int = 8, size: int = 224) -> float:
    """Forward and backward of one paper-preset training step, counted on the meta device."""
    with torch.device("meta"):
        model = CrossAttentionAutoencoder(5, PRESETS["paper"].widths)
        with FlopCounterMode(display=False) as counter:
            out = model(torch.zeros(batch, 5, size, size), levels=True)
            sum(level.sum() for level in out.levels).backward()
    return counter.get_total_flops()


def grid_models() -> dict[str, int]:
    """The models with a ``best.pt`` in a ``cpu`` ``reproduce`` grid, per architecture, from the
    grid's own steps (:meth:`~stroke_helpers.grid.Grid.todo`): each run, and for each cascade its
    stage 2, its fold models and the copy of its stage 1 (``copied stage 1``)."""
    models = {"copied stage 1": 0}
    for kind, args in Grid("data", "results", "cpu").todo():
        if kind == "run":
            architecture = DEFAULT if args[0] in ROWS else get_architecture(args[0]).name
            models[architecture] = models.get(architecture, 0) + 1
        elif kind == "cascade":
            models[DEFAULT] = models.get(DEFAULT, 0) + 1 + CASCADES[args[0]]  # stage 2 and the fold models
            models["copied stage 1"] += 1
    return models


def grid_weights_bytes(preset: str) -> int:
    """fp32 bytes of every ``best.pt`` of a ``reproduce`` grid (each model counted with 5 inputs)."""
    widths = PRESETS[preset].widths
    sizes = {
        a: count_parameters(build(a, 5, widths, *get_architecture(a).switches(None, None)))
        for a in grid_models()
        if a != "copied stage 1"
    }
    return 4 * sum(sizes.get(a, sizes[DEFAULT]) * n for a, n in grid_models().items())


def test_model_size_and_cost_in_readme():
    text = gpu_section()
    assert f"{parameters('paper') / 1e6:.1f} M parameters" in text
    flops = step_flops()
    assert f"{flops / 1e9:.0f} GFLOP" in text and f"({flops / 8e9:.0f} per slice" in text


def test_disk_table_in_readme_follows_from_the_parameter_counts():
    text = gpu_section()
    cpu, paper = 4 * parameters("cpu"), 4 * parameters("paper")  # fp32 bytes of the weights
    models = grid_models()
    copies = models["copied stage 1"]
    trainings = sum(models.values()) - copies
    assert models["monai-attention-unet"] == 1 and sum(models.values()) == 64  # 58 trainings, 6 copies
    assert f"{trainings} trainings and {copies} copied stage-1 runs" in text
    assert f"| `best.pt` (model) | {cpu / 1e6:.1f} MB | {paper / 1e6:.0f} MB |" in text
    assert f"| {3 * cpu / 1e6:.0f} MB | {3 * paper / 1e6:.0f} MB |" in text  # weights and two AdamW moments
    grid = {p: grid_weights_bytes(p) for p in ("cpu", "paper")}
    assert f"their `best.pt` | {grid['cpu'] / 1e9:.1f} GB | {grid['paper'] / 1e9:.1f} GB |" in text
    assert f"| + {3 * grid['cpu'] / 1e9:.1f} GB | + {3 * grid['paper'] / 1e9:.1f} GB |" in text
    cache = {s: ISLES_TRAINING_SLICES * s * s * (5 * 2 + 2) for s in (96, 224)}  # 5 fp16 channels, mask, brain
    assert f"| {cache[96] / 1e6:.0f} MB | about {cache[224] / 1e9:.1f} GB |" in text
    ms = {s: ISLES_TRAINING_SLICES * s * s * 2 for s in (96, 224)}
    assert f"| {ms[96] / 1e6:.0f} MB | {ms[224] / 1e6:.0f} MB |" in text


def test_readme_gpu_figures_on_the_default_dataset():
    """The training split's slices, their memory and a paper run's FLOPs, on the default dataset
    (CI generates it before it runs the ``default_dataset`` tests)."""
    from stroke_helpers.datasets import build_slices
    from stroke_helpers.runs import TrainConfig, slices_of, split_names

    data = locations.dataset("synthetic")
    if not (data / "TRAINING").is_dir():
        pytest.skip(f"{data}: not the default synthetic dataset (python data_download.py synthetic makes it)")
    arrays = build_slices(data, "TRAINING", PRESETS["cpu"].size, progress=False)
    train, val = split_names(TrainConfig(data=str(data), out="unused"), arrays)
    n_train, n_val = len(slices_of(arrays, train)), len(slices_of(arrays, val))
    text = " ".join(gpu_section().split())
    per_slice = 4 * 224 * 224 * (5 + 1)  # float32 images and mask
    assert f"over the {n_train} training slices" in text
    assert f"{n_train * per_slice / 1e9:.2f} GB as float32" in text and f"({n_val * per_slice / 1e9:.2f} GB)" in text
    run = step_flops() / 8 * n_train * PRESETS["paper"].epochs
    mantissa, exponent = re.search(r"about ([\d.]+) × 10(\S+) FLOP", text).groups()
    assert f"{run / 10 ** len(str(int(run))) * 10:.1f}" == mantissa and len(str(int(run))) - 1 == {"¹⁶": 16}[exponent]


def test_readme_dataset_size_is_a_full_generation_s():
    """README's size of the default dataset, against a full one (4D series written, seed 0,
    94 + 62 studies, this phantom version) when ``DATA/synthetic`` holds one; CI's has no 4D
    series. Its time is a measurement on one machine, stated with the machine and the version."""
    from stroke_helpers.phantom.dataset import PHANTOM_VERSION

    data = locations.dataset("synthetic")
    config = data / "truth" / "config.csv"
    full = {
        "write_pwi": "True",
        "seed": "0",
        "train_cases": "94",
        "test_cases": "62",
        "phantom_version": str(PHANTOM_VERSION),
    }
    if (
        not config.is_file()
        or not full.items()
        <= dict(line.split(",", 1) for line in config.read_text().splitlines() if "," in line).items()
    ):
        pytest.skip(f"{data}: not a full default dataset (python data_download.py synthetic makes one)")
    size = sum(
        f.stat().st_size
        for f in data.rglob("*")
        if f.is_file() and locations.CACHE_NAME not in f.relative_to(data).parts
    )
    assert float(_stated_generation()[3]) == pytest.approx(size / 1e9, abs=0.02)


def _stated_generation() -> re.Match:
    text = " ".join((ROOT / "README.md").read_text().split())
    stated = re.search(r"94 \+ 62 studies \(phantom v(\d+)\): (\d+) s and ([\d.]+) GB \(10⁹ bytes\)", text)
    assert stated, "README lost its sentence on the default dataset's generation"
    return stated


def test_readme_generation_time_and_size_are_the_benchmark_s():
    """README's time and size of the default dataset are those of benchmarks/results/phantom.json,
    measured on this phantom version (a new version needs the benchmark run again)."""
    from stroke_helpers.phantom.dataset import PHANTOM_VERSION

    bench = json.loads((ROOT / "benchmarks" / "results" / "phantom.json").read_text())
    stated = _stated_generation()
    assert int(stated[1]) == PHANTOM_VERSION == bench["phantom_version"]
    assert (bench["train_cases"], bench["test_cases"], bench["territories"]) == (94, 62, "atlas")
    assert int(stated[2]) == round(bench["seconds"]) and stated[3] == f"{bench['bytes'] / 1e9:.2f}"
    assert f"on the {bench['cpu_count']}-core {bench['cpu']}" in " ".join((ROOT / "README.md").read_text().split())


def test_readme_states_the_code_s_own_constants():
    """Settings README quotes in prose, read from the code that uses them."""
    from stroke_helpers import explorer, isles, train
    from stroke_helpers.runs import TrainConfig

    text = " ".join((ROOT / "README.md").read_text().split())
    lo, hi = isles.VOXEL_MM
    assert f"voxels of {lo:g}–{hi:g} mm" in text and f"outside {lo:g}–{hi:g} mm" in text
    assert f"zooms to {100 * isles.SPACING_RTOL:g} %" in text and f"affines to {isles.AFFINE_ATOL_MM:g} mm" in text
    assert f"every {train.CHECK_EVERY} steps" in text
    assert {0.25: "a quarter"}[train.DEVICE_MEMORY_SHARE] + " of its free memory" in text
    defaults = TrainConfig(data="d", out="o")
    assert f"`--checkpoint-every` epochs (default {defaults.checkpoint_every})" in text
    assert f"`--checkpoint-minutes` minutes (default {defaults.checkpoint_minutes:g})" in text
    assert f"token=<{2 * explorer.TOKEN_BYTES} hex digits>" in text
