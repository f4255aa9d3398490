"""Reference measurements of the planted factors from a label (and image), in physical units.

These implement the ``measured_by`` texts of ``causal_graph.json``, so tests and later stages
(structure learning) measure the proxies the same way. Masks are spatial arrays (no channel axis);
``spacing`` is in array order (z, y, x) / (y, x), i.e. ``Geometry.array_spacing``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation, map_coordinates


def area(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Foreground area (2D, mm^2) or volume (3D, mm^3)."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing))


def axis_ratio(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Largest over second-largest principal axis length (physical coordinates)."""
    points = np.argwhere(mask) * np.asarray(spacing, dtype=float)
    if len(points) < 2:
        return 1.0
    eigen = np.sort(np.linalg.eigvalsh(np.cov(points, rowvar=False)))[::-1]
    # A one-voxel-thick axis has zero variance; a voxel's own extent keeps the ratio finite.
    floor = float(np.min(spacing)) ** 2 / 12.0
    return float(np.sqrt((eigen[0] + floor) / (eigen[1] + floor)))


def asymmetry(mask: np.ndarray) -> float:
    """1 - |A ∩ rot180(A)| / |A|: the point reflection about the centroid, linearly interpolated.

    Point reflection commutes with per-axis scaling, so index space gives the physical answer.
    """
    mask = np.asarray(mask, dtype=bool)
    total = np.count_nonzero(mask)
    if total == 0:
        return 0.0
    points = np.argwhere(mask)
    lo, hi = points.min(0), points.max(0) + 1
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(float)
    centroid = points.mean(0) - lo
    grid = np.indices(crop.shape, dtype=float)
    mirrored = map_coordinates(crop, 2.0 * centroid[:, None] - grid.reshape(len(lo), -1),
                               order=1, cval=0.0).reshape(crop.shape)
    return float(1.0 - np.minimum(crop, mirrored).sum() / total)


def ring_contrast(image: np.ndarray, mask: np.ndarray, radius: tuple[int, ...]) -> float:
    """Mean intensity inside ``mask`` minus the mean in the ring from dilating it by ``radius``
    voxels per axis (an ellipsoidal structuring element). ``image`` may have a channel axis
    first; channels are averaged.
    """
    image = np.asarray(image, dtype=float)
    if image.ndim == mask.ndim + 1:
        image = image.mean(axis=0)
    mask = np.asarray(mask, dtype=bool)
    ring = binary_dilation(mask, structure=_ellipsoid_element(radius)) & ~mask
    if not ring.any() or not mask.any():
        return 0.0
    return float(image[mask].mean() - image[ring].mean())


def background_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean inside ``mask`` minus the mean of imaged pixels (> 0) well outside it: the mask is
    dilated by a quarter of its equivalent radius first, so a bright rim (a skull) is excluded.
    """
    image = np.asarray(image, dtype=float)
    if image.ndim == mask.ndim + 1:
        image = image.mean(axis=0)
    mask = np.asarray(mask, dtype=bool)
    equivalent_radius = np.sqrt(np.count_nonzero(mask) / np.pi)  # pixels
    grow = max(1, int(round(0.25 * equivalent_radius)))
    away = ~binary_dilation(mask, structure=_ellipsoid_element((grow,) * mask.ndim)) & (image > 0)
    if not away.any() or not mask.any():
        return 0.0
    return float(image[mask].mean() - image[away].mean())


def _ellipsoid_element(radius: tuple[int, ...]) -> np.ndarray:
    radius = tuple(max(0, int(r)) for r in radius)
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grids, radius)) <= 1.0
