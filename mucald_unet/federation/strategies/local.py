"""``local``: every client trains its own full network (its own copy of the server segment) alone,
nothing crosses and nothing is averaged. The bar a federation must beat (MUCALD.md)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from mucald_unet.federation.strategies.base import SegmentStrategy
from mucald_unet.federation.strategies.registry import MethodSpec, register


class NoAggregation(SegmentStrategy):
    def is_personal(self, key: str) -> bool:
        return True

    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        """Nothing to average: the server never calls this for a method that is not federated."""


register(MethodSpec("local", "every client trains its own full network alone", NoAggregation,
                    federated=False, split=False))
