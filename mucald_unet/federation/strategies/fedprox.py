"""``fedprox`` (Li et al., 2020): the split network without CRDM and DACA, its server segment
federated by FedAvg with the proximal term 0.5 mu ||SS - SS_global||^2 (``--fedprox-mu``).

``splitfed`` carries the same term in its recipe, so the two train the same weights at the same mu:
compare FedProx with FedAvg as ``--method fedprox`` against ``--method splitfed --fedprox-mu 0``.
"""

from __future__ import annotations

from mucald_unet.federation.strategies.fedavg import FedProx
from mucald_unet.federation.strategies.registry import MethodSpec, register

register(MethodSpec("fedprox", "FedAvg of SS + proximal term 0.5 mu ||SS - SS_global||^2 (--fedprox-mu)", FedProx))
