"""Gradient reversal: identity forward, gradient times -weight backward."""

from __future__ import annotations

import torch
from torch import Tensor


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: Tensor, weight: float) -> Tensor:
    """Features for an adversary: the adversary learns from its loss as usual, while whatever
    produced ``x`` receives the opposite gradient scaled by ``weight`` (the adversarial lambda)."""
    return _ReverseGradient.apply(x, weight)
