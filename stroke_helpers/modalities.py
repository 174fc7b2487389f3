"""What each image modality is: one table, read by the loader, the datasets, the figures, the
widgets, the grid and the phantom.

A row (:class:`Modality`) says everything the package knows about one kind of image: its file
token in the ISLES 2018 archives, its on-disk dtype, its units, how the network's input is
normalised, how it is displayed, and whether it is a network input. :data:`TABLE` holds the rows;
the network inputs come first, in the canonical channel order ``CT, CBV, CBF, MTT, Tmax``
(:data:`MODALITIES`, docs/decisions.md §1): preprocessed images are ``(N, 5, S, S)`` in that
order and trained checkpoints depend on it. Then the files that are not inputs: ``4DPWI`` (the
raw perfusion series) and ``OT`` (the expert lesion mask).

Adding a modality is one row here (plus its tests): the loader finds its files by the row's
token, the phantom writes it in the row's dtype, figures and widgets show it in the row's
window, colormap and units. An unknown name is refused with one line naming the valid choices
(:func:`modality`, :func:`canonical_modalities`).

Units: CT and the 4D series in HU, MTT and Tmax in seconds. The CBF and CBV maps of ISLES 2018
(RAPID, and the phantom's, which imitate them) are uncalibrated ("a.u."), only proportional to
their physical units (CBF mL/100 g/min, CBV mL/100 g): their normalisation divides by the
study's brain mean, and their display window and slider range come from the volume itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class ModalityError(ValueError):
    """An unknown modality name, or a modality used where it cannot be (e.g. a non-input normalised)."""


@dataclass(frozen=True)
class Modality:
    """One kind of image, as the ISLES 2018 archives provide it and as the package uses it.

    Attributes
    ----------
    name : short name, the key everywhere in the package (``study.images["CBF"]``).
    token : file-name token in the archives (``SMIR.Brain.XX.O.CT_CBF.345563.nii``); an ``MR_``
        prefix is accepted when reading.
    dtype : on-disk dtype of the official files (what the phantom writes).
    unit : units of the values as provided (``"a.u."`` for uncalibrated maps).
    long_name : one line saying what it is.
    kind : ``"image"`` (a 3D scan), ``"map"`` (a perfusion map computed from the series: zero
        outside the brain), ``"series"`` (4D, ``(X, Y, Z, T)``) or ``"mask"`` (binary).
    is_input : whether it is a network input channel (those rows come first, in channel order).
    normalisation : ``"fixed"``: ``(x - lo) / (hi - lo)`` with ``(lo, hi) = norm_range``;
        ``"brain_mean"``: ``x`` divided by its mean over the brain mask (uncalibrated maps);
        ``None`` for rows that are not inputs. Either is then clipped to ``[0, clip]``.
    norm_range : ``(lo, hi)`` of a ``"fixed"`` normalisation, in :attr:`unit`.
    clip : upper clip of the normalised image (the lower is 0).
    window : display window ``(lo, hi)`` in :attr:`unit`; ``hi = None``: the volume's own 99th
        percentile of positive voxels (uncalibrated maps).
    cmap : matplotlib colormap.
    slider : ``(min, max, step)`` of a window slider in :attr:`unit`; ``None``: from the volume.
    physical_unit : units of true (calibrated) maps; defaults to :attr:`unit`.
    aliases : other upper-case tokens that name it in file names (``PWI`` for ``4DPWI``).
    id_offset : position of its file id among a case's consecutive ids in the official training
        set (``4DPWI`` = n, ``CT`` = n + 1, ...); ``None``: not in the official archives.
    """

    name: str
    token: str
    dtype: type
    unit: str
    long_name: str
    kind: str
    is_input: bool = False
    normalisation: str | None = None
    norm_range: tuple[float, float] = (0.0, 1.0)
    clip: float = 1.0
    window: tuple[float, float | None] = (0.0, 1.0)
    cmap: str = "magma"
    slider: tuple[float, float, float] | None = None
    physical_unit: str | None = None
    aliases: tuple[str, ...] = ()
    id_offset: int | None = None

    def __post_init__(self):
        if self.physical_unit is None:
            object.__setattr__(self, "physical_unit", self.unit)
        if self.normalisation not in (None, "fixed", "brain_mean"):
            raise ModalityError(
                f"{self.name}: unknown normalisation {self.normalisation!r}; choose fixed or brain_mean"
            )
        if self.kind not in ("image", "map", "series", "mask"):
            raise ModalityError(f"{self.name}: unknown kind {self.kind!r}; choose image, map, series or mask")
        if self.is_input and self.normalisation is None:
            raise ModalityError(f"{self.name}: a network input needs a normalisation")

    def normalise(self, x: np.ndarray, brain: np.ndarray) -> np.ndarray:
        """The network's view of ``x`` ``(X, Y, Z)`` in :attr:`unit`: float32 ``(X, Y, Z)`` in
        ``[0, clip]``. ``brain`` is the boolean ``(X, Y, Z)`` brain mask (used by ``"brain_mean"``:
        an empty mask or a non-positive mean gives zeros)."""
        if self.normalisation == "fixed":
            lo, hi = self.norm_range
            out = np.clip((x - lo) / (hi - lo), 0, self.clip)
        elif self.normalisation == "brain_mean":
            ref = float(x[brain].mean()) if brain.any() else 0.0
            out = np.clip(x / ref, 0, self.clip) if ref > 0 else np.zeros_like(x)
        else:
            raise ModalityError(f"{self.name} is not a network input, so it has no normalisation")
        return out.astype(np.float32)

    @property
    def normalised_as(self) -> str:
        """How the input is scaled, in words: ``"/ 100 HU"``, ``"/ brain mean"``, ``"/ 20 s"``."""
        if self.normalisation == "brain_mean":
            return "/ brain mean"
        lo, hi = self.norm_range
        return f"/ {hi - lo:g} {self.unit}"

    @property
    def normalised_window(self) -> tuple[float, float]:
        """Display window of the normalised image: 0 to its clip, at most 1.5 (above it the
        uncalibrated maps' long tail would wash the picture out)."""
        return 0.0, min(self.clip, 1.5)

    @property
    def calibrated(self) -> bool:
        """Whether values mean the same on every scanner (False: window and slider from the volume)."""
        return self.window[1] is not None


#: Every modality, by name: network inputs first, in channel order, then the other files.
TABLE: dict[str, Modality] = {
    m.name: m
    for m in (
        Modality(
            "CT", "CT", np.int32, "HU", "non-contrast CT (NCCT)", "image", is_input=True,
            normalisation="fixed", norm_range=(0.0, 100.0), clip=1.0,
            window=(0, 100), cmap="gray", slider=(-100.0, 1500.0, 1.0), id_offset=1,
        ),
        Modality(
            "CBV", "CT_CBV", np.uint16, "a.u.", "cerebral blood volume", "map", is_input=True,
            normalisation="brain_mean", clip=4.0, window=(0, None), physical_unit="mL/100 g", id_offset=3,
        ),
        Modality(
            "CBF", "CT_CBF", np.uint16, "a.u.", "cerebral blood flow", "map", is_input=True,
            normalisation="brain_mean", clip=4.0, window=(0, None), physical_unit="mL/100 g/min", id_offset=2,
        ),
        Modality(
            "MTT", "CT_MTT", np.float64, "s", "mean transit time", "map", is_input=True,
            normalisation="fixed", norm_range=(0.0, 20.0), clip=1.5,
            window=(0, 20), slider=(0.0, 30.0, 0.1), id_offset=4,
        ),
        Modality(
            "Tmax", "CT_Tmax", np.float64, "s", "time to maximum of the residue function", "map", is_input=True,
            normalisation="fixed", norm_range=(0.0, 20.0), clip=1.5,
            window=(0, 20), slider=(0.0, 30.0, 0.1), id_offset=5,
        ),
        Modality(
            "4DPWI", "CT_4DPWI", np.int16, "HU", "4D CT perfusion series (X, Y, Z, time)", "series",
            window=(0, 150), cmap="gray", slider=(-100, 1000, 1), aliases=("PWI",), id_offset=0,
        ),
        Modality("OT", "OT", np.uint8, "", "expert lesion mask (drawn on DWI)", "mask", cmap="gray", id_offset=6),
    )
}  # fmt: skip

#: Network input channels in the canonical order (docs/decisions.md §1; checkpoints depend on it).
MODALITIES: tuple[str, ...] = tuple(name for name, m in TABLE.items() if m.is_input)
#: Every input, as ``--modalities`` and the grid's "All" column write it.
ALL = ",".join(MODALITIES)
#: The inputs that are perfusion maps (zero outside the brain): every input but the CT.
PERFUSION_MAPS: tuple[str, ...] = tuple(m for m in MODALITIES if TABLE[m].kind == "map")


def modality(name: str) -> Modality:
    """The row of ``name``; an unknown name raises :class:`ModalityError` in one line."""
    try:
        return TABLE[name]
    except (KeyError, TypeError):
        raise ModalityError(f"unknown modality {name}; choose from {','.join(TABLE)}") from None


def canonical_modalities(modalities: str | Iterable[str], allow_empty: bool = False) -> tuple[str, ...]:
    """Input modalities (a comma-separated string or names) checked and put in the canonical
    channel order of :data:`MODALITIES`: the one place a modality list is validated.

    >>> canonical_modalities("Tmax,CBV")
    ('CBV', 'Tmax')
    """
    names = [m for m in modalities.split(",") if m] if isinstance(modalities, str) else list(modalities)
    unknown = [str(m) for m in names if m not in MODALITIES]
    if unknown or not (names or allow_empty):
        raise ModalityError(f"unknown modality {', '.join(unknown) or '(none)'}; choose from {ALL}")
    return tuple(m for m in MODALITIES if m in names)


def channel_indices(modalities: str | Iterable[str]) -> list[int]:
    """Channel index of each modality in the preprocessed ``(N, 5, S, S)`` images, in channel order."""
    return [MODALITIES.index(m) for m in canonical_modalities(modalities)]


def channel_index(name: str) -> int:
    """Channel of one input modality in the preprocessed images (``channel_index("Tmax") == 4``)."""
    return channel_indices((name,))[0]


def file_modalities() -> tuple[str, ...]:
    """Every modality a case folder may hold, in table order."""
    return tuple(TABLE)


def id_order() -> tuple[str, ...]:
    """Modalities of the official archives in the order of their consecutive file ids."""
    rows = [m for m in TABLE.values() if m.id_offset is not None]
    return tuple(m.name for m in sorted(rows, key=lambda m: m.id_offset))


def from_token(key: str) -> str | None:
    """The modality named by an upper-case file-name token (``"TMAX"``, ``"CT_CBF"``, ``"PWI"``), or None."""
    key = key.upper()
    for m in TABLE.values():
        if key in (m.name.upper(), m.token.upper(), *m.aliases):
            return m.name
    return None


def normalised_label(names: Iterable[str]) -> str:
    """``"CT / 100 HU, CBV and CBF / brain mean, MTT and Tmax / 20 s"``: how each input is scaled."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(modality(name).normalised_as, []).append(name)
    return ", ".join(f"{' and '.join(ns)} {how}" for how, ns in groups.items())
