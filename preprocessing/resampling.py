"""Resample images and label maps between voxel spacings, following nnU-Net's rules.

Owns the target-shape arithmetic, the anisotropy rule (the coarse axis of a thick-slice volume
is resampled on its own, with nearest neighbour by default, so slices are never smeared into one
another) and label resampling that never invents a label value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import affine_transform
from skimage.transform import resize

LABEL_MODES = ("onehot_linear", "nearest")


@dataclass(frozen=True)
class ResamplingConfig:
    """Interpolation orders and the anisotropy rule; defaults are nnU-Net's."""

    image_order: int = 3
    label_mode: str = "onehot_linear"  # or "nearest"
    anisotropy_threshold: float = 3.0
    out_of_plane_order: int = 0

    def __post_init__(self) -> None:
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}")
        for name in ("image_order", "out_of_plane_order"):
            if not 0 <= getattr(self, name) <= 5:
                raise ValueError(f"{name} must be a spline order in 0..5, got {getattr(self, name)}")
        if self.anisotropy_threshold <= 1:
            raise ValueError(f"anisotropy_threshold must be > 1, got {self.anisotropy_threshold}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ResamplingConfig":
        return cls(**data)


def target_shape(shape: Sequence[int], spacing: Sequence[float],
                 target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Spatial shape that covers the same physical extent at ``target_spacing`` (at least 1)."""
    _check_lengths(shape, spacing, target_spacing)
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def anisotropic_axis(spacing: Sequence[float], target_spacing: Sequence[float],
                     threshold: float) -> int | None:
    """The axis to resample separately, or None (nnU-Net's ``get_do_separate_z`` rule).

    The current spacing decides first, then the target spacing; only 3D grids with one unique
    coarsest axis qualify.
    """
    for candidate in (spacing, target_spacing):
        values = np.asarray(candidate, dtype=float)
        if values.size != 3 or values.max() / values.min() <= threshold:
            continue
        coarse = np.flatnonzero(values == values.max())
        return int(coarse[0]) if coarse.size == 1 else None
    return None


def resample_images(images: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                    config: ResamplingConfig = ResamplingConfig()) -> np.ndarray:
    """Images (C, *spatial) from ``spacing`` to ``target_spacing``; float32."""
    new_shape = target_shape(images.shape[1:], spacing, target_spacing)
    return resample_images_to_shape(images, new_shape, spacing, config, target_spacing)


def resample_images_to_shape(images: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float],
                             config: ResamplingConfig = ResamplingConfig(),
                             target_spacing: Sequence[float] | None = None) -> np.ndarray:
    """Images (C, *spatial) onto ``new_shape``: inverting preprocessing, resizing probabilities.

    ``target_spacing`` only feeds the anisotropy rule; by default it is the spacing that
    ``new_shape`` implies for the same physical extent.
    """
    if images.ndim != len(spacing) + 1:
        raise ValueError(f"images of shape {images.shape} need (C, *spatial) with {len(spacing)} "
                         "spatial axes")
    new_shape = tuple(int(s) for s in new_shape)
    axis = _separate_axis(images.shape[1:], new_shape, spacing, target_spacing, config)
    out = np.empty((images.shape[0], *new_shape), dtype=np.float32)
    for c in range(images.shape[0]):
        channel = images[c].astype(np.float32)
        out[c] = _resample_float(channel, new_shape, config.image_order, axis, config.out_of_plane_order)
    return out


def resample_label(label: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float],
                   config: ResamplingConfig = ResamplingConfig()) -> np.ndarray:
    """Integer label map (*spatial, optionally with leading axes) to ``target_spacing``."""
    new_shape = target_shape(label.shape[label.ndim - len(spacing):], spacing, target_spacing)
    return resample_label_to_shape(label, new_shape, spacing, config, target_spacing)


def resample_label_to_shape(label: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float],
                            config: ResamplingConfig = ResamplingConfig(),
                            target_spacing: Sequence[float] | None = None) -> np.ndarray:
    """Integer label map onto ``new_shape``, keeping its dtype; only existing values appear.

    Leading axes (e.g. nnU-Net's (1, z, y, x)) are resampled one by one.
    """
    if label.ndim < len(spacing):
        raise ValueError(f"label of shape {label.shape} has fewer than {len(spacing)} spatial axes")
    new_shape = tuple(int(s) for s in new_shape)
    spatial = label.shape[label.ndim - len(spacing):]
    lead = label.shape[:label.ndim - len(spacing)]
    axis = _separate_axis(spatial, new_shape, spacing, target_spacing, config)
    out = np.empty(lead + new_shape, dtype=label.dtype)
    for index in np.ndindex(*lead):
        out[index] = _resample_one_label(label[index], new_shape, axis, config)
    return out


def _separate_axis(shape: Sequence[int], new_shape: Sequence[int], spacing: Sequence[float],
                   target_spacing: Sequence[float] | None, config: ResamplingConfig) -> int | None:
    if len(new_shape) != len(shape):
        raise ValueError(f"new shape {tuple(new_shape)} has {len(new_shape)} axes, array has {len(shape)}")
    if target_spacing is None:  # same physical extent on the new grid
        target_spacing = [s * n / m for s, n, m in zip(spacing, shape, new_shape)]
    _check_lengths(shape, spacing, target_spacing)
    return anisotropic_axis(spacing, target_spacing, config.anisotropy_threshold)


def _resample_one_label(label: np.ndarray, new_shape: tuple[int, ...], axis: int | None,
                        config: ResamplingConfig) -> np.ndarray:
    if label.shape == new_shape:
        return label.copy()
    if config.label_mode == "nearest":
        resampled = _resample_float(label.astype(np.float64), new_shape, 0, axis, 0)
        return np.rint(resampled).astype(label.dtype)
    # One-hot + linear, then argmax: smoother borders than nearest, and every voxel gets a
    # value that was present (nnU-Net thresholds at 0.5, which can leave gaps where 3 classes meet).
    # Ties go to the higher label, as nnU-Net's in-order overwrite does, so thin foreground
    # structures are not eroded on every even downsampling.
    classes = np.unique(label)
    out = np.full(new_shape, classes[0], dtype=label.dtype)
    if classes.size == 1:
        return out
    best = np.full(new_shape, -np.inf, dtype=np.float32)
    for value in classes:
        score = _resample_float((label == value).astype(np.float32), new_shape, 1, axis,
                                config.out_of_plane_order)
        better = score >= best
        out[better] = value
        best[better] = score[better]
    return out


def _resample_float(array: np.ndarray, new_shape: tuple[int, ...], order: int, axis: int | None,
                    out_of_plane_order: int) -> np.ndarray:
    """One spatial float array onto ``new_shape``; ``axis`` (if any) is resampled on its own."""
    if array.shape == new_shape:
        return array.copy()
    if axis is None:
        return resize(array, new_shape, order=order, mode="edge", anti_aliasing=False)
    stack = np.moveaxis(array, axis, 0)  # slices along the coarse axis
    in_plane = tuple(n for i, n in enumerate(new_shape) if i != axis)
    if stack.shape[1:] != in_plane:
        stack = np.stack([resize(s, in_plane, order=order, mode="edge", anti_aliasing=False)
                          for s in stack])
    if stack.shape[0] != new_shape[axis]:
        stack = _resample_first_axis(stack, new_shape[axis], out_of_plane_order)
    return np.ascontiguousarray(np.moveaxis(stack, 0, axis))


def _resample_first_axis(stack: np.ndarray, size: int, order: int) -> np.ndarray:
    """Along axis 0 only, with voxel centres aligned as in skimage/nnU-Net (edge values repeat)."""
    scale = stack.shape[0] / size
    coords = scale * (np.arange(size) + 0.5) - 0.5
    if order == 0:  # pick whole slices: no mixing of neighbouring thick slices
        index = np.clip(np.floor(coords + 0.5), 0, stack.shape[0] - 1).astype(np.intp)
        return np.take(stack, index, axis=0)
    matrix = np.ones(stack.ndim)
    matrix[0] = scale
    offset = np.zeros(stack.ndim)
    offset[0] = 0.5 * scale - 0.5
    return affine_transform(stack, matrix, offset=offset, output_shape=(size, *stack.shape[1:]),
                            order=order, mode="nearest")


def _check_lengths(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> None:
    if not len(shape) == len(spacing) == len(target):
        raise ValueError(f"shape {tuple(shape)}, spacing {tuple(spacing)} and target spacing "
                         f"{tuple(target)} must have the same number of axes")
    if min(spacing) <= 0 or min(target) <= 0:
        raise ValueError(f"spacings must be positive, got {tuple(spacing)} and {tuple(target)}")
