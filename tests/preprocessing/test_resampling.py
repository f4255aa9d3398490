"""Resampling: nnU-Net's shape arithmetic, anisotropy rule and label-safe interpolation."""

from __future__ import annotations

import numpy as np
import pytest

import preprocessing.resampling as resampling
from preprocessing.resampling import (ResamplingConfig, anisotropic_axis, resample_images,
                                      resample_images_to_shape, resample_label,
                                      resample_label_to_shape, target_shape)


def _smooth_volume(shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(2 * grids[0]) + np.cos(3 * grids[1]) * grids[-1] * 2).astype(np.float32)


def _blob(shape: tuple[int, ...], radius: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    return (sum(g ** 2 for g in grids) <= radius ** 2).astype(np.uint8)


def _forbidden(*args, **kwargs):
    raise AssertionError("interpolated although the shape did not change")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_target_shape_arithmetic() -> None:
    assert target_shape((20, 100, 100), (3, 0.8, 0.8), (1.5, 0.8, 0.8)) == (40, 100, 100)
    assert target_shape((10, 33), (1.0, 1.0), (2.0, 2.0)) == (5, 16)  # round half to even
    assert target_shape((3,), (1.0,), (100.0,)) == (1,)  # never collapses an axis
    assert target_shape((7,), (1.0,), (0.8,)) == (9,)  # 8.75 rounds up, not down


def test_anisotropy_rule_picks_coarse_axis_of_current_then_target_spacing() -> None:
    assert anisotropic_axis((5.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3.0) == 0
    assert anisotropic_axis((1.0, 1.0, 1.0), (1.0, 4.0, 1.0), 3.0) == 1
    assert anisotropic_axis((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3.0) is None
    assert anisotropic_axis((5.0, 5.0, 1.0), (1.0, 1.0, 1.0), 3.0) is None  # two coarse axes
    assert anisotropic_axis((5.0, 1.0), (1.0, 1.0), 3.0) is None  # 2D is never separated


def test_smooth_image_to_finer_grid_and_back_is_close() -> None:
    image = _smooth_volume((12, 20, 24))[None]
    spacing, fine = (2.0, 1.0, 1.0), (1.0, 0.5, 0.5)
    up = resample_images(image, spacing, fine)
    assert up.shape == (1, 24, 40, 48) and up.dtype == np.float32
    back = resample_images_to_shape(up, image.shape[1:], fine)
    value_range = image.max() - image.min()
    assert np.abs(back - image).max() < 0.02 * value_range


def test_same_shape_returns_an_uninterpolated_copy(monkeypatch) -> None:
    monkeypatch.setattr(resampling, "resize", _forbidden)
    image = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    out = resample_images(image, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(out, image)
    assert out is not image and not np.shares_memory(out, image)


@pytest.mark.parametrize("mode, min_dice", [("onehot_linear", 0.95), ("nearest", 0.9)])
def test_label_down_and_up_keeps_blob_and_invents_no_values(mode: str, min_dice: float) -> None:
    label = 3 * _blob((40, 48, 48), radius=14).astype(np.int16)
    spacing, coarse = (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)
    config = ResamplingConfig(label_mode=mode)
    down = resample_label(label, spacing, coarse, config)
    assert down.shape == (20, 24, 24) and down.dtype == np.int16
    back = resample_label_to_shape(down, label.shape, coarse, config)
    assert back.shape == label.shape and back.dtype == np.int16
    assert set(np.unique(back)) <= {0, 3}
    assert _dice(back == 3, label == 3) > min_dice  # nearest shifts by half a voxel per axis


def test_label_same_shape_is_exact_identity(monkeypatch) -> None:
    monkeypatch.setattr(resampling, "resize", _forbidden)
    label = np.random.default_rng(0).integers(-1, 4, (6, 7, 8)).astype(np.int8)
    out = resample_label(label, (3.0, 1.0, 1.0), (3.0, 1.0, 1.0))
    np.testing.assert_array_equal(out, label)
    assert out.dtype == np.int8 and out is not label


def test_where_classes_meet_each_voxel_gets_one_of_them_ties_to_the_higher() -> None:
    two = np.array([[0, 0], [5, 5]], np.uint8)  # 0.5 / 0.5 after averaging
    assert resample_label_to_shape(two, (1, 1), (1.0, 1.0)).tolist() == [[5]]
    four = np.array([[0, 1], [2, 3]], np.uint8)  # 0.25 each: no class reaches 0.5
    assert resample_label_to_shape(four, (1, 1), (1.0, 1.0)).tolist() == [[3]]


def test_small_class_survives_identity_and_upsampling() -> None:
    label = _blob((10, 12, 12), radius=4).astype(np.uint8)
    label[1, 1, 1:4] = 2  # a 3-voxel structure
    same = resample_label_to_shape(label, label.shape, (1.0, 1.0, 1.0))
    assert (same == 2).sum() == 3
    up = resample_label(label, (1.0, 1.0, 1.0), (0.5, 0.5, 0.5))
    assert (up == 2).sum() > 0 and set(np.unique(up)) == {0, 1, 2}


def test_anisotropic_volume_uses_nearest_slices_out_of_plane() -> None:
    image = np.random.default_rng(0).normal(size=(1, 6, 10, 10)).astype(np.float32)
    out = resample_images(image, (5.0, 1.0, 1.0), (2.5, 1.0, 1.0))
    assert out.shape == (1, 12, 10, 10)
    for z in range(out.shape[1]):  # each output slice is a copy of the nearest input slice
        np.testing.assert_array_equal(out[0, z], image[0, z // 2])
    isotropic = resample_images(image, (5.0, 1.0, 1.0), (2.5, 1.0, 1.0),
                                ResamplingConfig(anisotropy_threshold=100.0))
    assert not any(np.array_equal(isotropic[0, 5], image[0, k]) for k in range(6))


def test_anisotropic_path_resizes_in_plane_slice_by_slice(monkeypatch) -> None:
    shapes: list[tuple[int, ...]] = []
    real = resampling.resize

    def spy(array, shape, **kwargs):
        shapes.append(tuple(shape))
        return real(array, shape, **kwargs)

    monkeypatch.setattr(resampling, "resize", spy)
    image = _smooth_volume((4, 10, 12))[None]
    out = resample_images(image, (4.0, 1.0, 1.0), (2.0, 0.5, 0.5),
                          ResamplingConfig(out_of_plane_order=1))
    assert out.shape == (1, 8, 20, 24)
    assert shapes == [(20, 24)] * 4  # one 2D resize per thick slice, none in 3D
    between = out[0, 3]  # linear out of plane: halfway-ish between input slices 1 and 2
    assert not any(np.array_equal(between, out[0, k]) for k in (2, 4))


def test_linear_out_of_plane_keeps_voxel_centres_aligned() -> None:
    ramp = np.broadcast_to(np.arange(4.0)[:, None, None], (4, 6, 6))[None]  # value = slice index
    out = resample_images(ramp, (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), ResamplingConfig(out_of_plane_order=1))
    expected = np.clip(0.5 * (np.arange(8) + 0.5) - 0.5, 0, 3)  # edge slices repeat
    np.testing.assert_allclose(out[0, :, 2, 3], expected, atol=1e-6)


def test_labels_on_anisotropic_grid_keep_their_values() -> None:
    label = np.zeros((5, 16, 16), np.uint8)
    label[1:4, 4:12, 4:12] = 1
    label[2, 6:9, 6:9] = 4
    out = resample_label(label, (5.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert out.shape == (25, 16, 16)
    assert set(np.unique(out)) == {0, 1, 4}


def test_2d_images_and_labels() -> None:
    image = _smooth_volume((20, 30))[None].repeat(3, axis=0)
    out = resample_images(image, (1.0, 1.0), (0.5, 0.5))
    assert out.shape == (3, 40, 60)
    back = resample_images_to_shape(out, (20, 30), (0.5, 0.5))
    assert np.abs(back - image).max() < 0.02 * (image.max() - image.min())
    label = _blob((20, 30), radius=6)
    up = resample_label(label, (1.0, 1.0), (0.5, 0.5))
    assert up.shape == (40, 60) and set(np.unique(up)) == {0, 1}


def test_label_with_leading_channel_axis() -> None:
    label = _blob((8, 10, 10), radius=3)[None]
    out = resample_label(label, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert out.shape == (1, 4, 5, 5)


def test_config_validation_and_round_trip() -> None:
    config = ResamplingConfig(image_order=1, label_mode="nearest", out_of_plane_order=1)
    assert ResamplingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="label_mode"):
        ResamplingConfig(label_mode="cubic")
    with pytest.raises(ValueError, match="same number of axes"):
        target_shape((4, 4), (1.0, 1.0, 1.0), (1.0, 1.0))
