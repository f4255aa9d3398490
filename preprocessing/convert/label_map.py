"""Turning raw mask values into label indices: an explicit ``--label-map``, or a default guess.

Lossy masks (JPEG) and anti-aliased edges hold values near, but not at, the intended ones, so a
value snaps to the NEAREST listed raw value. A value farther than a quarter of the gap to the next
listed value is accepted only within EDGE_RADIUS pixels of a boundary between two labels (where
compression and interpolation put it); anywhere else it is a region of its own and an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from preprocessing.errors import DatasetError

EDGE_RADIUS = 2  # pixels around a label boundary where in-between values are edge artefacts
TOLERANCE_OF_GAP = 0.25
LOSSY_ENDINGS = (".jpg", ".jpeg")


class UnmappableValues(Exception):
    """Mask values that no listed raw value explains; the converter names the file."""


@dataclass(frozen=True)
class LabelMap:
    """Raw value -> label index, as pairs sorted by raw value (frozen, so configs stay hashable)."""

    pairs: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> "LabelMap":
        """'0:0,255:1' -> LabelMap; DatasetError says what is wrong with the text."""
        pairs: dict[int, int] = {}
        for item in (part.strip() for part in text.split(",") if part.strip()):
            raw, sep, label = item.partition(":")
            try:
                raw_value, label_value = int(raw), int(label)
            except ValueError:
                raw_value, label_value = 0, -1
            if not sep or not 0 <= label_value <= 255:
                raise DatasetError(f"--label-map entry {item!r} is not RAW:LABEL with integers, "
                                   "0 <= LABEL <= 255. Fix: e.g. --label-map \"0:0,255:1\".")
            if raw_value in pairs:
                raise DatasetError(f"--label-map lists raw value {raw_value} twice. Fix: list it once.")
            pairs[raw_value] = label_value
        if not pairs:
            raise DatasetError("--label-map is empty. Fix: e.g. --label-map \"0:0,255:1\".")
        return cls(tuple(sorted(pairs.items())))

    def __str__(self) -> str:
        return ",".join(f"{raw}:{label}" for raw, label in self.pairs)

    @property
    def highest_label(self) -> int:
        return max(label for _, label in self.pairs)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map every value to its nearest listed raw value's label (uint8); UnmappableValues when
        values far from all listed ones form regions instead of edges."""
        raws = np.array([raw for raw, _ in self.pairs], dtype=float)
        labels = np.array([label for _, label in self.pairs], dtype=np.uint8)
        present = np.unique(values)
        nearest = _nearest_index(raws, present.astype(float))
        far = np.abs(present - raws[nearest]) > _tolerances(raws)[nearest]
        position = np.searchsorted(present, values)
        mapped = labels[nearest][position]
        if far.any():
            stray = far[position] & ~_near_boundary(mapped)
            if stray.any():
                shown = ", ".join(f"{v:g}" for v in np.unique(values[stray])[:8])
                raise UnmappableValues(
                    f"values {shown} ({int(stray.sum())} pixels) lie far from every listed raw "
                    f"value ({', '.join(f'{r:g}' for r in raws)}) and form regions, not edges")
        return mapped


BINARY_0_255 = LabelMap(((0, 0), (255, 1)))


def default_mask_map(values: np.ndarray, declared: frozenset[int], lossy: bool) -> LabelMap | None:
    """The mapping to use without --label-map: 0/255 -> 0/1, declared indices kept (None), or
    0/255 with JPEG noise -> 0/1 (lossy files only, so an index mask is never thresholded);
    UnmappableValues when none fits."""
    present = {float(v) for v in np.unique(values)}
    if present <= {0.0, 255.0}:
        return BINARY_0_255
    if all(v.is_integer() and int(v) in declared for v in present):
        return None
    if lossy and min(present) < 64 and max(present) >= 192:
        return BINARY_0_255
    shown = ", ".join(f"{v:g}" for v in sorted(present)[:8]) + (", ..." if len(present) > 8 else "")
    raise UnmappableValues(f"mask values {shown} are neither 0/255 nor declared label indices "
                           f"{sorted(declared)}")


def check_declared(values: np.ndarray, declared: frozenset[int]) -> np.ndarray:
    """Keep integer values as they are (uint8) when every one is a declared label."""
    present = np.unique(values)
    if np.issubdtype(present.dtype, np.floating) and not np.all(present == np.round(present)):
        raise UnmappableValues("label holds non-integer values")
    unknown = sorted({int(v) for v in present} - declared)
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        raise UnmappableValues(f"label values {shown} are not declared labels {sorted(declared)}")
    return values.astype(np.uint8)


def _nearest_index(raws: np.ndarray, values: np.ndarray) -> np.ndarray:
    right = np.clip(np.searchsorted(raws, values), 1, max(len(raws) - 1, 1))
    left = right - 1
    if len(raws) == 1:
        return np.zeros(len(values), dtype=int)
    return np.where(np.abs(values - raws[left]) <= np.abs(values - raws[right]), left, right)


def _tolerances(raws: np.ndarray) -> np.ndarray:
    """A quarter of the gap to the nearest other listed value; exact match when only one is listed."""
    if len(raws) == 1:
        return np.zeros(1)
    gaps = np.diff(raws)
    nearest_gap = np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))
    return TOLERANCE_OF_GAP * nearest_gap


def _near_boundary(mapped: np.ndarray) -> np.ndarray:
    size = 2 * EDGE_RADIUS + 1
    return ndimage.maximum_filter(mapped, size=size) != ndimage.minimum_filter(mapped, size=size)
