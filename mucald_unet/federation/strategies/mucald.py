"""``mucald``: the splitfed server segment (FedAvg with the recipe's proximal term) plus CRDM at both
split points on the clients (their exogenous encoders and denoisers averaged too) and DACA's
domain discriminators at the server (MUCALD.md)."""

from __future__ import annotations

from mucald_unet.federation.strategies.fedavg import FedProx
from mucald_unet.federation.strategies.registry import CRDM, DACA, MethodSpec, register

register(MethodSpec("mucald", "split network + CRDM at both split points + DACA; SS as splitfed",
                    FedProx, components=frozenset({CRDM, DACA})))
