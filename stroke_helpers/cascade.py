"""The cascade (paper §2.3): a stage-1 model's attention becomes an input map of stage 2.

1. **Stage 1**: train MR+ATT on ``[I; Mp]`` (CT and the chosen perfusion maps).
2. **Synthetic map** ``Ms``: for every slice, in eval mode, the mean over channels of the
   level-1 (full-resolution) attention module's positive similarities
   ``relu(W_e X_e + W_d X_d)`` (:func:`synthetic_map`).
3. **Stage 2**: a fresh model of the same configuration trained on ``[I; Mp; Ms]``.

Two decisions the paper leaves open, taken here:

- **Normalisation**: raw similarities have an arbitrary scale that differs between trained
  models, so ``Ms`` is divided by its 99th percentile over the brain pixels of the stage-1
  model's own training slices and clipped to [0, 1.5], like the other input channels. The
  scale is stored with the run and reused for every later study.
- **In-sample or out-of-fold**: stage 1 has seen its training slices, so their ``Ms`` is
  better than it will be on a new study, and stage 2 learns to trust it too much: a leak.
  ``folds=0`` (the default, what the paper implies) uses the in-sample maps; ``folds=K``
  trains K extra stage-1 models, each without one K-th of the training patients, and gives
  each training slice the map of the model that did not see it. Validation, test and
  ``predict`` always use the stage-1 model trained on every training study, which never saw
  them. Notebook 04 measures the difference.

Run folder (:class:`~stroke_helpers.runs.RunFolder`): stage 1, the out-of-fold models and
stage 2 (ordinary training runs), every training slice's ``Ms``, each study's ``Ms`` as NIfTI
in its own geometry (to view beside its perfusion maps) and the cascade's description.

Only the ``cross-attention`` architecture returns the similarities ``Ms`` is made of, so a
cascade of another architecture is refused (:func:`run_cascade`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import files
from .architectures import get_architecture
from .datasets import SliceArrays, to_native
from .engine import autocast_dtype, barrier, forward_batches, is_main_process, resolve_device, setup_distributed
from .isles import load_study, write_like
from .metrics import dice
from .runs import (
    RunError,
    RunFolder,
    TrainConfig,
    has_weights,
    in_shipped_checkpoint,
    is_finished,
    load_model,
    load_synthetic_maps,
    read_cascade,
    read_split,
    save_synthetic_maps,
    slices_of,
    write_json,
)
from .train import train, training_slices

MS_PERCENTILE = 99.0
MS_CLIP = 1.5


def synthetic_map(model, images: torch.Tensor, device=None, dtype=None, batch_size: int = 16) -> torch.Tensor:
    """Raw ``Ms (N, 1, S, S)``: channel mean of the level-1 positive similarities (eval mode)."""
    if not model.use_attention:
        raise ValueError("the synthetic map needs a model with cross-attention")

    def level1_similarity(m, x):
        return m(x, attention=True).attention[1].similarities.float().mean(dim=1, keepdim=True)

    return forward_batches(model, images, level1_similarity, device, dtype, batch_size)


def ms_scale(ms: torch.Tensor, brains: torch.Tensor) -> float:
    """The normalising scale: the 99th percentile of ``Ms`` over brain pixels."""
    values = ms[:, 0][brains.bool()].numpy()
    scale = float(np.percentile(values, MS_PERCENTILE)) if values.size else 0.0
    return scale if scale > 0 else 1.0


def normalise_ms(ms: torch.Tensor, scale: float) -> torch.Tensor:
    return (ms / scale).clamp(0, MS_CLIP)


def stage1_maps(run_dir: Path, arrays: SliceArrays, slices: np.ndarray, device) -> tuple[torch.Tensor, float]:
    """Normalised ``Ms`` of ``slices`` from the stage-1 model in ``run_dir``, and its scale
    (from that model's own training slices)."""
    model, config = load_model(run_dir, device=device)
    dtype = autocast_dtype(device, config.precision)
    train_slices = slices_of(arrays, read_split(run_dir)["train"])
    raw = synthetic_map(model, arrays.images[:, config.channels], device, dtype)  # one pass over every slice
    scale = ms_scale(raw[train_slices], arrays.brains[train_slices])
    return normalise_ms(raw[slices], scale), scale


def ms_leak(run: Path, arrays: SliceArrays) -> dict[str, float]:
    """Dice of ``Ms > 0.5`` against the lesions on a cascade's ``training`` slices (what stage 2
    learns from) and its ``validation`` slices (the reference: maps from a model that never saw
    them). The maps come from the cascade's saved maps, or, for an in-sample cascade without
    them, from its stage 1 again, which is how the cascade made them."""
    run = RunFolder(run)
    if run.synthetic_maps.exists():
        ms = load_synthetic_maps(run.synthetic_maps, arrays)
    elif read_cascade(run.path)["folds"] == 0 and has_weights(run.stage1):
        ms = stage1_maps(run.stage1.path, arrays, np.arange(len(arrays)), torch.device("cpu"))[0]
    else:
        raise RunError(f"{run}: no synthetic maps ({run.synthetic_maps.name})")
    split = read_split(run.stage2)
    leak = {}
    for key, names in (("training", split["train"]), ("validation", split["val"])):
        slices = slices_of(arrays, names)
        leak[key] = dice(ms[slices, 0].numpy() > 0.5, arrays.masks[slices].numpy().astype(bool))
    return leak


def patient_groups(train_names: list[str], patients: dict[str, str | None]) -> dict[str, list[str]]:
    """Training studies by patient (a study without a patient is its own): what a fold holds out."""
    groups: dict[str, list[str]] = {}
    for name in train_names:
        groups.setdefault(patients.get(name) or name, []).append(name)
    return groups


def folds_by_patient(train_names: list[str], patients: dict[str, str | None], k: int, seed: int) -> list[list[str]]:
    """``k`` folds of training studies, a patient's studies kept together."""
    groups = patient_groups(train_names, patients)
    if k > len(groups):  # an empty fold would train on everything: in-sample maps, silently
        raise ValueError(f"{k} folds need at least {k} training patients; this split has {len(groups)}")
    order = list(groups)
    np.random.default_rng(seed).shuffle(order)
    folds: list[list[str]] = [[] for _ in range(k)]
    for key in order:
        min(folds, key=len).extend(groups[key])
    return folds


def write_synthetic_maps(run_dir: Path, data: Path, arrays: SliceArrays, ms: torch.Tensor, progress: bool) -> None:
    """Every study's ``Ms`` as NIfTI in the study's own geometry."""
    run = RunFolder(run_dir)
    for i, name in enumerate(tqdm(arrays.studies, desc="write Ms", disable=not progress, leave=False)):
        study = load_study(data / name, modalities=("CT",), require_mask=False)
        native = to_native(ms[arrays.study_index == i, 0], study.shape)
        write_like(study, native, run.synthetic_map_nifti(name), np.float32)


def _train_unless_finished(config: TrainConfig) -> None:
    if not is_finished(config.out, config.n_epochs):
        train(config, resume=RunFolder(config.out).config.exists())


def run_cascade(config: TrainConfig, folds: int = 0, resume: bool = False) -> Path:
    """Train both stages (finished stages are skipped); returns the run folder. One process
    writes a cascade's folder at a time (:func:`stroke_helpers.files.lock`; each stage is a run
    folder with its own)."""
    if in_shipped_checkpoint(config.out):
        raise RunError(f"{config.out}: part of the shipped checkpoint, which is never written; choose another --out")
    if not is_main_process():  # under torchrun: rank 0 holds the lock and writes; the others train with it
        return _run_cascade(config, folds, resume)
    with files.lock(config.out, f"cascade --out {config.out}"):
        files.remove_temporaries(config.out)
        return _run_cascade(config, folds, resume)


def _run_cascade(config: TrainConfig, folds: int, resume: bool) -> Path:
    if folds == 1 or folds < 0:
        raise ValueError("folds must be 0 (in-sample Ms) or at least 2 (out-of-fold)")
    if not get_architecture(config.architecture).cascade:
        raise ValueError(
            f"the cascade needs the cross-attention architecture's level-1 similarities for Ms; "
            f"{config.architecture} returns none (train it with `train --architecture {config.architecture}`)"
        )
    run = RunFolder(config.out)
    if run.is_cascade and not resume:
        raise RuntimeError(f"{run} already holds a cascade; pass --resume to finish it or choose another --out")
    base = replace(config, attention=True, multilevel=True, synthetic_map=None)
    s1 = replace(base, out=str(run.stage1))
    device = setup_distributed(resolve_device(config.device))[2]  # under torchrun every rank trains
    main = is_main_process()
    _train_unless_finished(s1)
    arrays = training_slices(config)
    split = read_split(run.stage1)
    everything = np.arange(len(arrays))
    ms, scale = stage1_maps(run.stage1.path, arrays, everything, device)
    if folds:
        patients = dict(zip(arrays.studies, arrays.patients))
        for k, held in enumerate(folds_by_patient(split["train"], patients, folds, config.seed)):
            fold = replace(
                s1,
                out=str(run.fold(k)),
                train_studies=[s for s in split["train"] if s not in held],
                val_studies=split["val"],
            )
            _train_unless_finished(fold)
            slices = slices_of(arrays, held)
            ms[slices] = stage1_maps(run.fold(k).path, arrays, slices, device)[0]
    mode = "out-of-fold" if folds else "in-sample"
    if main:  # every rank computed the same maps; rank 0 writes them, stage 2 reads them from there
        save_synthetic_maps(run.synthetic_maps, ms, arrays, mode, folds)
        write_synthetic_maps(run.path, Path(config.data), arrays, ms, config.progress)
    barrier()
    s2 = replace(
        base,
        out=str(run.stage2),
        synthetic_map=str(run.synthetic_maps),
        train_studies=split["train"],
        val_studies=split["val"],
    )
    _train_unless_finished(s2)
    info = {
        "mode": mode,
        "folds": folds,
        "scale": scale,
        "modalities": list(config.modalities),
        "preset": config.preset,
    }
    if main:
        write_json(info, run.cascade)
    barrier()
    return run.path
