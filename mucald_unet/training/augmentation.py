"""Training-time augmentation of patch batches, composed from batchgenerators transforms.

batchgenerators draws from numpy's global ``np.random`` (and its Gaussian noise from Python's
global ``random``), not from a generator we pass in. For an exact resume the training loop
calls ``seed_augmentation`` once and stores ``augmentation_rng_state()`` in each checkpoint,
then hands it back to ``restore_augmentation_rng_state`` when it resumes.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

with warnings.catch_warnings():  # keep batchgenerators' import-time chatter out of training logs
    warnings.simplefilter("ignore")
    from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
    from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                             ContrastAugmentationTransform, GammaTransform)
    from batchgenerators.transforms.noise_transforms import GaussianNoiseTransform
    from batchgenerators.transforms.spatial_transforms import SpatialTransform

ANISOTROPY_RATIO = 3.0  # like nnU-Net: a 3D patch this much longer than deep rotates in-plane only

Batch = tuple[np.ndarray, np.ndarray]
_RANGES = ("scale_range", "gamma_range", "noise_variance", "brightness_range", "contrast_range")


@dataclass(frozen=True)
class AugmentationConfig:
    """Which augmentations run and how strongly; probabilities are per sample (mirror: per axis).

    Defaults follow nnU-Net but are a little milder, since tiny CPU runs see few batches.
    """

    enabled: bool = True
    p_rotation: float = 0.2
    max_rotation_degrees: float = 15.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.25)
    p_mirror: float = 0.5
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"augmentation setting 'enabled' must be true or false, got {self.enabled!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation probability {f.name!r} must lie in [0, 1], got {value}")
            if f.name in _RANGES and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"augmentation range {f.name!r} must be (low, high) with low <= high, "
                                 f"got {value}")
        if self.max_rotation_degrees < 0:
            raise ValueError(f"max_rotation_degrees must be >= 0, got {self.max_rotation_degrees}")
        if self.scale_range[0] <= 0 or self.noise_variance[0] < 0:
            raise ValueError("scale_range must be positive and noise_variance non-negative, got "
                             f"{self.scale_range} and {self.noise_variance}")

    def mirrored_axes(self, ndim: int) -> tuple[int, ...]:
        """The patch axes training flips (all of them, or none): what test-time mirroring may undo."""
        return tuple(range(ndim)) if self.enabled and self.p_mirror > 0 else ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ranges as lists), recorded in the run's config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AugmentationConfig":
        """Inverse of ``to_dict``; missing keys take defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting {unknown[0]!r}; known settings: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in _RANGES:
                values[key] = tuple(float(v) for v in value)
            elif key == "enabled":
                values[key] = value
            else:
                values[key] = float(value)
        return cls(**values)


class AxisMirrorTransform(AbstractTransform):
    """Flips each listed spatial axis of a sample with its own probability.

    batchgenerators' ``MirrorTransform`` fixes the per-axis chance at 0.5; the config makes it a
    setting, so p = 1 flips every axis (which also makes the transform testable).
    """

    def __init__(self, axes: tuple[int, ...], p_per_axis: float, data_key: str = "data",
                 label_key: str = "seg") -> None:
        self.axes = axes
        self.p_per_axis = p_per_axis
        self.data_key = data_key
        self.label_key = label_key

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data, seg = data_dict[self.data_key], data_dict.get(self.label_key)
        for b in range(len(data)):
            for axis in self.axes:
                if np.random.uniform() < self.p_per_axis:
                    data[b] = np.flip(data[b], axis + 1).copy()
                    if seg is not None:
                        seg[b] = np.flip(seg[b], axis + 1).copy()
        return data_dict


class BatchAugmentation:
    """Callable on (images (B, C, *patch) float32, labels (B, 1, *patch) int16); keeps both."""

    def __init__(self, transform: AbstractTransform | None, patch_size: tuple[int, ...]) -> None:
        self.transform = transform
        self.patch_size = tuple(patch_size)

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> Batch:
        expected = (len(images), 1, *self.patch_size)
        if images.shape[2:] != self.patch_size or labels.shape != expected:
            raise ValueError(f"augmentation built for patch {self.patch_size} got images {images.shape} "
                             f"and labels {labels.shape}; expected labels {expected}")
        if self.transform is None:
            return images, labels
        # copies: batchgenerators edits arrays in place, and the sampler's batch must stay intact
        out = self.transform(data=images.astype(np.float32, copy=True), seg=labels.astype(np.float32))
        return (np.ascontiguousarray(out["data"], dtype=np.float32),
                np.rint(out["seg"]).astype(np.int16))

    def __repr__(self) -> str:
        return f"BatchAugmentation({self.transform!r})"


