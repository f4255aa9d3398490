"""Network topology by nnU-Net's rules: how often to pool along each axis and with which kernels.

The result is exactly the arguments MONAI's DynUNet takes (kernel sizes and strides per stage),
so the server segment is built from data rather than from code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_FEATURE_MAP = 4  # stop pooling an axis once its feature map would fall below this


@dataclass(frozen=True)
class Topology:
    """Per-stage kernels and strides (stage 0 has stride 1) plus the filters of each stage."""

    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    filters: tuple[int, ...]

    @property
    def spatial_dims(self) -> int:
        return len(self.kernel_sizes[0])

    @property
    def divisor(self) -> tuple[int, ...]:
        """A patch axis must be a multiple of this so every pooling step divides evenly."""
        return tuple(math.prod(s[axis] for s in self.strides) for axis in range(self.spatial_dims))


def pooling_topology(spacing: tuple[float, ...], patch: tuple[int, ...], base_filters: int,
                     max_filters: int) -> Topology:
    """Pool the finest axes first; an axis joins once its spacing is within 2x of the finest.

    Kernels are 1 along an axis whose spacing is over 2x the finest (a 3x3x3 kernel would mix
    too-distant slices), switching to 3 once pooling has evened the spacing out, as in nnU-Net.
    """
    dims = len(spacing)
    current_spacing = list(spacing)
    current_size = list(patch)
    kernel = [1] * dims
    kernels: list[tuple[int, ...]] = []
    strides: list[tuple[int, ...]] = [(1,) * dims]
    while True:
        poolable = [a for a in range(dims) if current_size[a] >= 2 * MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(current_spacing[a] for a in poolable)
        poolable = [a for a in poolable if current_spacing[a] / finest < 2]
        finest_overall = min(current_spacing)
        kernel = [3 if kernel[a] == 3 or current_spacing[a] / finest_overall < 2 else 1
                  for a in range(dims)]
        kernels.append(tuple(kernel))
        stride = tuple(2 if a in poolable else 1 for a in range(dims))
        strides.append(stride)
        for a in poolable:
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
    kernels.append((3,) * dims)  # the bottleneck sees an evened-out grid
    filters = tuple(min(base_filters * 2 ** stage, max_filters) for stage in range(len(strides)))
    return Topology(tuple(kernels), tuple(strides), filters)


def fit_to_divisor(patch: tuple[int, ...], divisor: tuple[int, ...],
                   cover: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Round each patch axis to a multiple of its divisor (never below one divisor): down, except
    along axes where the patch spans all of ``cover`` (the median image), which round up so the
    patch still spans it (as nnU-Net pads its patch to the divisor)."""
    cover = cover or (0,) * len(patch)
    return tuple(max(d, -(-p // d) * d if p >= c > 0 else (p // d) * d)
                 for p, d, c in zip(patch, divisor, cover))
