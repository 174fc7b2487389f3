"""The training loop: :func:`train`, behind the CLI, the notebooks, the grid and ``torchrun``.

The run folder (config, split, history, checkpoints) belongs to :mod:`stroke_helpers.runs`;
the model to :mod:`stroke_helpers.architectures` (``TrainConfig.architecture`` names it);
device, precision and distributed set-up to :mod:`stroke_helpers.engine`. Every architecture
trains here with the same loss: the multilevel loss over the deep-supervision outputs when
``multilevel``, else the weighted BCE of the one full-resolution output. Shuffling and
augmentation are seeded from ``(seed, epoch)``, so a resumed run sees the same batches as an
uninterrupted one.

Learning-rate schedule (the paper names none): a linear warm-up over the first
``warmup_epochs`` (the preset's) to the preset's lr, then a cosine decay to zero at the last
step, set per step from the global step number (so a resumed run follows the same curve).
Warm-up keeps the first large steps from wrecking BatchNorm statistics of a fresh network;
the decay is what lets a short budget settle on a plateau instead of ending mid-swing.

Validation Dice each epoch is per study (3D, over all its slices) at the training resolution,
which is cheap; :func:`stroke_helpers.inference.evaluate` scores at native resolution.

Distributed: under ``torchrun`` the model is wrapped in DistributedDataParallel, each rank sees
its share of every epoch through a DistributedSampler, BatchNorm statistics are copied from
rank 0 after each epoch, and only rank 0 writes files or shows progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .augment import paper_augmentation
from .datasets import SliceDataset, build_slices
from .engine import autocast, autocast_dtype, predict_logits, resolve_device, setup_distributed
from .loss import multilevel_loss
from .metrics import dice
from .presets import deviations
from .runs import (
    RunError,
    TrainConfig,
    load_synthetic_maps,
    resume_state,
    save_checkpoints,
    split_names,
    study_indices,
    write_run_files,
)


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    out: Path | None = None


def validation_dice(model, dataset: SliceDataset, device, dtype) -> float:
    """Mean per-study Dice at the training resolution (threshold 0.5)."""
    idx = dataset.indices
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]) if len(dataset) else torch.zeros(0)
    pred = predict_logits(model, images, device, dtype) > 0  # sigmoid(x) > 0.5
    masks = dataset.arrays.masks[idx].bool()
    studies = dataset.arrays.study_index[idx]
    return float(np.mean([dice(pred[studies == s].numpy(), masks[studies == s].numpy()) for s in np.unique(studies)]))


def _datasets(config: TrainConfig, rank: int, world: int):
    """``(train set, validation set, train names, validation names, augmentation)``; rank 0
    builds the slice cache, the others read it."""
    if world > 1 and rank != 0:
        dist.barrier()
    arrays = build_slices(config.data, "TRAINING", config.settings.size, progress=config.progress and rank == 0)
    if world > 1 and rank == 0:
        dist.barrier()
    extra = load_synthetic_maps(config.synthetic_map, arrays) if config.synthetic_map else None
    train_names, val_names = split_names(config, arrays)
    p = config.settings.augment
    augment = paper_augmentation(p, seed=config.seed) if p > 0 else None
    train_set = SliceDataset(arrays, config.channels, study_indices(arrays, train_names), None, extra)
    val_set = SliceDataset(arrays, config.channels, study_indices(arrays, val_names), None, extra)
    return train_set, val_set, train_names, val_names, augment


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The schedule's multiplier of the peak lr at ``step`` (0-based) of ``total``: linear
    warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _train_epoch(
    net, loader, augment, optimiser, config: TrainConfig, epoch: int, device, dtype, show: bool
) -> list[float]:
    net.train()
    losses = []
    total, warmup = config.n_epochs * len(loader), round(config.settings.warmup_epochs * len(loader))
    label = f"epoch {epoch + 1}/{config.n_epochs}"
    bar = tqdm(loader, desc=label, disable=not show, leave=False)
    for i, batch in enumerate(bar):
        for group in optimiser.param_groups:
            group["lr"] = config.settings.lr * lr_factor(epoch * len(loader) + i, total, warmup)
        x, y = batch["image"].to(device), batch["mask"].to(device)
        if augment is not None:
            x, y = augment(x, y)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            o = net(x, levels=config.multilevel)
            loss = multilevel_loss(o.levels if config.multilevel else [o.logits], y)
        if not torch.isfinite(loss):
            raise RunError(f"{config.out}: the loss became {loss.item()} in {label}; try a lower learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train one model as ``config`` says; returns the model after the last epoch.

    The run folder is created only once the data and the split are ready, so a run that
    fails on bad data leaves nothing behind."""
    preset, out = config.settings, Path(config.out)
    rank, world, device = setup_distributed(resolve_device(config.device))
    dtype = autocast_dtype(device, config.precision)
    main = rank == 0
    state = resume_state(config, resume)
    if main:
        print(
            f"run {config.name} -> {out} | preset {preset.name}, {device}, {'bf16' if dtype else 'fp32'}, world {world}"
        )
        diffs = deviations(preset, epochs=config.epochs)
        if diffs:
            print(f"  preset {preset.name} differs from the paper: {'; '.join(diffs)}")
    train_set, val_set, train_names, val_names, augment = _datasets(config, rank, world)
    sampler = torch.utils.data.DistributedSampler(train_set, world, rank, shuffle=True, seed=config.seed)
    loader = torch.utils.data.DataLoader(train_set, preset.batch_size, sampler=sampler, num_workers=config.workers)

    torch.manual_seed(config.seed)
    model = config.build_model().to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    history, best, start = [], -math.inf, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        history, best, start = state["history"], state["best_dice"], state["epoch"]
        if main:
            print(f"  resuming after epoch {start}")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_run_files(config, train_names, val_names)

    for epoch in range(start, config.n_epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        if augment is not None:
            augment.set_random_state(config.seed * 100_003 + epoch * 101 + rank)
        losses = _train_epoch(
            net, loader, augment, optimiser, config, epoch, device, dtype, show=config.progress and main
        )
        if world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)
        t1 = time.perf_counter()
        val = validation_dice(model, val_set, device, dtype)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_dice": val,
            "seconds": time.perf_counter() - t0,
            "val_seconds": time.perf_counter() - t1,
            "lr_end": optimiser.param_groups[0]["lr"],
        }
        history.append(row)
        improved, best = val > best, max(best, val)
        if main:
            save_checkpoints(model, optimiser, config, history, best, improved)
            if config.progress:
                print(
                    f"  epoch {epoch + 1:3d}/{config.n_epochs}  loss {row['train_loss']:.4f}  val Dice {val:.3f}  {row['seconds']:.0f} s"
                )
    if world > 1:
        dist.barrier()
    return TrainResult(model.eval(), history, out)
