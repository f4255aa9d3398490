"""Ditto (Li et al., 2021): a global model trained by FedAvg and, per client, a personal model
regularised towards it by lambda/2 ||v - w_global||^2 (``--ditto-lambda``).

Both are server segments. The server keeps, per client, the personal copy v_i (the one validated,
checkpointed as the client's segment and deployed) and a global-track copy w_i here. The client's
FE and BE are personal in every method and serve both tracks. Each round's first half of the steps
(``steps // 2``) trains w_i on the plain loss, the rest trains v_i with the regulariser towards the
round's starting global w; at round end the w_i are averaged into the global segment (all keys) and
the v_i are kept. With one step per round only v_i trains. Nothing extra crosses the boundary.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mucald_unet.federation.aggregation import fedprox_penalty
from mucald_unet.federation.strategies.base import SegmentSlot, SegmentStrategy, StrategyContext
from mucald_unet.federation.strategies.fedavg import FedAvg
from mucald_unet.federation.strategies.registry import MethodSpec, register


class Ditto(SegmentStrategy):
    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        self.tracks: dict[str, SegmentSlot] = {}
        for client in context.clients:
            module = copy.deepcopy(context.global_segment)
            self.tracks[client] = SegmentSlot(module, context.new_optimizer(module))
        self.global_steps = context.config.iterations_per_round // 2
        self._averaging = FedAvg(context)  # the global track: every key shared

    def is_personal(self, key: str) -> bool:
        """Of the deployed segment, everything; the global track is what is shared."""
        return True

    def segment_to_train(self, client: str, step: int, deployed: SegmentSlot) -> SegmentSlot:
        return self.tracks[client] if step < self.global_steps else deployed

    def extra_terms(self, client: str, segment: nn.Module, reference: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if segment is self.tracks[client].module:
            return {}
        return {"ditto": fedprox_penalty(segment, reference, self.config.strategy.ditto_lambda)}

    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        """Average the global track; the personal (deployed) segments are left as trained."""
        tracks = {c: slot.module for c, slot in self.tracks.items()}
        self._averaging.aggregate(tracks, global_segment, weights)

    def state_dict(self) -> dict[str, Any]:
        return {"tracks": {c: slot.module.state_dict() for c, slot in self.tracks.items()},
                "optimizers": {c: slot.optimizer.state_dict() for c, slot in self.tracks.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for client, slot in self.tracks.items():
            slot.module.load_state_dict(state["tracks"][client])
            slot.optimizer.load_state_dict(state["optimizers"][client])


register(MethodSpec("ditto", "FedAvg of a global SS track + a personal SS per client regularised towards "
                    "it (--ditto-lambda); the personal one is deployed", Ditto, options=("ditto_lambda",),
                    local_norms_conflict="keeps each client's whole deployed server segment personal"))
