"""FedPer (Arivazhagan et al., 2019): shared base layers, personal top layers.

The client's BE (its classifier) is personal in every method; FedPer also keeps the server
segment's last ``--fedper-stages`` decoder stages (default 1: ``upsamples.<last>``, the
full-resolution stage) and its ``output_block`` (the 1x1 conv after them) with each client. The
encoder, bottleneck and earlier decoder stages are averaged. No proximal term (FedPer has none).
"""

from __future__ import annotations

from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies.base import StrategyContext
from mucald_unet.federation.strategies.fedavg import FedAvg
from mucald_unet.federation.strategies.registry import MethodSpec, register

OUTPUT_BLOCK = "output_block."


def personal_prefixes(decoder_stages: int, stages: int) -> tuple[str, ...]:
    """Key prefixes of the last ``stages`` of ``decoder_stages`` DynUNet decoder stages and the output block."""
    if not 1 <= stages <= decoder_stages:
        raise TrainingError(f"--fedper-stages {stages}: the server segment has {decoder_stages} decoder "
                            f"stages. Fix: use 1 to {decoder_stages}.")
    return tuple(f"upsamples.{i}." for i in range(decoder_stages - stages, decoder_stages)) + (OUTPUT_BLOCK,)


class FedPer(FedAvg):
    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        decoder = len(context.global_segment.upsamples)
        self.prefixes = personal_prefixes(decoder, context.config.strategy.fedper_stages)

    def is_personal(self, key: str) -> bool:
        return super().is_personal(key) or key.startswith(self.prefixes)


register(MethodSpec("fedper", "FedAvg of SS with its last decoder stage(s) and output block personal "
                    "(--fedper-stages)", FedPer, options=("fedper_stages",)))
