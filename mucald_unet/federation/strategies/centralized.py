"""``centralized``: one server segment and one optimiser serve every client, as if all data were
pooled; no boundary, no noise, no adversary. The non-private reference."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from mucald_unet.federation.strategies.base import SegmentStrategy
from mucald_unet.federation.strategies.registry import MethodSpec, register


class OneSegment(SegmentStrategy):
    """Every client's entry is the same module, so everything is shared and nothing is averaged."""

    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        """Nothing to average: the server never calls this for a method that is not federated."""


register(MethodSpec("centralized", "all tasks around one shared server segment, no boundary "
                    "(non-private reference)", OneSegment, federated=False, split=False, single_segment=True))
