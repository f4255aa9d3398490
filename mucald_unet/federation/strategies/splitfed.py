"""``splitfed``: the split network without CRDM and DACA, its server segment federated by FedAvg with
the recipe's proximal term (``FedProx``; ``--fedprox-mu 0`` for none). The paper's "BS" baseline."""

from __future__ import annotations

from mucald_unet.federation.strategies.fedavg import FedProx
from mucald_unet.federation.strategies.registry import MethodSpec, register

register(MethodSpec("splitfed", "the same split network, plain: FedAvg of SS with the recipe's "
                    "proximal term (--fedprox-mu)", FedProx))
