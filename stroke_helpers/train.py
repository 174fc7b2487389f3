"""The training loop: :func:`train`, behind the CLI, the notebooks, the grid and ``torchrun``.

The run folder (config, split, history, checkpoints) belongs to :mod:`stroke_helpers.runs`;
the model to :mod:`stroke_helpers.architectures` (``TrainConfig.architecture`` names it);
device, precision, TF32, determinism and distributed set-up to :mod:`stroke_helpers.engine`.
Every architecture trains here with the same loss: the multilevel loss over the
deep-supervision outputs when ``multilevel``, else the weighted BCE of the one full-resolution
output. Shuffling and augmentation are seeded from ``(seed, epoch)``, so a resumed run sees the
same batches as an uninterrupted one.

Learning-rate schedule (the paper names none): a linear warm-up over the first
``warmup_epochs`` (the preset's) to the peak lr, then a cosine decay to zero at the last
step, set per step from the global step number (so a resumed run follows the same curve).
Warm-up keeps the first large steps from wrecking BatchNorm statistics of a fresh network;
the decay is what lets a short budget settle on a plateau instead of ending mid-swing.

**The hot loop stays on the device.** The training and validation slices are stacked once, on
the device when they fit (:class:`DeviceSlices`; else in pinned host memory, copied
asynchronously), and batches are gathered from them by index: no DataLoader, no worker. The
augmentation builds its sampling grid on the batch's device. The step (:func:`train_step`)
never waits for the device: losses stay on it, and are read (one host sync) every
:data:`CHECK_EVERY` steps and at the end of the epoch, when a NaN or infinite loss stops the
run in one line naming it, the epoch and the step; the progress bar is updated then too. On
CUDA the optimiser is the fused AdamW, and an fp16 run's gradient scaler works with it without
a sync. ``compile`` wraps the model in ``torch.compile`` (measured in the README: it did not
pay on the 2-core CPU).

Validation Dice each epoch is per study (3D, over all its slices) at the training resolution,
from per-slice counts (:class:`Validation`); :func:`stroke_helpers.inference.evaluate` scores at
native resolution.

**Checkpoints** (:func:`~stroke_helpers.runs.save_checkpoints`): ``history.csv`` after every
epoch, ``best.pt`` (the model only) when validation Dice improves, and the resumable
``last.pt`` after the first epoch, then every ``checkpoint_every`` epochs or
``checkpoint_minutes`` minutes, whichever comes first, and after the last epoch; a finished run
drops it unless ``keep_last``.

**Distributed**: under ``torchrun`` the model is wrapped in DistributedDataParallel, each rank
sees its share of every epoch through a DistributedSampler (the global batch is the preset's
batch per rank times the world size, printed as a deviation from the paper with the lr policy,
and saved in ``config.json``), BatchNorm statistics are copied from rank 0 after each epoch,
validation is sharded over the ranks and its counts summed, each node's local rank 0 builds the
slice cache while the other ranks wait, and only rank 0 writes files or shows progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .augment import PaperAugmentation, paper_augmentation
from .datasets import SliceDataset, build_slices
from .engine import (
    Precision,
    apply_tf32_policy,
    autocast,
    choose_precision,
    configure_determinism,
    distributed,
    grad_scaler,
    resolve_device,
    setup_distributed,
)
from .loss import full_resolution_term, multilevel_loss
from .presets import deviations
from .runs import (
    RunError,
    RunFolder,
    TrainConfig,
    finish_run,
    load_synthetic_maps,
    restore,
    resume_state,
    save_checkpoints,
    split_names,
    study_indices,
    write_run_files,
    writing_run,
)

#: Steps between two reads of the losses (the loop's one host sync): the NaN check and the progress bar.
CHECK_EVERY = 50
#: The share of a GPU's free memory the training and validation slices may take to stay on it.
DEVICE_MEMORY_SHARE = 0.25


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    out: Path | None = None


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``: through pinned memory, without waiting, to a GPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether ``nbytes`` of slices may live on ``device``: a GPU keeps them when they take at
    most :data:`DEVICE_MEMORY_SHARE` of its free memory; every other device holds them anyway."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_MEMORY_SHARE * free


class DeviceSlices:
    """The slices of a :class:`~stroke_helpers.datasets.SliceDataset` as two stacked tensors,
    ``images (N, C, S, S)`` and ``masks (N, 1, S, S)`` float32, made once: on ``device`` when
    they fit (:func:`fits_on`), else in pinned host memory. :meth:`batches` gathers batches from
    them by index; the values are exactly the dataset's items (what a DataLoader would stack)."""

    def __init__(self, dataset: SliceDataset, device: torch.device):
        idx = torch.from_numpy(dataset.indices)
        images = dataset.arrays.images[idx][:, dataset.channels]
        if dataset.extra is not None:
            images = torch.cat([images, dataset.extra[idx].float()], 1)
        masks = dataset.arrays.masks[idx][:, None].float()
        self.device = device
        self.on_device = fits_on(device, images.nbytes + masks.nbytes)
        if self.on_device:
            images, masks = _to_device(images, device), _to_device(masks, device)
        elif device.type == "cuda":
            images, masks = images.pin_memory(), masks.pin_memory()
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, order, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, masks)`` on the device, ``batch_size`` slices at a time in ``order``
        (indices into these slices); the last batch may be smaller."""
        index = torch.as_tensor(list(order), dtype=torch.long)
        if self.on_device:
            index = _to_device(index, self.device)
        for start in range(0, len(index), batch_size):
            i = index[start : start + batch_size]
            x, y = self.images.index_select(0, i), self.masks.index_select(0, i)
            if not self.on_device:
                x, y = _to_device(x, self.device), _to_device(y, self.device)
            yield x, y


class Validation:
    """The validation slices, stacked once (:class:`DeviceSlices`), scored after each epoch:
    mean per-study Dice at the training resolution (threshold 0.5) from per-slice counts.
    Under torchrun each rank predicts every ``world``-th slice and the counts are summed, so
    every rank gets the same value for a ``1 / world`` share of the work."""

    def __init__(self, dataset: SliceDataset, device: torch.device, rank: int = 0, world: int = 1, batch: int = 16):
        self.slices = DeviceSlices(dataset, device)
        self.studies = np.asarray(dataset.arrays.study_index)[dataset.indices]
        self.device, self.rank, self.world, self.batch = device, rank, world, batch

    def dice(self, model: torch.nn.Module, dtype: torch.dtype | None) -> float:
        n = len(self.slices)
        mine = range(self.rank, n, self.world)
        counts = torch.zeros(n, 3, dtype=torch.long, device=self.device)  # |P & T|, |P|, |T| per slice
        local = torch.zeros(len(mine), 3, dtype=torch.long, device=self.device)
        model.eval()
        with torch.no_grad(), autocast(self.device, dtype):
            for start, (x, y) in zip(range(0, len(mine), self.batch), self.slices.batches(mine, self.batch)):
                pred = model(x.contiguous(memory_format=torch.channels_last)).logits > 0  # sigmoid > 0.5
                truth = y > 0.5
                local[start : start + len(x)] = torch.stack(
                    [(pred & truth).flatten(1).sum(1), pred.flatten(1).sum(1), truth.flatten(1).sum(1)], 1
                )
        counts[self.rank :: self.world] = local
        if self.world > 1:
            dist.all_reduce(counts)
        per_slice = counts.cpu().numpy()  # the one host sync of validation
        scores = []
        for s in np.unique(self.studies):
            both, p, t = per_slice[self.studies == s].sum(0).tolist()
            scores.append(1.0 if p + t == 0 else 2 * both / (p + t))  # as metrics.dice
        return float(np.mean(scores))


def training_slices(config: TrainConfig):
    """The ``TRAINING`` slices at the preset's size (:func:`~stroke_helpers.datasets.build_slices`).
    Under torchrun the slice cache is built by each node's local rank 0 while the other ranks
    wait, then read by them: safe with or without a filesystem shared between nodes (the cache
    file is written under a temporary name and renamed)."""
    _, world, local_rank = distributed()
    if world > 1 and local_rank != 0:
        dist.barrier()
    arrays = build_slices(config.data, "TRAINING", config.settings.size, progress=config.progress and local_rank == 0)
    if world > 1 and local_rank == 0:
        dist.barrier()
    return arrays


def _datasets(config: TrainConfig):
    """``(train set, validation set, train names, validation names, augmentation)``."""
    arrays = training_slices(config)
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


def train_step(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    augment: PaperAugmentation | None,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    multilevel: bool,
    dtype: torch.dtype | None,
    full_term: bool = False,
) -> torch.Tensor:
    """One optimiser step on a batch already on its device: augmentation, forward, loss,
    backward, update. Returns the loss, detached and still on the device: nothing here waits
    for the device (the loop reads the losses every :data:`CHECK_EVERY` steps). With
    ``full_term``, ``(2,)``: the loss and its full-resolution term (the same number without MR),
    which the history records so that learning curves of base and MR runs compare."""
    if augment is not None:
        x, y = augment(x, y)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, dtype):
        o = net(x, levels=multilevel)
        loss = multilevel_loss(o.levels if multilevel else [o.logits], y)
        full = full_resolution_term(o.logits.detach(), y) if multilevel and full_term else loss
    optimiser.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimiser.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimiser)  # the fused AdamW takes the scaler's inf check on the device
        scaler.update()
    return torch.stack([loss, full]).detach() if full_term else loss.detach()


def _total(value) -> float:
    """The loss of one step as read: a number, or ``[loss, full-resolution term]``."""
    return value[0] if isinstance(value, list) else value


def _read_losses(pending: list[torch.Tensor], config: TrainConfig, label: str, done: int) -> list[float]:
    """The losses of the last steps as numbers (one host sync); a NaN or infinite one stops the run."""
    values = torch.stack(pending).float().cpu().tolist()
    for k, value in enumerate(values):
        if not math.isfinite(_total(value)):
            raise RunError(
                f"{config.out}: the loss became {value} in {label} (step {done + k + 1}); try a lower learning rate"
            )
    return values


def _train_epoch(
    net, batches, n_batches: int, augment, optimiser, scaler, config: TrainConfig, epoch: int, dtype, show: bool
) -> list[float]:
    """One epoch over ``batches`` (``n_batches`` of them); the losses, read every :data:`CHECK_EVERY`
    steps, each ``[loss, full-resolution term]``."""
    net.train()
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    total, warmup = config.n_epochs * n_batches, round(config.settings.warmup_epochs * n_batches)
    label = f"epoch {epoch + 1}/{config.n_epochs}"
    with tqdm(total=n_batches, desc=label, disable=not show, leave=False) as bar:
        for i, (x, y) in enumerate(batches):
            for group in optimiser.param_groups:
                group["lr"] = config.lr * lr_factor(epoch * n_batches + i, total, warmup)
            pending.append(train_step(net, x, y, augment, optimiser, scaler, config.multilevel, dtype, full_term=True))
            bar.update()
            if len(pending) == CHECK_EVERY:
                losses += _read_losses(pending, config, label, len(losses))
                pending = []
                bar.set_postfix(loss=f"{_total(losses[-1]):.4f}")
        if pending:
            losses += _read_losses(pending, config, label, len(losses))
            bar.set_postfix(loss=f"{_total(losses[-1]):.4f}")
    return losses


def _mean_loss(losses: list[float], device: torch.device, world: int) -> float:
    """The epoch's mean training loss over every rank's steps."""
    if world == 1:
        return float(np.mean(losses))
    total = torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total[0] / total[1])


def _announce(config: TrainConfig, device: torch.device, precision: Precision, world: int, notes: list[str]) -> None:
    preset = config.settings
    print(f"run {config.name} -> {config.out} | preset {preset.name}, {device}, world {world}")
    print(f"  {precision}")
    for note in notes:
        print(f"  {note}")
    diffs = deviations(preset, epochs=config.epochs, batch_size=config.global_batch, lr=config.lr)
    if world > 1:
        policy = "unchanged" if config.lr_policy == "keep" else f"x {world}"
        diffs.append(
            f"world size 1 -> {world} (global batch {preset.batch_size} per rank x {world} = {config.global_batch}; "
            f"lr policy {config.lr_policy}: the preset's lr {policy})"
        )
    if diffs:
        print(f"  preset {preset.name} differs from the paper: {'; '.join(diffs)}")


def train(config: TrainConfig, resume: bool = False, force: bool = False) -> TrainResult:
    """Train one model as ``config`` says; returns the model after the last epoch.

    One process writes a run folder at a time: its lock is held from the first check to the
    last checkpoint, and ``force`` replaces a previous run's files
    (:func:`~stroke_helpers.runs.writing_run`). The run folder is created only once the data
    and the split are ready, so a run that fails on bad data leaves nothing behind."""
    with writing_run(config, force, writer=distributed()[0] == 0):
        return _train(config, resume)


def _train(config: TrainConfig, resume: bool) -> TrainResult:
    rank, world, device = setup_distributed(resolve_device(config.device))
    config = replace(config, world_size=world, global_batch=None)  # the global batch follows the world size
    preset, out = config.settings, Path(config.out)
    precision = choose_precision(device, config.precision)
    dtype = precision.dtype
    main = rank == 0
    state = resume_state(config, resume)
    notes = [configure_determinism(device, config.deterministic), apply_tf32_policy(device, precision)]
    if main:
        _announce(config, device, precision, world, [n for n in notes if n])
    train_set, val_set, train_names, val_names, augment = _datasets(config)
    sampler = torch.utils.data.DistributedSampler(train_set, world, rank, shuffle=True, seed=config.seed)
    slices = DeviceSlices(train_set, device)
    validation = Validation(val_set, device, rank, world)
    n_batches = math.ceil(len(sampler) / preset.batch_size)

    torch.manual_seed(config.seed)
    model = config.build_model().to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        weight_decay=preset.weight_decay,
        fused=True if device.type == "cuda" else None,
    )
    scaler = grad_scaler(device, precision)
    history, best, start = [], -math.inf, 0
    if state is not None:
        restore(state, model, optimiser, RunFolder(config.out).last)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        history, best, start = state["history"], state["best_dice"], state["epoch"]
        if main:
            print(f"  resuming after epoch {start}")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if config.compile:
        net = torch.compile(net)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_run_files(config, train_names, val_names)

    saved_epoch, saved_at = start, time.monotonic()
    for epoch in range(start, config.n_epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        if augment is not None:
            augment.set_random_state(config.seed * 100_003 + epoch * 101 + rank)
        losses = _train_epoch(
            net,
            slices.batches(sampler, preset.batch_size),
            n_batches,
            augment,
            optimiser,
            scaler,
            config,
            epoch,
            dtype,
            show=config.progress and main,
        )
        if world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)
        t1 = time.perf_counter()  # the losses were read: the device has finished the epoch's steps
        val = validation.dice(model, dtype)
        row = {
            "epoch": epoch + 1,
            "train_loss": _mean_loss([_total(v) for v in losses], device, world),
            "train_loss_full": _mean_loss([v[1] if isinstance(v, list) else v for v in losses], device, world),
            "val_dice": val,
            "seconds": time.perf_counter() - t0,
            "val_seconds": time.perf_counter() - t1,
            "lr_end": optimiser.param_groups[0]["lr"],
        }
        history.append(row)
        improved, best = val > best, max(best, val)
        last_epoch = epoch + 1 == config.n_epochs
        due = (
            saved_epoch == 0
            or epoch + 1 - saved_epoch >= config.checkpoint_every
            or time.monotonic() - saved_at >= 60 * config.checkpoint_minutes
        )
        write_last = config.keep_last if last_epoch else due
        if main:
            extra = {"scaler": scaler.state_dict()} if scaler is not None else None
            save_checkpoints(model, optimiser, config, history, best, improved, last=write_last, extra=extra)
            if last_epoch:
                finish_run(config)
            if config.progress:
                print(
                    f"  epoch {epoch + 1:3d}/{config.n_epochs}  loss {row['train_loss']:.4f}  val Dice {val:.3f}  {row['seconds']:.0f} s"
                )
        if write_last:
            saved_epoch, saved_at = epoch + 1, time.monotonic()
    if world > 1:
        dist.barrier()
    return TrainResult(model.eval(), history, out)
