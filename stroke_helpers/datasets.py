"""2D slice datasets for PyTorch: normalisation, brain mask, resizing, cache, splits.

Decisions (and why); each modality's normalisation is set by its row of
:data:`stroke_helpers.modalities.TABLE` (:meth:`~stroke_helpers.modalities.Modality.normalise`):

- **CT**: clipped to the 0-100 HU brain window and divided by 100. CT is calibrated in HU,
  so a fixed window is the same on every scanner; bone and streak artefacts saturate at 1.
- **CBF, CBV**: the RAPID maps of ISLES 2018 are not in calibrated units (normal CBF anywhere
  from ~110 to ~800), so each is divided by its mean over the study's brain mask: a value of 1
  is average perfusion, the core of a stroke sits well below 0.3. Clipped to [0, 4].
- **MTT, Tmax**: seconds, which do mean the same on every scanner, so a fixed scale: divided by
  20 s (the display window) and clipped to [0, 1.5].
- **Brain mask**: the maps are zero outside the brain, so the mask is the filled union of
  positive map voxels (CT-based when no map is loaded: 0-100 HU inside the skull).
- **Resizing**: images bilinear with antialiasing, masks nearest, to the preset size (224 in
  the paper). Metrics are computed after resizing probabilities back to the study's own grid (:func:`to_native`).

Building a split reads every NIfTI once and caches the preprocessed stack as ``.npz`` in
``ROOT/.cache/`` (elsewhere when the dataset is read-only: :func:`stroke_helpers.locations.cache`), keyed by the files' sizes and times and the preprocessing settings, so an
epoch never touches NIfTI files and a changed file is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from . import files, locations
from .isles import IslesError, Study, check_cases, discover_cases, find_case_files, load_study, read_patients
from .modalities import MODALITIES, PERFUSION_MAPS, TABLE, canonical_modalities

CACHE_VERSION = 1


def inside_skull(ct: np.ndarray, bone_hu: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, skull)`` boolean ``(X, Y, Z)`` masks: bone above ``bone_hu`` and, per slice,
    everything the bone encloses (bone included)."""
    skull = ct > bone_hu
    inside = np.stack([ndimage.binary_fill_holes(skull[:, :, z]) for z in range(ct.shape[2])], axis=2)
    return inside, skull


def brain_mask(study: Study) -> np.ndarray:
    """Boolean ``(X, Y, Z)`` brain mask: filled union of positive perfusion-map voxels, or a CT
    threshold inside the skull when no map is loaded."""
    maps = [study.images[m] for m in PERFUSION_MAPS if m in study.images]
    if maps:
        mask = np.any([m > 0 for m in maps], axis=0)
    else:
        ct = study.images["CT"]
        inside, skull = inside_skull(ct)
        mask = inside & ~ndimage.binary_dilation(skull, np.ones((3, 3, 1))) & (ct > -10) & (ct < 100)
    return np.stack([ndimage.binary_fill_holes(mask[:, :, z]) for z in range(mask.shape[2])], axis=2)


def largest_lesion_slice(mask, axis: int = 0) -> int:
    """Index along ``axis`` of the slice with the most lesion: ``axis=0`` for slice stacks
    ``(Z, S, S)``, ``axis=-1`` for volumes ``(X, Y, Z)``; the middle slice when there is no lesion."""
    mask = np.moveaxis(np.asarray(mask), axis, 0)
    area = mask.reshape(len(mask), -1).sum(1)
    return int(area.argmax()) if area.any() else len(mask) // 2