def build_augmentation(config: AugmentationConfig, patch_size: tuple[int, ...]) -> Callable[[np.ndarray, np.ndarray], Batch]:
    """The augmentation for one patch size; ``enabled=False`` gives the identity."""
    patch_size = tuple(int(s) for s in patch_size)
    if len(patch_size) not in (2, 3):
        raise ValueError(f"patch_size must have 2 or 3 axes, got {patch_size}")
    if not config.enabled:
        return BatchAugmentation(None, patch_size)
    transforms: list[AbstractTransform] = []
    if config.p_rotation > 0 or config.p_scale > 0:
        transforms.append(_spatial_transform(config, patch_size))
    if config.p_noise > 0:
        transforms.append(GaussianNoiseTransform(config.noise_variance, p_per_sample=config.p_noise))
    if config.p_brightness > 0:
        transforms.append(BrightnessMultiplicativeTransform(config.brightness_range, per_channel=True,
                                                            p_per_sample=config.p_brightness))
    if config.p_contrast > 0:
        transforms.append(ContrastAugmentationTransform(config.contrast_range, preserve_range=True,
                                                        per_channel=True, p_per_sample=config.p_contrast))
    if config.p_gamma > 0:
        transforms.append(GammaTransform(config.gamma_range, invert_image=False, per_channel=True,
                                         retain_stats=True, p_per_sample=config.p_gamma))
    if config.mirrored_axes(len(patch_size)):
        transforms.append(AxisMirrorTransform(config.mirrored_axes(len(patch_size)), config.p_mirror))
    return BatchAugmentation(Compose(transforms), patch_size)


def _spatial_transform(config: AugmentationConfig, patch_size: tuple[int, ...]) -> SpatialTransform:
    """Rotation and scaling about the patch centre; labels by nearest neighbour, no elastic.

    The output grid is the patch itself, so corners rotated in from outside become 0 (image
    and background label), the same values the sampler pads with.
    """
    angle = float(np.deg2rad(config.max_rotation_degrees))
    angles = [(-angle, angle)] * len(patch_size)
    if len(patch_size) == 3 and max(patch_size) / min(patch_size) > ANISOTROPY_RATIO:
        # rotating out of plane would smear a few thick slices; rotate about the short axis only
        short = int(np.argmin(patch_size))
        angles = [a if d == short else (0.0, 0.0) for d, a in enumerate(angles)]
    angles += [(0.0, 0.0)] * (3 - len(angles))
    return SpatialTransform(
        patch_size, patch_center_dist_from_border=None, do_elastic_deform=False,
        do_rotation=config.p_rotation > 0, angle_x=angles[0], angle_y=angles[1], angle_z=angles[2],
        p_rot_per_sample=config.p_rotation, do_scale=config.p_scale > 0, scale=config.scale_range,
        p_scale_per_sample=config.p_scale, border_mode_data="constant", border_cval_data=0, order_data=3,
        border_mode_seg="constant", border_cval_seg=0, order_seg=0, random_crop=False)


def seed_augmentation(seed: int) -> None:
    """Seed the two global generators batchgenerators draws from."""
    np.random.seed(seed)
    random.seed(seed)


def augmentation_rng_state() -> dict[str, Any]:
    """Both global generator states as plain dicts, lists and numbers, so that a checkpoint holding
    them loads with ``torch.load(weights_only=True)`` (numpy's own state carries an ndarray)."""
    numpy_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    return {"numpy": {"bit_generator": str(numpy_state["bit_generator"]),
                      "state": {"key": numpy_state["state"]["key"].tolist(),
                                "pos": int(numpy_state["state"]["pos"])},
                      "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
            "python": {"version": version, "internal": list(internal), "gauss": gauss}}


def restore_augmentation_rng_state(state: Mapping[str, Any]) -> None:
    np.random.set_state(dict(state["numpy"]))  # numpy accepts the dict form, key as a list
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
