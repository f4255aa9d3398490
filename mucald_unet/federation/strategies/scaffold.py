"""SCAFFOLD (Karimireddy et al., 2020): control variates that cancel client drift.

The server keeps a global variate c and one c_i per client for every shared server-segment
parameter; both stay at the server (the server segment lives there), so nothing new crosses the
boundary. At every step client i's gradient g (after clipping) becomes g - c_i + c. At round end
c_i+ is the mean of the uncorrected gradients of the round's steps, which is the paper's option II,
c_i - c + (x - y_i) / (K lr), rewritten: under plain SGD the two are equal, and unlike option II it
stays a gradient under any optimiser (AdamW, momentum). Then c <- c + sum_i w_i (c_i+ - c_i) with
the round's client weights (the paper's 1/N under ``--aggregation equal``), and the segments are
averaged by FedAvg (global step size 1). No proximal term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mucald_unet.federation.strategies.base import StrategyContext
from mucald_unet.federation.strategies.fedavg import FedAvg
from mucald_unet.federation.strategies.registry import MethodSpec, register


class Scaffold(FedAvg):
    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        shared = [(k, p) for k, p in context.global_segment.named_parameters() if not self.is_personal(k)]
        self.c = {k: torch.zeros_like(p, requires_grad=False) for k, p in shared}
        self.c_client = {c: {k: torch.zeros_like(v) for k, v in self.c.items()} for c in context.clients}
        self._gradient_sums: dict[str, dict[str, Tensor]] = {c: {} for c in context.clients}
        self._steps = dict.fromkeys(context.clients, 0)

    def correct_gradients(self, client: str, segment: nn.Module) -> None:
        sums, c_i = self._gradient_sums[client], self.c_client[client]
        with torch.no_grad():
            for name, param in segment.named_parameters():
                if name not in self.c or param.grad is None:
                    continue
                if name in sums:
                    sums[name].add_(param.grad)
                else:
                    sums[name] = param.grad.detach().clone()
                param.grad.add_(self.c[name] - c_i[name])
        self._steps[client] += 1

    def aggregate(self, segments: Mapping[str, nn.Module], global_segment: nn.Module,
                  weights: Mapping[str, float]) -> None:
        reporters = self.reporters(weights)  # a dropped client's partial round is discarded
        total = sum(weights[c] for c in reporters)
        with torch.no_grad():
            for client in reporters:
                steps = self._steps[client]
                if steps == 0:
                    continue
                for name, old in self.c_client[client].items():
                    new = self._gradient_sums[client][name] / steps
                    self.c[name].add_(new - old, alpha=weights[client] / total)
                    old.copy_(new)
        self._gradient_sums = {c: {} for c in self.context.clients}
        self._steps = dict.fromkeys(self.context.clients, 0)
        super().aggregate(segments, global_segment, weights)

    def state_dict(self) -> dict[str, Any]:
        return {"c": dict(self.c), "c_client": {c: dict(v) for c, v in self.c_client.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state["c"].items():
            self.c[name].copy_(value)
        for client, variates in state["c_client"].items():
            for name, value in variates.items():
                self.c_client[client][name].copy_(value)
        self._gradient_sums = {c: {} for c in self.context.clients}
        self._steps = dict.fromkeys(self.context.clients, 0)


register(MethodSpec("scaffold", "FedAvg of SS with SCAFFOLD control variates correcting each step's "
                    "gradient (kept at the server)", Scaffold))
