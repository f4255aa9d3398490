"""Crop a case to the bounding box of its nonzero region, and put cropped arrays back.

Owns nnU-Net's "crop to nonzero" step: the mask of voxels that are nonzero in any channel (holes
filled), its bounding box (stored with the case as JSON), and the exact inverse that prediction
uses to land a cropped result on the original grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_fill_holes


@dataclass(frozen=True)
class BoundingBox:
    """Half-open box ``[starts, stops)`` over the spatial axes, in array order (z, y, x)."""

    starts: tuple[int, ...]
    stops: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.starts) != len(self.stops):
            raise ValueError(f"bounding box starts {self.starts} and stops {self.stops} differ in length")
        if any(a < 0 or a > b for a, b in zip(self.starts, self.stops)):
            raise ValueError(f"bounding box needs 0 <= start <= stop per axis, got {self.starts} {self.stops}")

    @classmethod
    def full(cls, shape: Sequence[int]) -> "BoundingBox":
        """The box covering a whole image: what cropping means when nothing can be cropped."""
        return cls(tuple(0 for _ in shape), tuple(int(s) for s in shape))

    @property
    def ndim(self) -> int:
        return len(self.starts)

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.starts, self.stops))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.starts, self.stops))

    def to_list(self) -> list[list[int]]:
        """``[[start, stop], ...]`` per axis, the JSON-safe form nnU-Net also uses."""
        return [[int(a), int(b)] for a, b in zip(self.starts, self.stops)]

    @classmethod
    def from_list(cls, data: Sequence[Sequence[int]]) -> "BoundingBox":
        pairs = [tuple(int(v) for v in pair) for pair in data]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"bounding box list must hold [start, stop] pairs, got {data!r}")
        return cls(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


@dataclass(frozen=True, eq=False)
class CropResult:
    """A case after cropping; ``nonzero_mask`` is cropped too, for masked normalisation."""

    images: np.ndarray  # (C, *cropped spatial)
    label: np.ndarray | None  # same leading layout as given, cropped spatially
    bbox: BoundingBox
    nonzero_mask: np.ndarray  # bool, (*cropped spatial)


def nonzero_mask(images: np.ndarray) -> np.ndarray:
    """Voxels nonzero in any channel, holes filled, so dark tissue inside the body stays in."""
    if images.ndim < 2:
        raise ValueError(f"expected (C, *spatial) images, got shape {images.shape}")
    mask = np.any(images != 0, axis=0)
    return binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> BoundingBox:
    """Tightest box around the True voxels; the whole image when there are none."""
    if not mask.any():
        return BoundingBox.full(mask.shape)
    starts, stops = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        starts.append(int(hit[0]))
        stops.append(int(hit[-1]) + 1)
    return BoundingBox(tuple(starts), tuple(stops))


def crop(array: np.ndarray, bbox: BoundingBox) -> np.ndarray:
    """The box's region of the trailing spatial axes; works for (C, *spatial) and (*spatial).

    Returns a copy so the cropped case does not keep the full-size array alive.
    """
    _check_fits(array.shape, bbox)
    lead = (slice(None),) * (array.ndim - bbox.ndim)
    return array[lead + bbox.slices].copy()


def uncrop(array: np.ndarray, bbox: BoundingBox, full_shape: Sequence[int],
           fill: float | int = 0) -> np.ndarray:
    """Inverse of ``crop``: ``array`` placed at ``bbox`` inside a ``fill``-valued full array.

    ``full_shape`` is the spatial shape before cropping; leading (channel) axes come from
    ``array`` (a full shape including them is accepted if they agree).
    """
    full_shape = tuple(int(s) for s in full_shape)
    if len(full_shape) < bbox.ndim:
        raise ValueError(f"full shape {full_shape} has fewer axes than the bounding box ({bbox.ndim})")
    spatial, given_lead = full_shape[len(full_shape) - bbox.ndim:], full_shape[:len(full_shape) - bbox.ndim]
    lead_shape = array.shape[:array.ndim - bbox.ndim]
    if given_lead and given_lead != lead_shape:
        raise ValueError(f"full shape {full_shape} does not match the leading axes of {array.shape}")
    if array.shape[array.ndim - bbox.ndim:] != bbox.shape:
        raise ValueError(f"array of spatial shape {array.shape[array.ndim - bbox.ndim:]} does not "
                         f"fill bounding box of shape {bbox.shape}")
    _check_fits(spatial, bbox)
    out = np.full(lead_shape + spatial, fill, dtype=array.dtype)
    out[(slice(None),) * len(lead_shape) + bbox.slices] = array
    return out


def crop_case(images: np.ndarray, label: np.ndarray | None = None) -> CropResult:
    """Crop images (and label) to the nonzero region of the images.

    Unlike nnU-Net the label is not rewritten (nnU-Net marks outside-mask background as -1);
    the cropped mask is returned instead so that the caller decides how to use it.
    """
    mask = nonzero_mask(images)
    bbox = bounding_box(mask)
    cropped_label = None
    if label is not None:
        if label.shape[label.ndim - bbox.ndim:] != mask.shape:
            raise ValueError(f"label shape {label.shape} does not match image shape {images.shape}")
        cropped_label = crop(label, bbox)
    return CropResult(crop(images, bbox), cropped_label, bbox, crop(mask, bbox))


def _check_fits(shape: Sequence[int], bbox: BoundingBox) -> None:
    if len(shape) < bbox.ndim:
        raise ValueError(f"array of shape {tuple(shape)} has fewer axes than the bounding box ({bbox.ndim})")
    spatial = tuple(shape)[len(shape) - bbox.ndim:]
    if any(stop > size for stop, size in zip(bbox.stops, spatial)):
        raise ValueError(f"bounding box {bbox.to_list()} exceeds spatial shape {spatial}")
