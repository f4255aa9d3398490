"""MOCHA (Smith et al., 2017), on the server segment: federated multi-task learning in which every
client keeps its own server segment w_i and a learned task-relationship matrix Omega couples them.

Objective: sum_i loss_i(w_i) + lambda/2 tr(W Omega^-1 W^T), W = [w_1 .. w_m] (one column per
client, every parameter of the segment), Omega >= 0 with tr(Omega) = 1 (``--mocha-lambda``).
MOCHA alternates the two blocks, and so does this:

- W: each client's steps minimise its own loss plus the coupling with the other columns held at
  their round-start values, as MOCHA's local subproblems do. The term's gradient for client i is
  lambda (P_ii w_i + sum_{j != i} P_ij w_j), P = Omega^-1.
- Omega, at round end at the server: Omega = (W^T W)^(1/2) / tr((W^T W)^(1/2)), the closed form of
  the task-relationship step (Zhang & Yeung, 2010, which MOCHA uses). Its eigenvalues are floored at
  ``OMEGA_FLOOR`` before inverting: copies that start equal give a singular Omega, and the floor
  bounds how hard the coupling pulls clients that look alike together.

The published MOCHA solves the dual of this problem for convex (linear) models; the dual does not
exist for a network, so the primal block updates above are what runs here. Nothing extra crosses
the boundary: Omega and the round-start columns live at the server, which holds every w_i anyway.
Omega starts as I/m (unrelated tasks), so the first round is local training with weight decay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mucald_unet.federation.aggregation import weighted_average
from mucald_unet.federation.strategies.base import SegmentStrategy, StrategyContext
from mucald_unet.federation.strategies.registry import MethodSpec, register

OMEGA_FLOOR = 1e-3  # smallest eigenvalue of Omega (trace 1) kept before inverting it


def task_relationship(gram: Tensor) -> Tensor:
    """Omega = (G)^(1/2) / tr(G^(1/2)) for the Gram matrix G = W^T W of the clients' columns."""
    eigenvalues, vectors = torch.linalg.eigh(gram.double())
    root = vectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ vectors.T
    trace = torch.trace(root)
    if not trace > 0:  # every column zero: nothing relates the tasks
        return torch.eye(len(gram), dtype=torch.float64) / len(gram)
    return root / trace


def precision_of(omega: Tensor) -> Tensor:
    """Omega^-1 with Omega's eigenvalues floored at ``OMEGA_FLOOR``."""
    eigenvalues, vectors = torch.linalg.eigh(omega.double())
    return vectors @ torch.diag(1.0 / eigenvalues.clamp(min=OMEGA_FLOOR)) @ vectors.T


class Mocha(SegmentStrategy):
    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        count = len(context.clients)
        self.omega = torch.eye(count, dtype=torch.float64) / count
        start = {k: v.detach().clone() for k, v in context.global_segment.named_parameters()}
        self.columns: dict[str, dict[str, Tensor]] = {c: {k: v.clone() for k, v in start.items()}
                                                      for c in context.clients}
        self.precision, self._couplings = self._couplings_of_columns()

    def is_personal(self, key: str) -> bool:
        """Every client's whole segment is its own; Omega, not averaging, relates them."""
        return True

    def _couplings_of_columns(self) -> tuple[Tensor, dict[str, dict[str, Tensor]]]:
        """P = Omega^-1 and, per client, sum_{j != i} P_ij w_j of the round-start columns: the fixed
        half of its term."""
        precision, clients = precision_of(self.omega), self.context.clients
        couplings = {client: {key: sum(float(precision[i, j]) * self.columns[other][key]
                                       for j, other in enumerate(clients) if other != client)
                              for key in self.columns[client]}
                     for i, client in enumerate(clients)}
        return precision, couplings

    def extra_terms(self, client: str, segment: nn.Module, reference: Mapping[str, Tensor]) -> dict[str, Tensor]:
        lam = self.config.strategy.mocha_lambda
        if lam <= 0:
            return {}
        i = self.context.clients.index(client)
        own = float(self.precision[i, i])
        coupling = self._couplings[client]
        params = list(segment.named_parameters())
        squared = torch.stack([p.pow(2).sum() for _, p in params]).sum()
        cross = torch.stack([(p * coupling[name]).sum() for name, p in params]).sum()
        return {"mocha": lam * (0.5 * own * squared + cross)}

    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        """Omega from the clients' segments; the global segment becomes their weighted mean (a
        summary only: no client takes it)."""
        clients = self.context.clients
        self.columns = {c: {k: v.detach().clone() for k, v in segments[c].named_parameters()} for c in clients}
        keys = list(self.columns[clients[0]])
        flat = torch.stack([torch.cat([self.columns[c][k].flatten().double() for k in keys]) for c in clients])
        self.omega = task_relationship(flat @ flat.T)
        self.precision, self._couplings = self._couplings_of_columns()
        reporters = self.reporters(weights)
        global_segment.load_state_dict(weighted_average([segments[c].state_dict() for c in reporters],
                                                        [weights[c] for c in reporters]))

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega.clone(), "columns": self.columns}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.omega = state["omega"].to(torch.float64)
        self.columns = {c: dict(state["columns"][c]) for c in self.context.clients}
        self.precision, self._couplings = self._couplings_of_columns()


register(MethodSpec("mocha", "a personal SS per client, coupled by a learned task-relationship matrix: "
                    "lambda/2 tr(W Omega^-1 W^T) (--mocha-lambda), Omega updated at round end", Mocha,
                    options=("mocha_lambda",),
                    local_norms_conflict="keeps each client's whole server segment personal"))
