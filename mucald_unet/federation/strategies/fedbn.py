"""FedBN (Li et al., 2021): FedAvg with the normalisation layers kept local. Here the server
segment's InstanceNorm affine parameters (every ``...normN.weight`` / ``.bias``) stay with their
client; every other server-segment tensor is averaged. No proximal term (FedBN has none)."""

from __future__ import annotations

from mucald_unet.federation.strategies.base import is_norm_key
from mucald_unet.federation.strategies.fedavg import FedAvg
from mucald_unet.federation.strategies.registry import MethodSpec, register


class FedBN(FedAvg):
    def is_personal(self, key: str) -> bool:
        return is_norm_key(key)


register(MethodSpec("fedbn", "FedAvg of SS with its normalisation layers personal", FedBN,
                    local_norms_conflict="keeps the server segment's norms local already"))
