"""Normalisation schemes: each maps intensities as nnU-Net does and survives the plans file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preprocessing.normalization import (CTNormalization, NoNormalization, RGBTo01Normalization,
                                         ZScoreNormalization, normalization_from_dict,
                                         normalize_channels)


def test_ct_clips_to_percentiles_then_z_scores_with_dataset_statistics() -> None:
    rng = np.random.default_rng(0)
    foreground = rng.normal(40.0, 15.0, 200_000)
    lower, upper = np.percentile(foreground, [0.5, 99.5])
    clipped = np.clip(foreground, lower, upper)
    scheme = CTNormalization(mean=float(clipped.mean()), std=float(clipped.std()),
                             lower=float(lower), upper=float(upper))
    image = np.concatenate([foreground, [-1000.0, 3000.0]]).astype(np.float32).reshape(-1, 1)
    out = scheme.apply(image)
    assert out.dtype == np.float32
    assert abs(out[:-2].mean()) < 0.02 and abs(out[:-2].std() - 1.0) < 0.02
    assert out[-2, 0] == pytest.approx((lower - scheme.mean) / scheme.std, rel=1e-5)  # air clipped
    assert out[-1, 0] == pytest.approx((upper - scheme.mean) / scheme.std, rel=1e-5)  # metal clipped


def test_ct_guards_zero_std() -> None:
    out = CTNormalization(mean=1.0, std=0.0, lower=0.0, upper=2.0).apply(np.ones((3, 3)))
    assert np.isfinite(out).all() and (out == 0).all()


def test_z_score_with_mask_zeroes_outside_and_standardises_inside() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(300.0, 40.0, (16, 16, 16)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[4:12, 4:12, 4:12] = True
    image[~mask] = rng.normal(0.0, 5.0, (~mask).sum())  # background noise must not leak through
    out = ZScoreNormalization(use_nonzero_mask=True).apply(image, mask)
    assert (out[~mask] == 0).all()
    assert abs(out[mask].mean()) < 1e-5 and abs(out[mask].std() - 1.0) < 1e-5


def test_z_score_without_mask_uses_whole_image_and_survives_constant_input() -> None:
    image = np.random.default_rng(2).uniform(0, 10, (20, 20))
    out = ZScoreNormalization().apply(image)
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1.0) < 1e-5
    assert (ZScoreNormalization().apply(np.full((4, 4), 7.0)) == 0).all()


def test_masked_z_score_requires_the_mask() -> None:
    with pytest.raises(ValueError, match="mask"):
        ZScoreNormalization(use_nonzero_mask=True).apply(np.ones((3, 3)), None)


def test_rgb_maps_255_to_one_and_clips() -> None:
    out = RGBTo01Normalization().apply(np.array([[0, 51, 255]], np.uint8))
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)
    assert RGBTo01Normalization().apply(np.array([300.0, -4.0])).tolist() == [1.0, 0.0]


def test_no_normalisation_is_a_float32_copy() -> None:
    image = np.array([[1, 2], [3, 4]], np.int16)
    out = NoNormalization().apply(image)
    assert out.dtype == np.float32 and out.tolist() == image.tolist()


@pytest.mark.parametrize("scheme", [CTNormalization(10.0, 2.5, -5.0, 80.0),
                                    ZScoreNormalization(True), ZScoreNormalization(False),
                                    RGBTo01Normalization(), NoNormalization()])
def test_dict_round_trip_through_json(scheme) -> None:
    data = json.loads(json.dumps(scheme.to_dict()))
    assert "kind" in data
    assert normalization_from_dict(data) == scheme


def test_unknown_kind_or_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown normalisation kind"):
        normalization_from_dict({"kind": "histogram"})
    with pytest.raises(ValueError, match="unknown fields"):
        normalization_from_dict({"kind": "none", "mean": 3})


def test_normalize_channels_applies_one_scheme_per_channel() -> None:
    images = np.stack([np.full((4, 4), 255.0), np.arange(16.0).reshape(4, 4)])
    mask = np.ones((4, 4), bool)
    out = normalize_channels(images, [RGBTo01Normalization(), ZScoreNormalization(True)], mask)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert (out[0] == 1.0).all() and abs(out[1].mean()) < 1e-6
    with pytest.raises(ValueError, match="one scheme per channel"):
        normalize_channels(images, [NoNormalization()], mask)
