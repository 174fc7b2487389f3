"""Inference and evaluation: a trained run (or cascade) applied to studies.

:class:`Predictor` loads a run folder: a single model, or a cascade (stage 1 makes the
synthetic map, stage 2 segments). It takes preprocessed slices ``(N, 5, S, S)`` (all of
:data:`~stroke_helpers.isles.MODALITIES`, as :func:`~stroke_helpers.datasets.preprocess_study`
and :func:`~stroke_helpers.datasets.build_slices` give them) and picks its own channels.

Evaluation follows docs/decisions.md §1: probabilities are resized back to the study's native in-plane size
(bilinear) *before* thresholding at 0.5, then each study is scored in 3D at native resolution
against its own ``OT`` file (:mod:`stroke_helpers.metrics`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import files
from .cascade import normalise_ms, synthetic_map
from .datasets import build_slices, preprocess_study, to_native
from .engine import autocast_dtype, is_main_process, predict_logits, resolve_device
from .isles import IslesError, find_case_files, load_study, write_like
from .isles24 import NO_TEST_LABELS, is_converted
from .metrics import LESION_METRICS, METRICS, lesion_metrics, study_metrics, summarise
from .runs import (
    RunError,
    RunFolder,
    in_shipped_checkpoint,
    load_config,
    load_model,
    metrics_path,
    read_cascade,
    read_split,
    study_indices,
    write_json,
)
from .truth import has_test_truth, load_study_truth

THRESHOLD = 0.5


class Predictor:
    """A trained run, ready to predict: ``predictor(images) -> probabilities (N, S, S)``."""

    def __init__(
        self, run_dir: str | Path, device: str = "auto", precision: str | None = None, checkpoint: str = "best"
    ):
        """``precision``: the autocast policy to predict with (default: the run's own);
        ``checkpoint``: ``best`` (the epoch validation chose) or ``last`` (a model run's last epoch,
        kept with ``keep_last``; a cascade always predicts with its stages' best epochs)."""
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise RunError(f"{run_dir}: no such run folder")
        self.device = resolve_device(device)
        run = RunFolder(self.run_dir)
        run.checkpoint(checkpoint)  # best or last, else one clear ValueError
        self.cascade = read_cascade(run.path) if run.is_cascade else None
        if self.cascade and checkpoint != "best":
            raise RunError(f"{run_dir}: a cascade predicts with its stages' best epochs; checkpoint={checkpoint!r}")
        if self.cascade:
            self.stage1, _ = load_model(run.stage1, device=self.device)
            self.model, self.config = load_model(run.stage2, device=self.device)
        else:
            self.stage1 = None
            self.model, self.config = load_model(self.run_dir, checkpoint, device=self.device)
        self.size = self.config.settings.size
        self.channels = self.config.channels
        self.dtype = autocast_dtype(self.device, precision or self.config.precision)

    @property
    def split(self) -> dict[str, list[str]]:
        run = RunFolder(self.run_dir)
        return read_split(run.stage2 if self.cascade else run)

    def synthetic_map(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ``Ms (N, 1, S, S)`` from the cascade's stage 1."""
        raw = synthetic_map(self.stage1, images[:, self.channels], self.device, self.dtype)
        return normalise_ms(raw, self.cascade["scale"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, self.channels]
        if self.cascade:
            x = torch.cat([x, self.synthetic_map(images)], dim=1)
        return torch.sigmoid(predict_logits(self.model, x, self.device, self.dtype))


def evaluate(
    run_dir: str | Path,
    split: str = "val",
    device: str = "auto",
    progress: bool = True,
    data: str | Path | None = None,
    write: bool = True,
    precision: str | None = None,
    checkpoint: str = "best",
) -> dict:
    """Score a run per study at native resolution; writes ``RUN/metrics.json`` (``val``) or
    ``RUN/metrics_{split}.json`` (unless ``write=False``) and returns it. ``split``: ``val``,
    ``train`` or ``test`` (the synthetic TESTING split, whose truth the phantom keeps under
    ``truth/``); ``data``: the dataset folder (default: the one the run was trained on). On a
    converted ISLES 2024 dataset each study also gets the challenge's lesion-wise F1 and
    lesion-count difference (:func:`~stroke_helpers.metrics.lesion_metrics`). ``precision``
    overrides the run's autocast policy (``fp32``: what a CPU without bf16 units computes);
    ``checkpoint``: which weights score (:class:`Predictor`)."""
    if split not in ("val", "train", "test"):
        raise ValueError(f"split must be val, train or test, not {split!r}")
    if write and in_shipped_checkpoint(run_dir):
        raise RunError(f"{run_dir}: part of the shipped checkpoint, which is never rewritten (its scores are in it)")
    if split == "test":
        require_test_truth(run_dir, data)
    predictor = Predictor(run_dir, device, precision, checkpoint)
    data = Path(data or predictor.config.data)
    arrays = build_slices(data, "TESTING" if split == "test" else "TRAINING", predictor.size, progress=progress)
    names = arrays.studies if split == "test" else predictor.split[split]
    lesionwise = is_converted(data)  # ISLES 2024 ranks on them too
    rows = []
    for i in tqdm(study_indices(arrays, names), desc=f"evaluate {split}", disable=not progress, leave=False):
        name = arrays.studies[i]
        truth_study = load_study_truth(data, name)
        probs = predictor(arrays.images[arrays.study_index == i])
        pred = to_native(probs, truth_study.shape) > THRESHOLD
        row = {"study": name, **study_metrics(pred, truth_study.mask, truth_study.spacing)}
        if lesionwise:
            row |= lesion_metrics(pred, truth_study.mask)
        row["lesion_ml"], row["predicted_ml"] = truth_study.lesion_ml, float(pred.sum() * truth_study.voxel_ml)
        rows.append(row)
    result = {
        "run": str(run_dir),
        "name": predictor.config.name,
        "split": split,
        "checkpoint": checkpoint,
        "studies": rows,
        "summary": summarise(rows),
    }
    if write and is_main_process():  # one writer per run folder (rank 0 under torchrun), not while a run trains
        with files.lock(run_dir, f"evaluate --run {run_dir}"):
            write_json(result, metrics_path(run_dir, split))
    return result


def require_test_truth(run_dir: str | Path, data: str | Path | None = None) -> None:
    """Refuse, before any work, to score the TESTING split of data without its masks (``data``,
    or the dataset the run was trained on)."""
    run = RunFolder(run_dir)
    stage = run.stage2 if run.is_cascade else run
    if data is None and not stage.config.exists():
        return  # not a run folder: Predictor says so
    data = Path(data) if data is not None else Path(load_config(stage).data)
    if is_converted(data):
        raise IslesError(f"{data}: {NO_TEST_LABELS}")
    if not has_test_truth(data):
        raise IslesError(
            f"{data}: cannot score split test: no truth/TESTING folder with the TESTING masks "
            "(real ISLES 2018 keeps them private; only the synthetic dataset has them); score val or train"
        )


def format_metrics(result: dict) -> str:
    """The per-study table and the mean +- std line of an :func:`evaluate` result."""
    s = result["summary"]
    columns = (*METRICS, *(m for m in LESION_METRICS if m in s))
    width = {m: max(15, len(m) + 2) for m in columns}
    lines = [f"{result['name']} ({result['split']}, {len(result['studies'])} studies)"]
    lines.append(f"{'study':<20}" + "".join(f"{m:>{width[m]}}" for m in columns))
    for r in result["studies"]:
        lines.append(f"{r['study']:<20}" + "".join(f"{r[m]:>{width[m]}.3f}" for m in columns))
    lines.append(
        f"{'mean +- std':<20}" + "".join(f"{s[m]['mean']:.3f} +- {s[m]['std']:.3f}".rjust(width[m]) for m in columns)
    )
    return "\n".join(lines)


def nifti_path(path: str | Path) -> Path:
    """The file a NIfTI will really be written to: ``path`` itself when it ends in ``.nii`` or
    ``.nii.gz``, else ``path.nii.gz`` (nibabel cannot write a name without an extension)."""
    path = Path(path)
    return path if path.name.lower().endswith((".nii", ".nii.gz")) else path.with_name(path.name + ".nii.gz")


def require_case_folder(study_dir: str | Path) -> Path:
    """``study_dir`` when it is one case folder (NIfTI files of the modality table inside);
    a file, a split or a dataset folder is refused in one line."""
    path = Path(study_dir)
    if not path.is_dir():
        raise IslesError(f"{path}: not a case folder ({'no such folder' if not path.exists() else 'a file'})")
    nested = [
        p.relative_to(path)
        for p in sorted((*path.glob("*"), *path.glob("*/*")), key=lambda p: (len(p.parts), str(p)))
        if p.is_dir() and (p.name in ("TRAINING", "TESTING") or re.match(r"^case_\d+$", p.name))
    ]
    if nested:
        raise IslesError(
            f"{path}: not a case folder: it holds {nested[0]} (a dataset or a split); pass one case_N folder"
        )
    if not find_case_files(path):
        raise IslesError(f"{path}: not a case folder (no NIfTI file of any ISLES modality in it)")
    return path


def predict_study(
    run_dir: str | Path,
    study_dir: str | Path,
    out: str | Path,
    probabilities: bool = False,
    device: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Segment one study folder; writes a mask (uint8) or probabilities (float32) NIfTI with
    the study's own header and geometry, to ``out`` (``.nii.gz`` appended when it has neither
    ``.nii`` nor ``.nii.gz``); returns the path written."""
    out = files.check_output(nifti_path(files.check_output(out, force=True)), overwrite)
    predictor = Predictor(run_dir, device)
    require_case_folder(study_dir)
    study = load_study(study_dir, require_mask=False)
    images, _, _ = preprocess_study(study, predictor.size)
    probs = to_native(predictor(images), study.shape)
    if probabilities:
        return write_like(study, probs, out, np.float32)
    return write_like(study, (probs > THRESHOLD).astype(np.uint8), out, np.uint8)
