"""Gaussian noise on the features that cross split 1: the classic split-learning defence.

It is part of the client's forward pass in training and at prediction alike (a deployed client
transmits the same way), and its draws come from the caller's generator when one is given.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BoundaryNoise(nn.Module):
    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)

    def forward(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.sigma <= 0:
            return features
        noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
        return features + self.sigma * noise
