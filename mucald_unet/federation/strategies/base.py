"""The server-segment half of a federation method: one small object per algorithm.

The server runs one copy of the server segment (SS) per client and asks its strategy, at fixed
points, what the method does there:

- ``is_personal(key)``: which SS state keys stay with their client and are never averaged;
- ``segment_to_train``: which copy of a client's SS a training step trains (Ditto keeps two);
- ``extra_terms``: loss terms added to the SS loss at each step (FedProx, Ditto's regulariser);
- ``correct_gradients``: a change of the SS gradients after clipping, before the step (SCAFFOLD);
- ``aggregate``: at round end, the global SS and every client's copy from the clients' copies;
- ``state_dict`` / ``load_state_dict``: what the strategy keeps between rounds (checkpointed).

How much each client counts (``--aggregation equal|samples|causal``) is decided outside and
handed in as weights: a strategy decides what is averaged, never the clients' weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from mucald_unet.config import TrainingConfig


def is_norm_key(name: str) -> bool:
    """State keys of DynUNet's normalisation layers (``...norm1.weight``)."""
    return ".norm" in name or name.startswith("norm")


def canonical_names(module: nn.Module) -> dict[str, str]:
    """Every state-dict key -> the first key naming the same tensor.

    DynUNet registers each stage twice (``downsamples.0`` is also ``skip_layers.next_layer.downsample``);
    a rule about layers is decided on the first name, so that both aliases of a tensor agree.
    """
    first: dict[int, str] = {}
    return {key: first.setdefault(id(tensor), key) for key, tensor in module.state_dict(keep_vars=True).items()}


@dataclass(frozen=True)
class SegmentSlot:
    """A server segment and the optimiser that steps it."""

    module: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy is built from: the run's settings, the clients (in the server's order), the
    global segment (its layout; strategies that keep copies start from it) and the server's way of
    making a segment optimiser, so every copy steps with the run's optimiser settings."""

    config: "TrainingConfig"
    clients: tuple[str, ...]
    global_segment: nn.Module
    new_optimizer: Callable[[nn.Module], torch.optim.Optimizer]


class SegmentStrategy(ABC):
    """Defaults: every key shared (``--local-norms`` keeps the norms personal), no extra term, no
    gradient change, no state. Subclasses override the hooks their algorithm needs."""

    def __init__(self, context: StrategyContext) -> None:
        self.context = context
        self.canonical = canonical_names(context.global_segment)

    @property
    def config(self) -> "TrainingConfig":
        return self.context.config

    def is_personal(self, key: str) -> bool:
        """Whether the SS tensor under canonical ``key`` stays with its client."""
        return self.config.local_norms and is_norm_key(key)

    def reporters(self, weights: Mapping[str, float]) -> list[str]:
        """The clients that reported the round (those ``weights`` names), in roster order; a client
        that dropped out before reporting has no weight."""
        return [c for c in self.context.clients if c in weights]

    def shared_keys(self) -> frozenset[str]:
        """Every SS state key (aliases included) that round-end averaging overwrites."""
        return frozenset(k for k, name in self.canonical.items() if not self.is_personal(name))

    def segment_to_train(self, client: str, step: int, deployed: SegmentSlot) -> SegmentSlot:
        """The copy that training step ``step`` of ``client`` runs through; ``deployed`` is the one
        validation and prediction use."""
        return deployed

    def extra_terms(self, client: str, segment: nn.Module, reference: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Named terms added to the SS loss of this step; ``reference`` is the last aggregate."""
        return {}

    def correct_gradients(self, client: str, segment: nn.Module) -> None:
        """Change ``segment``'s gradients in place before its optimiser steps."""

    @abstractmethod
    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        """Round end: set ``global_segment`` and the clients' ``segments`` (in place). ``weights``
        names the clients that reported the round; a client that dropped out has no entry."""

    def state_dict(self) -> dict[str, Any]:
        """Plain data (tensors, dicts, numbers) kept between rounds; goes into the checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}")
