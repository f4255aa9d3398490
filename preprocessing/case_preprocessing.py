"""One case from raw arrays to training arrays, and back: crop, normalise, resample.

``preprocess_case`` is the only implementation of this path: training data and prediction
inputs both go through it. ``CaseProperties`` records what is needed to invert it exactly onto
the original grid (geometry, crop box, shapes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from preprocessing.cropping import BoundingBox, crop_case, uncrop
from preprocessing.geometry import Geometry
from preprocessing.normalization import NormalizationScheme, normalization_from_dict, normalize_channels
from preprocessing.resampling import (ResamplingConfig, resample_images, resample_images_to_shape,
                                      resample_label, resample_label_to_shape)

FOREGROUND_SAMPLES_PER_CLASS = 10_000  # locations kept per class for foreground oversampling


@dataclass(frozen=True)
class CasePreprocessingConfig:
    """The plan's per-client preprocessing decisions, in the form this package understands."""

    target_spacing: tuple[float, ...]  # array order
    normalization: tuple[NormalizationScheme, ...]
    use_nonzero_mask: bool
    resampling: ResamplingConfig = field(default_factory=ResamplingConfig)

    @classmethod
    def from_plan_fields(cls, target_spacing, normalization, use_nonzero_mask, resampling) -> "CasePreprocessingConfig":
        return cls(tuple(float(v) for v in target_spacing),
                   tuple(normalization_from_dict(dict(n)) for n in normalization),
                   bool(use_nonzero_mask), ResamplingConfig.from_dict(dict(resampling)))

    def digest(self) -> str:
        """Changes whenever a setting that alters the output changes (resume uses it)."""
        settings = {"target_spacing": self.target_spacing,
                    "normalization": [n.to_dict() for n in self.normalization],
                    "use_nonzero_mask": self.use_nonzero_mask, "resampling": self.resampling.to_dict()}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CaseProperties:
    case_id: str
    geometry: Geometry  # the original grid
    bbox: BoundingBox  # crop box in the original array
    shape_after_crop: tuple[int, ...]
    shape_after_resampling: tuple[int, ...]
    target_spacing: tuple[float, ...]
    config_digest: str
    source_stamp: str = ""  # names, sizes and mtimes of the raw files it was made from

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "geometry": self.geometry.to_dict(), "bbox": self.bbox.to_list(),
                "shape_after_crop": list(self.shape_after_crop),
                "shape_after_resampling": list(self.shape_after_resampling),
                "target_spacing": list(self.target_spacing), "config_digest": self.config_digest,
                "source_stamp": self.source_stamp}

    @classmethod
    def from_dict(cls, data: dict) -> "CaseProperties":
        return cls(str(data["case_id"]), Geometry.from_dict(data["geometry"]),
                   BoundingBox.from_list(data["bbox"]), tuple(data["shape_after_crop"]),
                   tuple(data["shape_after_resampling"]), tuple(data["target_spacing"]),
                   str(data["config_digest"]), str(data.get("source_stamp", "")))


@dataclass(frozen=True, eq=False)
class PreprocessedCase:
    images: np.ndarray  # float32 (C, *spatial) at the target spacing
    label: np.ndarray | None  # uint8/int16 (*spatial), None for unlabelled cases
    foreground: dict[int, np.ndarray]  # label value -> (n, ndim) voxel coordinates
    properties: CaseProperties


def preprocess_case(case_id: str, images: np.ndarray, label: np.ndarray | None, geometry: Geometry,
                    config: CasePreprocessingConfig, seed: int = 0) -> PreprocessedCase:
    """Crop to nonzero, normalise (inside the nonzero mask if planned), resample to the target."""
    cropped = crop_case(images, label)
    mask = cropped.nonzero_mask if config.use_nonzero_mask else None
    normalised = normalize_channels(cropped.images, config.normalization, mask)
    spacing = geometry.array_spacing
    resampled = resample_images(normalised, spacing, config.target_spacing, config.resampling)
    out_label = None
    if cropped.label is not None:
        out_label = resample_label(cropped.label, spacing, config.target_spacing, config.resampling)
        out_label = out_label.astype(np.uint8 if out_label.max(initial=0) < 256 else np.int16)
    properties = CaseProperties(case_id, geometry, cropped.bbox, tuple(cropped.images.shape[1:]),
                                tuple(resampled.shape[1:]), config.target_spacing, config.digest())
    return PreprocessedCase(resampled.astype(np.float32), out_label,
                            foreground_locations(out_label, seed), properties)


def foreground_locations(label: np.ndarray | None, seed: int) -> dict[int, np.ndarray]:
    """Up to FOREGROUND_SAMPLES_PER_CLASS voxel coordinates per foreground class, seeded."""
    if label is None:
        return {}
    rng = np.random.default_rng(seed)
    locations = {}
    for value in (int(v) for v in np.unique(label) if v > 0):
        coords = np.argwhere(label == value)
        if len(coords) > FOREGROUND_SAMPLES_PER_CLASS:
            coords = coords[np.sort(rng.choice(len(coords), FOREGROUND_SAMPLES_PER_CLASS, replace=False))]
        locations[value] = coords.astype(np.int32)
    return locations


def restore_label(label: np.ndarray, properties: CaseProperties,
                  resampling: ResamplingConfig = ResamplingConfig()) -> np.ndarray:
    """A label map at the target spacing put back on the case's original grid (array order)."""
    back = resample_label_to_shape(label, properties.shape_after_crop, properties.target_spacing,
                                   resampling, properties.geometry.array_spacing)
    return uncrop(back, properties.bbox, properties.geometry.shape, fill=0)


def restore_images(images: np.ndarray, properties: CaseProperties,
                   resampling: ResamplingConfig = ResamplingConfig(), fill: float = 0.0) -> np.ndarray:
    """Channel-first arrays (images or class probabilities) back on the original grid."""
    back = resample_images_to_shape(images, properties.shape_after_crop, properties.target_spacing,
                                    resampling, properties.geometry.array_spacing)
    return uncrop(back, properties.bbox, properties.geometry.shape, fill=fill)


def restore_probabilities(probabilities: np.ndarray, properties: CaseProperties,
                          resampling: ResamplingConfig = ResamplingConfig()) -> np.ndarray:
    """Class probabilities (K, *spatial) at the target spacing back on the original grid.

    Linear interpolation (nnU-Net's order 1; cubic would overshoot 0..1), renormalised to sum
    to 1; outside the crop box everything is background (channel 0).
    """
    if tuple(probabilities.shape[1:]) == tuple(properties.shape_after_crop):
        back = probabilities.astype(np.float32, copy=False)
    else:
        linear = replace(resampling, image_order=min(resampling.image_order, 1), out_of_plane_order=0)
        back = resample_images_to_shape(probabilities, properties.shape_after_crop, properties.target_spacing,
                                        linear, properties.geometry.array_spacing)
        np.clip(back, 0.0, None, out=back)
        back /= np.maximum(back.sum(axis=0, keepdims=True), 1e-8)
    full = uncrop(back, properties.bbox, properties.geometry.shape, fill=0.0)
    outside = np.ones(properties.geometry.shape, dtype=bool)
    outside[properties.bbox.slices] = False
    full[0][outside] = 1.0
    return full
