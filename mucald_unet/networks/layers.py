"""Dimension-generic layer constructors shared by the networks, CRDM and DACA.

Every normalisation here is per sample (instance or group norm): averaged BatchNorm statistics
fit no client of a heterogeneous federation, which is what sank the published code's eval Dice.
"""

from __future__ import annotations

from torch import nn


def conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
         stride: int = 1) -> nn.Module:
    kind = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return kind(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def transposed_conv(spatial_dims: int, in_channels: int, out_channels: int,
                    stride: int | tuple[int, ...] = 2) -> nn.Module:
    kind = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return kind(in_channels, out_channels, kernel_size=stride, stride=stride)


def patchify_conv(spatial_dims: int, in_channels: int, out_channels: int, factor: tuple[int, ...]) -> nn.Module:
    """Non-overlapping patches -> one latent pixel each (kernel = stride = factor)."""
    kind = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return kind(in_channels, out_channels, kernel_size=factor, stride=factor)


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides the channels."""
    groups = next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def average_pool(spatial_dims: int, size: int) -> nn.Module:
    """Average pooling that also accepts maps smaller than ``size`` (ceil mode, no padding)."""
    kind = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
    return kind(size, stride=size, ceil_mode=True)


def global_average_pool(x):
    """(B, C, *spatial) -> (B, C)."""
    return x.flatten(2).mean(dim=2)
