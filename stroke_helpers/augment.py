"""Data augmentation: the paper's list (§3), batched on tensors, one resampling per slice.

Random brightness and contrast, flips, rotation, elastic deformation, grid distortion and
optical distortion, each firing with probability ``prob`` (the paper gives no magnitudes; these
are moderate, and the deformations fire at ``prob / 2``). Intensity changes touch the image
only. The five spatial transforms are composed into **one** sampling grid per slice, and the
image channels and the mask are resampled together by a single ``grid_sample`` over the whole
batch (bilinear; the mask is thresholded at 0.5, so it stays binary and moves with the image).

Why not a library pipeline: MONAI's per-slice dictionary transforms, applied to the same list,
take about 18 % of a ``cpu``-preset epoch, and Kornia's batched ones, which
resample once per transform, were barely faster (12 ms per batch of 8). Measured on a 2-core
AVX512-BF16 CPU by ``benchmarks/model_bench.py``: 2.0-3.9 ms per batch of 8 96-px slices here
against 21-23 ms for the MONAI list (two runs); a ``cpu``-preset epoch takes 2.3 s with it and 3.2 s with the MONAI list. Resampling
once also avoids the blur of five successive bilinear interpolations.

:class:`PaperAugmentation` is called by the training loop on each batch, on the batch's device:
the few random numbers of a batch (a few per slice) are drawn from its own CPU
``torch.Generator`` (reseed with :meth:`~PaperAugmentation.set_random_state`), so a seed gives
the same draws on every device, and reach a GPU in one pinned, asynchronous copy; the sampling
grid, the resampling and everything per pixel are computed on the device, with no host sync.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class PaperAugmentation:
    """``(images (B, C, H, W), masks (B, 1, H, W)) -> (images, masks)``, each slice warped by
    its own random draw. Coordinates are normalised to ``[-1, 1]`` (``align_corners=True``)."""

    def __init__(
        self,
        prob: float = 0.5,
        seed: int = 0,
        shift: float = 0.1,  # brightness: + U(-shift, shift)
        scale: float = 0.2,  # contrast: x (1 + U(-scale, scale))
        degrees: float = 15.0,  # rotation: U(-degrees, degrees)
        elastic_px: float = 3.0,  # elastic: std of the displacement of a control point 32 px apart
        grid_cells: int = 5,  # grid distortion: cells per axis, each resized by 1 + U(-0.05, 0.05)
        grid_limit: float = 0.05,
        optical: float = 0.1,  # optical distortion: r' = r (1 + k r^2), k ~ U(-optical, optical)
    ):
        self.prob, self.shift, self.scale, self.degrees = prob, shift, scale, degrees
        self.elastic_px, self.grid_cells, self.grid_limit, self.optical = elastic_px, grid_cells, grid_limit, optical
        self.generator = torch.Generator()  # on the CPU: a seed gives the same draws on every device
        self._identities: dict[tuple, torch.Tensor] = {}
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> None:
        self.generator.manual_seed(seed % 2**63)

    def _uniform(self, b: int, limit: float, prob: float, *shape: int) -> torch.Tensor:
        """``U(-limit, limit)`` of shape ``(b, *shape)``, zero for slices where it does not fire."""
        g = self.generator
        fire = torch.rand(b, generator=g) < prob
        value = (torch.rand(b, *shape, generator=g) * 2 - 1) * limit
        return value * fire.view(b, *[1] * len(shape))

    def _draws(self, b: int, h: int, w: int) -> dict[str, torch.Tensor]:
        """Every random number of one batch, drawn from :attr:`generator` on the CPU in a fixed
        order, and the few small tensors made of them (still on the CPU)."""
        p, g = self.prob, self.generator
        d = {
            "shift": self._uniform(b, self.shift, p).view(b, 1, 1, 1),
            "scale": 1 + self._uniform(b, self.scale, p).view(b, 1, 1, 1),
        }
        # elastic: a displacement at control points every 32 px (in [-1, 1] units)
        coarse = torch.randn(b, 2, h // 32 + 2, w // 32 + 2, generator=g)
        fire = (torch.rand(b, generator=g) < p / 2).view(b, 1, 1, 1)
        px = torch.tensor([2 / (w - 1), 2 / (h - 1)]).view(1, 2, 1, 1)
        d["elastic"] = coarse * fire * self.elastic_px * px
        # grid distortion: the knots of a piecewise-linear, monotone map of each axis
        for axis in (0, 1):
            steps = 1 + self._uniform(b, self.grid_limit, p / 2, self.grid_cells)
            knots = F.pad(torch.cumsum(steps, 1), (1, 0))
            d[f"knots{axis}"] = knots / knots[:, -1:] * 2 - 1  # (B, cells + 1) from -1 to 1
        d["optical"] = self._uniform(b, self.optical, p / 2).view(b, 1, 1, 1)
        angle = self._uniform(b, math.radians(self.degrees), p)
        d["cos"], d["sin"] = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
        d["flips"] = torch.where(torch.rand(b, 2, generator=g) < p, -1.0, 1.0).view(b, 1, 1, 2)
        return d

    @staticmethod
    def _to(draws: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """The draws on ``device``: one pinned, asynchronous copy to a GPU (no host sync)."""
        if device.type == "cpu":
            return draws
        flat = torch.cat([t.flatten().float() for t in draws.values()])
        flat = flat.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else flat.to(device)
        out, start = {}, 0
        for key, t in draws.items():
            out[key] = flat[start : start + t.numel()].view(t.shape)
            start += t.numel()
        return out

    def _identity(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(H, W, 2)``: each pixel's own ``(x, y)`` in ``[-1, 1]``, made once per size and device."""
        key = (h, w, str(device))
        if key not in self._identities:
            ys, xs = torch.meshgrid(
                torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device), indexing="ij"
            )
            self._identities[key] = torch.stack([xs, ys], dim=-1)
        return self._identities[key]

    def _grid(
        self, b: int, h: int, w: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The composed sampling grid ``(B, H, W, 2)`` on ``device`` (for each output pixel, where
        to read) and the batch's draws there (the intensity changes use them too)."""
        device = torch.device(device)
        d = self._to(self._draws(b, h, w), device)
        c = self._identity(h, w, device).expand(b, h, w, 2)
        # elastic: the control points' displacement upsampled bicubically
        field = F.interpolate(d["elastic"], size=(h, w), mode="bicubic", align_corners=True)
        c = c + field.permute(0, 2, 3, 1)
        # grid distortion: each axis through its piecewise-linear map
        for axis in (0, 1):
            knots = d[f"knots{axis}"]
            t = ((c[..., axis] + 1) / 2 * self.grid_cells).clamp(0, self.grid_cells - 1e-6)
            i = t.floor().long()
            lo, hi = (knots.gather(1, (i + k).view(b, -1)).view_as(t) for k in (0, 1))
            c[..., axis] = lo + (t - i) * (hi - lo)
        # optical (barrel / pincushion) distortion
        c = c * (1 + d["optical"] * (c**2).sum(-1, keepdim=True))
        # rotation, then flips
        cos, sin = d["cos"], d["sin"]
        c = torch.stack([cos * c[..., 0] - sin * c[..., 1], sin * c[..., 0] + cos * c[..., 1]], dim=-1)
        return c * d["flips"], d

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, h, w = images.shape
        if self.prob <= 0:
            return images, masks
        grid, d = self._grid(b, h, w, images.device)
        images = (images + d["shift"].to(images)) * d["scale"].to(images)
        both = F.grid_sample(
            torch.cat([images, masks.to(images)], 1), grid.to(images), "bilinear", "zeros", align_corners=True
        )
        return both[:, :n], (both[:, n:] > 0.5).to(masks.dtype)


def paper_augmentation(prob: float = 0.5, seed: int = 0) -> PaperAugmentation:
    """The paper's augmentation list at this repository's magnitudes (:class:`PaperAugmentation`)."""
    return PaperAugmentation(prob, seed)
