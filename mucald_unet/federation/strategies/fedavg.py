"""FedAvg of the server segment (McMahan et al., 2017), and FedProx (Li et al., 2020) on top of it.

FedAvg: at round end the weighted mean of every client's copy becomes the global segment, and each
copy takes the global values of its shared keys. FedProx adds 0.5 mu ||w - w_global||^2 to the
segment's loss at every step (mu: ``--fedprox-mu``), keeping a client's copy near the last aggregate.
FedProx is the server-segment strategy of ``splitfed`` and ``mucald`` as well as of ``fedprox``: the
recipe carries the proximal term (MUCALD.md, mu 1e-3), and ``--fedprox-mu 0`` turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from mucald_unet.federation.aggregation import fedprox_penalty, weighted_average
from mucald_unet.federation.strategies.base import SegmentStrategy


class FedAvg(SegmentStrategy):
    """Personal keys (``is_personal``) are averaged into the global segment too, but never copied
    back into a client's segment."""

    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        """The mean over the clients in ``weights`` (those that reported the round); every client's
        copy, a dropped one's too, takes the result, so a client that rejoins starts from it."""
        reporters = self.reporters(weights)
        averaged = weighted_average([segments[c].state_dict() for c in reporters], [weights[c] for c in reporters])
        global_segment.load_state_dict(averaged)
        shared_keys = self.shared_keys()
        shared = {k: v for k, v in averaged.items() if k in shared_keys}
        for client in self.context.clients:
            segments[client].load_state_dict({**segments[client].state_dict(), **shared})


class FedProx(FedAvg):
    """A client's personal keys are not pulled towards the average: their reference is their own value."""

    def extra_terms(self, client: str, segment: nn.Module, reference: Mapping[str, Tensor]) -> dict[str, Tensor]:
        mu = self.config.fedprox_mu
        if mu <= 0:
            return {}
        own = {k: v.detach() for k, v in segment.named_parameters() if self.is_personal(k)}
        return {"fedprox": fedprox_penalty(segment, {**reference, **own}, mu)}
