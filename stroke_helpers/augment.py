"""Data augmentation: the paper's list (§3), from MONAI, applied jointly to every channel.

Random brightness and contrast, flips, rotations, elastic deformation, grid distortion and
optical distortion. MONAI is the field's standard and has all but the last, so optical
(barrel / pincushion) distortion is one small MONAI-style transform here. Intensity changes
touch the image only; spatial ones move the image (bilinear) and the mask (nearest, so it
stays binary) with the same random field.

Each transform fires with probability ``prob``. :func:`paper_augmentation` returns a callable
``(image (C, H, W), mask (1, H, W)) -> (image, mask)``, the hook of
:class:`~stroke_helpers.datasets.SliceDataset`; reseed it with ``.set_random_state(seed)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai import transforms as mt
from monai.data import get_track_meta, set_track_meta

KEYS = ("image", "mask")
MODES = ("bilinear", "nearest")


class RandOpticalDistortiond(mt.RandomizableTransform, mt.MapTransform):
    """Radial lens distortion ``r' = r (1 + k r^2)`` with ``k`` uniform in ``[-limit, limit]``
    (barrel for ``k < 0``, pincushion for ``k > 0``), ``r`` in units of the half-width."""

    def __init__(self, keys=KEYS, limit: float = 0.1, prob: float = 0.5, modes=MODES):
        mt.RandomizableTransform.__init__(self, prob)
        mt.MapTransform.__init__(self, keys)
        self.limit, self.modes, self.k = limit, modes, 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.k = float(self.R.uniform(-self.limit, self.limit))

    def __call__(self, data):
        self.randomize()
        if not self._do_transform:
            return data
        d = dict(data)
        h, w = d[self.keys[0]].shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        scale = 1 + self.k * (xs**2 + ys**2)
        grid = torch.stack([xs * scale, ys * scale], dim=-1)[None]
        for key, mode in zip(self.keys, self.modes):
            x = torch.as_tensor(d[key], dtype=torch.float32)
            d[key] = F.grid_sample(x[None], grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
        return d


class Augmentation:
    """``(image, mask) -> (image, mask)`` wrapper around a MONAI dictionary ``Compose``."""

    def __init__(self, compose: mt.Compose):
        self.compose = compose

    def set_random_state(self, seed: int) -> None:
        self.compose.set_random_state(seed=seed % 2**32)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tracking = get_track_meta()
        set_track_meta(False)  # plain tensors: half the per-call cost, and nothing here reads metadata
        try:
            out = self.compose({"image": image, "mask": mask})
        finally:
            set_track_meta(tracking)
        return out["image"], (out["mask"] > 0.5).float()


def paper_augmentation(prob: float = 0.5, seed: int = 0) -> Augmentation:
    """The paper's augmentation list with moderate magnitudes (the paper gives none)."""
    aug = Augmentation(
        mt.Compose(
            [
                mt.RandShiftIntensityd("image", offsets=0.1, prob=prob),  # brightness
                mt.RandScaleIntensityd("image", factors=0.2, prob=prob),  # contrast
                mt.RandFlipd(KEYS, prob=prob, spatial_axis=0),
                mt.RandFlipd(KEYS, prob=prob, spatial_axis=1),
                mt.RandRotated(KEYS, range_x=math.pi / 12, prob=prob, mode=MODES, padding_mode="zeros"),
                mt.Rand2DElasticd(
                    KEYS, spacing=(32, 32), magnitude_range=(1, 3), prob=prob / 2, mode=MODES, padding_mode="zeros"
                ),
                mt.RandGridDistortiond(KEYS, num_cells=5, distort_limit=(-0.05, 0.05), prob=prob / 2, mode=MODES),
                RandOpticalDistortiond(KEYS, limit=0.1, prob=prob / 2),
                mt.EnsureTyped(KEYS, data_type="tensor", dtype=torch.float32, track_meta=False),
            ]
        )
    )
    aug.set_random_state(seed)
    return aug
