"""Augmentation keeps batch shapes and dtypes, moves labels only by nearest neighbour, and is
reproducible from the global generator state it documents."""

from __future__ import annotations

import numpy as np
import pytest

from mucald_unet.training.augmentation import (AugmentationConfig, augmentation_rng_state,
                                               build_augmentation, restore_augmentation_rng_state,
                                               seed_augmentation)

OFF = dict(p_rotation=0.0, p_scale=0.0, p_mirror=0.0, p_gamma=0.0, p_noise=0.0, p_brightness=0.0,
           p_contrast=0.0)
ALL_ON = {key: 1.0 for key in OFF} | {"max_rotation_degrees": 30.0}


def batch(patch: tuple[int, ...], batch_size: int = 3, channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch_size, channels, *patch)).astype(np.float32)
    labels = np.zeros((batch_size, 1, *patch), np.int16)
    centre = tuple(slice(s // 4, 3 * s // 4) for s in patch)
    labels[(slice(None), 0, *centre)] = 1
    labels[(slice(None), 0, *(slice(s // 3, s // 2) for s in patch))] = 3
    return images, labels


@pytest.mark.parametrize("patch", [(20, 24), (12, 16, 16), (3, 24, 24)])
def test_full_augmentation_keeps_shapes_dtypes_and_label_values(patch: tuple[int, ...]) -> None:
    seed_augmentation(0)
    augment = build_augmentation(AugmentationConfig(**ALL_ON), patch)
    images, labels = batch(patch)
    before = images.copy(), labels.copy()
    out_images, out_labels = augment(images, labels)
    assert out_images.shape == images.shape and out_images.dtype == np.float32
    assert out_labels.shape == labels.shape and out_labels.dtype == np.int16
    assert set(np.unique(out_labels)) <= {0, 1, 3}  # no interpolated in-between labels
    assert not np.array_equal(out_images, images)
    np.testing.assert_array_equal(images, before[0])  # the caller's batch is left alone
    np.testing.assert_array_equal(labels, before[1])


def test_disabled_augmentation_is_the_identity() -> None:
    images, labels = batch((16, 16))
    augment = build_augmentation(AugmentationConfig(enabled=False, **ALL_ON), (16, 16))
    out_images, out_labels = augment(images, labels)
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)


@pytest.mark.parametrize("patch", [(10, 14), (6, 8, 10)])
def test_mirror_only_with_p_one_flips_every_spatial_axis(patch: tuple[int, ...]) -> None:
    images, labels = batch(patch)
    augment = build_augmentation(AugmentationConfig(**(OFF | {"p_mirror": 1.0})), patch)
    out_images, out_labels = augment(images, labels)
    spatial = tuple(range(2, 2 + len(patch)))
    np.testing.assert_array_equal(out_images, np.flip(images, spatial))
    np.testing.assert_array_equal(out_labels, np.flip(labels, spatial))


def test_intensity_transforms_leave_labels_untouched() -> None:
    images, labels = batch((16, 16))
    config = AugmentationConfig(**(OFF | dict(p_gamma=1.0, p_noise=1.0, p_brightness=1.0, p_contrast=1.0)))
    out_images, out_labels = build_augmentation(config, (16, 16))(images, labels)
    np.testing.assert_array_equal(out_labels, labels)
    assert not np.allclose(out_images, images)


def test_anisotropic_3d_patches_rotate_in_plane_only() -> None:
    patch = (3, 24, 24)
    images = np.zeros((4, 1, *patch), np.float32)
    labels = np.broadcast_to(np.arange(1, 4, dtype=np.int16)[:, None, None], (4, 1, *patch)).copy()
    seed_augmentation(1)
    config = AugmentationConfig(**(OFF | {"p_rotation": 1.0, "max_rotation_degrees": 40.0}))
    _, out = build_augmentation(config, patch)(images, labels)
    assert not np.array_equal(out, labels)  # it did rotate
    for z in range(3):  # but never mixed slices
        assert set(np.unique(out[:, 0, z])) <= {0, z + 1}


def test_equal_global_seeds_and_restored_state_reproduce_a_batch() -> None:
    augment = build_augmentation(AugmentationConfig(**ALL_ON), (12, 12))
    images, labels = batch((12, 12))
    seed_augmentation(5)
    first = augment(images, labels)
    state = augmentation_rng_state()
    second = augment(images, labels)
    seed_augmentation(5)
    for x, y in zip(first, augment(images, labels)):
        np.testing.assert_array_equal(x, y)
    restore_augmentation_rng_state(state)
    for x, y in zip(second, augment(images, labels)):
        np.testing.assert_array_equal(x, y)


def test_config_round_trips_and_from_dict_rejects_bad_settings() -> None:
    config = AugmentationConfig(p_mirror=0.25, scale_range=(0.9, 1.1))
    assert AugmentationConfig.from_dict(config.to_dict()) == config
    assert AugmentationConfig.from_dict({}) == AugmentationConfig()
    with pytest.raises(ValueError, match="p_rotaton"):
        AugmentationConfig.from_dict({"p_rotaton": 0.1})
    with pytest.raises(ValueError, match="p_gamma"):
        AugmentationConfig.from_dict({"p_gamma": 1.5})
    with pytest.raises(ValueError, match="p_noise"):
        AugmentationConfig.from_dict({"p_noise": -0.1})
    with pytest.raises(ValueError, match="gamma_range"):
        AugmentationConfig.from_dict({"gamma_range": [1.5, 0.7]})


def test_wrong_batch_shape_is_reported() -> None:
    augment = build_augmentation(AugmentationConfig(), (16, 16))
    images, labels = batch((12, 12))
    with pytest.raises(ValueError, match="patch"):
        augment(images, labels)
