"""Nearest-neighbour resampling of a label map onto an image's grid (only for --resample-labels)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from preprocessing.geometry import Geometry


def resample_label(label: np.ndarray, label_geometry: Geometry, image_geometry: Geometry) -> np.ndarray:
    """``label`` (spatial array on ``label_geometry``) sampled at the image's voxel centres.

    Nearest neighbour, so no new label values appear; voxels outside the label's extent become 0.
    """
    moving = _placed(sitk.GetImageFromArray(label), label_geometry)
    size = [int(s) for s in reversed(image_geometry.shape)]  # ITK sizes are (x, y[, z])
    reference = _placed(sitk.Image(size, moving.GetPixelID()), image_geometry)
    resampled = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                              moving.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def _placed(image: sitk.Image, geometry: Geometry) -> sitk.Image:
    image.SetSpacing(tuple(float(v) for v in geometry.spacing))
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    image.SetDirection(tuple(float(v) for v in geometry.direction))
    return image
