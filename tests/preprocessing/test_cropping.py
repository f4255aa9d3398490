"""Cropping to nonzero: the box is tight, empty means whole image, and uncrop inverts crop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preprocessing.cropping import (BoundingBox, bounding_box, crop, crop_case, nonzero_mask,
                                    uncrop)


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((2, 12, 16, 20), np.float32)
    images[0, 3:9, 4:12, 5:15] = rng.normal(5, 1, (6, 8, 10))
    images[1, 2:5, 6:8, 7:9] = 1.0  # second channel extends the box in z only
    label = np.zeros((12, 16, 20), np.uint8)
    label[4:6, 5:7, 6:9] = 2
    return images, label


def test_bounding_box_is_tight_and_half_open() -> None:
    mask = np.zeros((5, 6, 7), bool)
    mask[1, 2, 3] = mask[3, 4, 5] = True
    bbox = bounding_box(mask)
    assert bbox == BoundingBox((1, 2, 3), (4, 5, 6))
    assert bbox.shape == (3, 3, 3)
    assert mask[bbox.slices].sum() == mask.sum()


def test_bounding_box_of_empty_mask_is_whole_image() -> None:
    bbox = bounding_box(np.zeros((4, 5, 6), bool))
    assert bbox == BoundingBox((0, 0, 0), (4, 5, 6))
    assert bbox.shape == (4, 5, 6)


def test_nonzero_mask_uses_any_channel_and_fills_holes() -> None:
    images = np.zeros((2, 9, 9, 9), np.float32)
    images[0, 2:7, 2:7, 2:7] = 1.0
    images[0, 4, 4, 4] = 0.0  # enclosed hole: dark tissue inside the body
    images[1, 0, 0, 0] = -3.0  # nonzero only in the second channel
    mask = nonzero_mask(images)
    assert mask.dtype == bool
    assert mask[4, 4, 4] and mask[0, 0, 0]
    assert mask.sum() == 5 ** 3 + 1


def test_crop_then_uncrop_restores_array_exactly() -> None:
    images, label = _case(np.random.default_rng(0))
    result = crop_case(images, label)
    assert result.bbox == BoundingBox((2, 4, 5), (9, 12, 15))
    assert result.images.shape == (2, 7, 8, 10) and result.label.shape == (7, 8, 10)
    assert result.nonzero_mask.shape == (7, 8, 10) and result.nonzero_mask.dtype == bool
    np.testing.assert_array_equal(uncrop(result.images, result.bbox, images.shape[1:]), images)
    np.testing.assert_array_equal(uncrop(result.label, result.bbox, label.shape), label)
    full_shape_with_channels = uncrop(result.images, result.bbox, images.shape)
    np.testing.assert_array_equal(full_shape_with_channels, images)


def test_uncrop_fills_outside_and_keeps_dtype() -> None:
    bbox = BoundingBox((1, 1), (3, 4))
    out = uncrop(np.ones((2, 3), np.int16), bbox, (4, 5), fill=-1)
    assert out.dtype == np.int16 and out.shape == (4, 5)
    assert (out == -1).sum() == 20 - 6 and (out[1:3, 1:4] == 1).all()


def test_crop_handles_channel_first_and_plain_spatial_arrays() -> None:
    bbox = BoundingBox((1, 2), (3, 5))
    spatial = np.arange(30).reshape(5, 6)
    np.testing.assert_array_equal(crop(spatial, bbox), spatial[1:3, 2:5])
    channels = np.stack([spatial, -spatial])
    assert crop(channels, bbox).shape == (2, 2, 3)


def test_image_without_zeros_keeps_whole_image() -> None:
    ct = np.full((1, 4, 5, 6), -1000.0, np.float32)  # air is -1000, not 0
    result = crop_case(ct, None)
    assert result.bbox == BoundingBox.full((4, 5, 6)) and result.label is None
    np.testing.assert_array_equal(result.images, ct)


def test_bounding_box_list_round_trip_is_json_safe() -> None:
    bbox = BoundingBox((1, 2, 3), (4, 5, 6))
    text = json.dumps(bbox.to_list())
    assert BoundingBox.from_list(json.loads(text)) == bbox


def test_invalid_boxes_are_rejected() -> None:
    with pytest.raises(ValueError):
        BoundingBox((3,), (2,))
    with pytest.raises(ValueError):
        crop(np.zeros((4, 4)), BoundingBox((0, 0), (5, 4)))
    with pytest.raises(ValueError):
        uncrop(np.zeros((2, 2)), BoundingBox((0, 0), (3, 3)), (4, 4))
