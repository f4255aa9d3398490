"""What one batch of sliding windows goes through at prediction: mirroring TTA and noise draws.

The CRDM split points add forward noise at the evaluation timestep, so one prediction is one
draw; averaging N draws (each with its own seeded generator) removes that variance at N times
the cost. Mirroring averages the logits of every flip combination of the axes training mirrored
(nnU-Net's test-time augmentation). Both average logits, as nnU-Net does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch
from torch import Tensor

WindowModel = Callable[[Tensor, torch.Generator | None], Tensor]


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (spatial, 0-based), the identity first: 2 axes -> 4, 3 -> 8."""
    return [subset for size in range(len(axes) + 1) for subset in combinations(axes, size)]


def averaged_windows(model: WindowModel, mirror_axes: Sequence[int],
                     generators: Sequence[torch.Generator | None]) -> Callable[[Tensor], Tensor]:
    """A window function for MONAI's sliding window: mean logits over mirrors x noise draws."""
    flips = mirror_combinations(mirror_axes)

    def predict(windows: Tensor) -> Tensor:
        total: Tensor | None = None
        for generator in generators:
            for flip in flips:
                dims = [axis + 2 for axis in flip]  # (B, C, *spatial)
                inputs = windows.flip(dims) if dims else windows
                logits = model(inputs, generator)
                logits = logits.flip(dims) if dims else logits
                total = logits if total is None else total + logits
        return total / (len(flips) * len(generators))

    return predict