def normalise(study: Study, brain: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-modality normalised float32 ``(X, Y, Z)`` arrays, each by its row of the modality
    table (see the module docstring); a name that is not an input raises
    :class:`~stroke_helpers.modalities.ModalityError` in one line."""
    canonical_modalities(study.images, allow_empty=True)  # refuse an unknown name before any work
    brain = brain_mask(study) if brain is None else brain
    return {m: TABLE[m].normalise(x, brain) for m, x in study.images.items()}


def resize_slices(volume: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``(X, Y, Z)`` -> ``(Z, size, size)`` tensor; ``mode`` is ``"bilinear"`` or ``"nearest"``."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 2, 0), dtype=np.float32))[:, None]
    if t.shape[-2:] != (size, size):
        kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        t = F.interpolate(t, size=(size, size), mode=mode, **kwargs)
    return t[:, 0]


def to_native(slices: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """The inverse of :func:`resize_slices` for probabilities: ``(Z, S, S)`` -> ``(X, Y, Z)``
    float32 at the study's native in-plane size, bilinear."""
    x = slices.float()[:, None]
    if tuple(x.shape[-2:]) != tuple(shape[:2]):
        x = F.interpolate(x, size=tuple(shape[:2]), mode="bilinear", align_corners=False)
    return np.ascontiguousarray(np.moveaxis(x[:, 0].numpy(), 0, 2), dtype=np.float32)


def preprocess_study(study: Study, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One study as network input: ``images (Z, 5, size, size)`` float32 in :data:`MODALITIES`
    order, ``mask`` and ``brain (Z, size, size)`` uint8 (an all-zero mask when it has none).

    The one preprocessing path: training slices, evaluation and ``predict`` all go through it.
    """
    missing = [m for m in MODALITIES if m not in study.images]
    if missing:
        raise IslesError(
            f"{study.path}: missing modality {', '.join(missing)} (the model's input needs all of {', '.join(MODALITIES)})"
        )
    brain = brain_mask(study)
    norm = normalise(study, brain)
    images = torch.stack([resize_slices(norm[m], size, "bilinear") for m in MODALITIES], dim=1)
    mask = study.mask if study.mask is not None else np.zeros(study.shape, np.uint8)
    return (
        images,
        resize_slices(mask, size, "nearest").to(torch.uint8),
        resize_slices(brain.astype(np.uint8), size, "nearest").to(torch.uint8),
    )


@dataclass
class SliceArrays:
    """Every slice of a split, preprocessed: ``images (N, 5, S, S)`` in :data:`MODALITIES`
    order, ``masks`` and ``brains (N, S, S)`` uint8, and per slice its study index and ``z``."""

    images: torch.Tensor
    masks: torch.Tensor
    brains: torch.Tensor
    study_index: np.ndarray
    z: np.ndarray
    studies: list[str]
    patients: list[str | None]
    shapes: list[tuple[int, int, int]]
    spacings: list[tuple[float, float, float]]

    def __len__(self) -> int:
        return len(self.z)


def _cache_key(root: Path, split: str, cases: list[Path], size: int) -> str:
    norm = [(m, TABLE[m].normalisation, TABLE[m].norm_range, TABLE[m].clip) for m in MODALITIES]
    h = hashlib.sha1(f"v{CACHE_VERSION}|{split}|{size}|{norm}".encode())
    for case in cases:
        for token, path in sorted(find_case_files(case).items()):
            if token in MODALITIES or token == "OT":
                st = path.stat()
                h.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _read_cache(path: Path) -> SliceArrays | None:
    """A cached split, or None (with a warning) when the file is not one: it is made again."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = SliceArrays(
                torch.from_numpy(z["images"].astype(np.float32)),
                torch.from_numpy(z["masks"]),
                torch.from_numpy(z["brains"]),
                z["study_index"],
                z["z"],
                meta["studies"],
                meta["patients"],
                [tuple(s) for s in meta["shapes"]],
                [tuple(s) for s in meta["spacings"]],
            )
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        print(f"warning: {path}: not a readable slice cache ({exc}); preprocessing again", file=sys.stderr)
        return None
    if len(arrays.images) != len(arrays.study_index) or len(arrays.studies) != len(arrays.shapes):
        print(f"warning: {path}: an inconsistent slice cache; preprocessing again", file=sys.stderr)
        return None
    return arrays


def build_slices(
    root: str | Path,
    split: str = "TRAINING",
    size: int = 224,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> SliceArrays:
    """Load, normalise and resize every slice of a split (cached; see the module docstring).

    A ``TESTING`` study (no mask of its own) gets an all-zero mask; a ``TRAINING`` study must
    have its expert mask. Every case is checked first, cached or not, by the check ``verify``
    makes (:func:`~stroke_helpers.isles.check_cases`), and bad input raises
    :class:`~stroke_helpers.isles.IslesError` naming the case and file.
    """
    root = Path(root)
    cases = discover_cases(root, split)
    if not cases:
        raise IslesError(f"{root / split}: no case_N folders")
    check_cases(cases, MODALITIES)  # before any work: grids, headers, masks, 4D frames
    patients = read_patients(root)
    name = f"slices_{split}_{size}_{_cache_key(root, split, cases, size)}.npz"
    for cached in [Path(cache_dir) / name] if cache_dir is not None else [p / name for p in locations.caches(root)]:
        if cached.is_file():
            arrays = _read_cache(cached)
            if arrays is not None:
                return arrays
    cache = locations.cache(root, cache_dir) / name  # DATA/.cache, elsewhere when DATA is read-only
    images, masks, brains, index, zs, names, pats, shapes, spacings = [], [], [], [], [], [], [], [], []
    for i, case in enumerate(tqdm(cases, desc=f"preprocess {split}", disable=not progress)):
        study = load_study(case)  # a TRAINING case without OT is an error, never all background
        image, mask, brain = preprocess_study(study, size)
        images.append(image)
        masks.append(mask)
        brains.append(brain)
        index += [i] * study.n_slices
        zs += list(range(study.n_slices))
        names.append(study.name)
        pats.append(patients.get(study.name))
        shapes.append(study.shape)
        spacings.append(study.spacing)
    arrays = SliceArrays(
        torch.cat(images),
        torch.cat(masks),
        torch.cat(brains),
        np.array(index),
        np.array(zs),
        names,
        pats,
        shapes,
        spacings,
    )
    meta = {"studies": names, "patients": pats, "shapes": shapes, "spacings": spacings}
    stack = {
        "images": arrays.images.numpy().astype(np.float16),
        "masks": arrays.masks.numpy(),
        "brains": arrays.brains.numpy(),
        "study_index": arrays.study_index,
        "z": arrays.z,
        "meta": json.dumps(meta),
    }
    try:  # atomic; without room for it, the arrays are still served (and made again next time)
        files.save_with(cache, lambda tmp: np.savez(tmp, **stack))
    except files.WriteError as exc:
        print(f"warning: slice cache not written: {exc}", file=sys.stderr)
    # serve exactly what a later cached call would (float16 on disk)
    arrays.images = arrays.images.half().float()
    return arrays


def split_studies(
    studies: list[str], patients: list[str | None], n_val: int = 19, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Seeded train / validation split of study indices, by patient when every study has one.

    Patients are shuffled and taken whole into validation while they fit in ``n_val`` studies
    (19, as in the paper), so both slabs of a patient land on the same side. Without patient ids
    (real ISLES 2018: the case -> patient map is lost) each study is its own patient.
    """
    if n_val >= len(studies):
        raise ValueError(f"cannot hold out {n_val} validation studies from {len(studies)}")
    groups: dict[str, list[int]] = {}
    by_patient = all(p is not None for p in patients)
    for i, name in enumerate(studies):
        groups.setdefault(patients[i] if by_patient else name, []).append(i)
    order = list(groups)
    np.random.default_rng(seed).shuffle(order)
    val: list[int] = []
    for key in order:
        if len(val) + len(groups[key]) <= n_val:
            val += groups[key]
        if len(val) == n_val:
            break
    val_set = set(val)
    return [i for i in range(len(studies)) if i not in val_set], sorted(val)


Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class SliceDataset(torch.utils.data.Dataset):
    """Slices of some studies, with the chosen input channels.

    ``dataset[i]`` is a dict: ``image (C, S, S)`` float32, the ``channels`` of the
    preprocessed images (indices into :data:`MODALITIES`, from
    :func:`~stroke_helpers.modalities.channel_indices` or ``TrainConfig.channels``), ``mask (1, S, S)`` float32,
    ``brain (1, S, S)``, ``study`` index and ``z``. ``transform(image, mask) -> (image, mask)``
    is an optional per-slice hook, applied jointly to all channels and the mask (training does not
    use it: it augments whole batches on tensors, :class:`~stroke_helpers.augment.PaperAugmentation`). ``extra
    (len(arrays), k, S, S)``, when given, is appended after the modalities (the cascade's
    synthetic map ``Ms``).
    """

    def __init__(
        self,
        arrays: SliceArrays,
        channels: list[int],
        studies: list[int] | None = None,
        transform: Transform | None = None,
        extra: torch.Tensor | None = None,
    ):
        self.arrays = arrays
        self.channels = list(channels)
        keep = np.ones(len(arrays), bool) if studies is None else np.isin(arrays.study_index, studies)
        self.indices = np.flatnonzero(keep)
        self.transform = transform
        if extra is not None and (len(extra) != len(arrays) or extra.shape[-2:] != arrays.images.shape[-2:]):
            raise ValueError(
                f"extra channels {tuple(extra.shape)} do not match the slices {tuple(arrays.images.shape)}"
            )
        self.extra = extra

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        image = self.arrays.images[j, self.channels]
        if self.extra is not None:
            image = torch.cat([image, self.extra[j]])
        mask = self.arrays.masks[j][None].float()
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return {
            "image": image,
            "mask": mask,
            "brain": self.arrays.brains[j][None],
            "study": int(self.arrays.study_index[j]),
            "z": int(self.arrays.z[j]),
        }
