"""NoPeek (Vepakomma et al. 2020): penalise the distance correlation between the client's input
and what it transmits, so the features keep what segmentation needs and little else.

The published loss correlates whole images across a batch; with the planned batches of 2 that is
degenerate (the distance correlation of any two pairs is 1). Here the samples are tiles: every
image and its feature map are cut into the same grid of tiles, and the correlation is taken over
all tiles of the batch, which is what a reconstruction attack exploits (local appearance). The
bias-corrected estimator is used: the classic one sits near 1 for independent high-dimensional
tiles at these sample sizes, so it would barely tell dependence from chance. That estimator
can go below 0 by chance; the penalty is clamped at 0 so training is never rewarded for pushing
the estimate negative (0 already means "no dependence seen").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from mucald_unet.defences.distance_correlation import u_distance_correlation_sqr


def tiles(x: Tensor, tile: Sequence[int]) -> Tensor:
    """(B, C, *spatial) -> (B * tiles, C * prod(tile)); spatial sizes must be multiples of ``tile``."""
    batch, channels, *spatial = x.shape
    shape = [batch, channels]
    for size, t in zip(spatial, tile):
        shape += [size // t, t]
    x = x.reshape(shape)
    dims = len(spatial)
    grid_axes = [2 + 2 * i for i in range(dims)]
    inner_axes = [3 + 2 * i for i in range(dims)]
    x = x.permute(0, *grid_axes, 1, *inner_axes)
    return x.reshape(-1, channels * math.prod(tile))


def nopeek_loss(images: Tensor, features: Tensor, tile_size: int = 16) -> Tensor:
    """max(0, bias-corrected dCor^2) between image tiles and feature tiles; 0 with zero gradient
    where the estimate is negative."""
    pooling = [i // f for i, f in zip(images.shape[2:], features.shape[2:])]  # > 1 behind a deeper cut
    tile = [_largest_divisor_at_most(size, tile_size, p) for size, p in zip(images.shape[2:], pooling)]
    feature_tile = [t // p for t, p in zip(tile, pooling)]
    return u_distance_correlation_sqr(tiles(images, tile), tiles(features, feature_tile)).clamp_min(0.0)


def _largest_divisor_at_most(size: int, limit: int, step: int = 1) -> int:
    """The largest multiple of ``step`` that divides ``size`` and is at most ``limit`` (``step``
    when none is that small), so an image tile covers whole feature voxels."""
    return max(d for d in range(step, max(step, min(size, limit)) + 1, step) if size % d == 0)

