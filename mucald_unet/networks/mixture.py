"""A server segment that is a mixture of M components (FedEM), and the client's mixture weights.

The server runs every component on the same split-1 features and stacks their outputs along the
batch axis, component-major, so what crosses keeps the split's (N, C, ...) layout with N = M x B.
The client runs its back end on all M x B maps and combines the class probabilities with its own
mixture weights pi: p(y | x) = sum_m pi_m softmax(BE(SS_m(x))). The combination is returned as
log-probabilities, which every consumer of logits (softmax, argmax, Dice + CE) reads unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MixtureSegment(nn.Module):
    """M independently initialised segments on the same input; outputs (M x B, C, ...)."""

    def __init__(self, components: list[nn.Module]) -> None:
        super().__init__()
        self.components = nn.ModuleList(components)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([component(x) for component in self.components], dim=0)


def split_components(stacked: Tensor, count: int) -> Tensor:
    """(M x B, ...) -> (M, B, ...); refused when the batch is not a multiple of M."""
    if stacked.shape[0] % count:
        raise ValueError(f"{stacked.shape[0]} stacked samples are not {count} components of one batch")
    return stacked.reshape(count, stacked.shape[0] // count, *stacked.shape[1:])


class MixtureWeights(nn.Module):
    """A client's pi over the M components (a buffer: set by the E-step, never by gradients)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.register_buffer("log_weights", torch.full((count,), -math.log(count)))

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    def combine(self, stacked_logits: Tensor) -> Tensor:
        """(M x B, K, ...) logits -> (B, K, ...) log sum_m pi_m softmax(logits_m)."""
        per_component = torch.log_softmax(split_components(stacked_logits, self.count), dim=2)
        shape = (self.count,) + (1,) * (per_component.ndim - 1)
        return torch.logsumexp(per_component + self.log_weights.view(shape), dim=0)

    def responsibilities(self, losses: Tensor) -> Tensor:
        """E-step: q(m | sample) proportional to pi_m exp(-loss_m), from (M, B) losses; (M, B)."""
        return torch.softmax(self.log_weights.view(-1, 1) - losses, dim=0)

    def set_weights(self, weights: Tensor) -> None:
        """pi <- ``weights`` (the mean responsibility of the round), kept away from exactly 0."""
        clamped = weights.detach().to(self.log_weights).clamp(min=1e-6)
        self.log_weights.copy_((clamped / clamped.sum()).log())
