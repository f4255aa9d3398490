"""Server-side aggregation: how much each client's shared weights count, and the averaging itself.

Strategies are small swappable objects that turn round-end client reports into weights, so the
training loop never knows which rule it runs. The FedProx penalty lives here too because it is
the client-side half of the same contract: stay near what the server last aggregated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class ClientReport:
    """What a client tells the server at round end: scalars only, so it can be logged and audited."""

    client: str
    num_samples: int
    proxy_mse: float = float("nan")
    val_loss: float = float("nan")


class AggregationStrategy(Protocol):
    """Turns reports into float64 weights: non-negative, summing to 1, in the reports' order."""

    name: str

    def weights(self, reports: Sequence[ClientReport]) -> np.ndarray: ...


def _check_reports(reports: Sequence[ClientReport]) -> int:
    if len(reports) == 0:
        raise ValueError("cannot aggregate over zero client reports")
    for report in reports:
        if report.num_samples < 0:
            raise ValueError(f"client {report.client!r} reports num_samples={report.num_samples} < 0")
    return len(reports)


def _equal(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n, dtype=np.float64)


@dataclass(frozen=True)
class FedAvgEqual:
    """Every client counts the same: the paper's reference rule."""

    name: str = field(default="equal", init=False)

    def weights(self, reports: Sequence[ClientReport]) -> np.ndarray:
        return _equal(_check_reports(reports))


@dataclass(frozen=True)
class FedAvgBySamples:
    """Classic FedAvg: weight proportional to the client's number of training samples."""

    name: str = field(default="samples", init=False)

    def weights(self, reports: Sequence[ClientReport]) -> np.ndarray:
        _check_reports(reports)
        sizes = np.array([r.num_samples for r in reports], dtype=np.float64)
        total = sizes.sum()
        if total <= 0:
            raise ValueError("FedAvgBySamples needs at least one client with num_samples > 0")
        return sizes / total


def _usable(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class CausalInvariantFusion:
    """Favour clients whose causal proxies are well predicted and that validate well per sample.

    raw_c = (1 / proxy_mse_c) * (num_samples_c / val_loss_c), normalised; each weight is raised to
    at least ``floor / N`` (then renormalised) so no client is silenced; finally blended with
    equal weights, w = blend * w + (1 - blend) / N, to damp round-to-round swings.

    Falls back to equal weights when any client's proxy_mse or val_loss is NaN, infinite or
    non-positive (a run without CRDM reports no proxy error), or when every raw score is zero:
    a partial signal would otherwise rank clients on unlike terms.
    """

    floor: float = 0.25
    blend: float = 0.5
    eps: float = 1e-12
    name: str = field(default="causal", init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"floor must lie in [0, 1], got {self.floor}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must lie in [0, 1], got {self.blend}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def weights(self, reports: Sequence[ClientReport]) -> np.ndarray:
        n = _check_reports(reports)
        if not all(_usable(r.proxy_mse) and _usable(r.val_loss) for r in reports):
            return _equal(n)
        raw = np.array(
            [(1.0 / max(r.proxy_mse, self.eps)) * (r.num_samples / max(r.val_loss, self.eps))
             for r in reports],
            dtype=np.float64,
        )
        total = raw.sum()
        if not (math.isfinite(total) and total > 0):
            return _equal(n)
        w = np.maximum(raw / total, self.floor / n)
        w = w / w.sum()
        return self.blend * w + (1.0 - self.blend) / n


_STRATEGIES: Mapping[str, Callable[[], AggregationStrategy]] = MappingProxyType({
    "equal": FedAvgEqual,
    "samples": FedAvgBySamples,
    "causal": CausalInvariantFusion,
})


def strategy_from_name(name: str) -> AggregationStrategy:
    """Build a strategy with its default settings from the name recorded in a run's config."""
    try:
        factory = _STRATEGIES[name]
    except KeyError:
        valid = ", ".join(sorted(_STRATEGIES))
        raise ValueError(f"unknown aggregation strategy {name!r}; valid names: {valid}") from None
    return factory()


def _check_same_layout(states: Sequence[Mapping[str, torch.Tensor]]) -> None:
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        missing = [k for k in first if k not in state]
        extra = [k for k in state if k not in first]
        if missing or extra:
            key = (missing or extra)[0]
            where = "missing from" if missing else "only in"
            raise ValueError(f"state dict key {key!r} is {where} state {index}; all clients must "
                             "share the same module layout")
        for key, tensor in first.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ValueError(f"state dict key {key!r} has shape {tuple(state[key].shape)} in "
                                 f"state {index} but {tuple(tensor.shape)} in state 0")


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]],
                     weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Average state dicts key by key; returns new tensors that share no storage with the inputs.

    Weights are normalised by their sum. Floating (and complex) tensors are accumulated in double
    precision on the first state's device and cast back to its dtype, so float16/bfloat16 buffers
    do not lose precision in the sum. Integer and bool tensors (step counters, masks) have no
    meaningful mean and are copied from the first state.
    """
    if len(states) == 0:
        raise ValueError("cannot average zero state dicts")
    if len(states) != len(weights):
        raise ValueError(f"got {len(states)} state dicts but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        raise ValueError("weights sum to zero")
    w = w / total
    _check_same_layout(states)

    averaged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, reference in states[0].items():
            ref = reference.detach()
            if ref.is_floating_point() or ref.is_complex():
                wide = torch.complex128 if ref.is_complex() else torch.float64
                acc = torch.zeros(ref.shape, dtype=wide, device=ref.device)
                for state, weight in zip(states, w):
                    acc.add_(state[key].detach().to(device=ref.device, dtype=wide), alpha=float(weight))
                averaged[key] = acc.to(dtype=ref.dtype)
            else:
                averaged[key] = ref.clone()
    return averaged


def fedprox_penalty(module: torch.nn.Module, reference: Mapping[str, torch.Tensor],
                    mu: float) -> torch.Tensor:
    """0.5 * mu * sum_p ||p - reference[p]||^2 over the module's named parameters.

    Keeps a client's shared segment near the last aggregate so local epochs on skewed data do not
    drift it too far. The reference is detached: only the local parameters receive gradient. With
    mu == 0 a constant zero without a graph is returned, so adding it to a loss costs nothing.
    """
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"FedProx mu must be finite and >= 0, got {mu}")
    params = list(module.named_parameters())
    if not params:
        return torch.zeros(())
    first = params[0][1]
    if mu == 0:
        return torch.zeros((), dtype=first.dtype, device=first.device)
    total = torch.zeros((), dtype=first.dtype, device=first.device)
    for name, param in params:
        if name not in reference:
            raise ValueError(f"FedProx reference has no entry for parameter {name!r}")
        target = reference[name].detach().to(device=param.device, dtype=param.dtype)
        if target.shape != param.shape:
            raise ValueError(f"FedProx reference {name!r} has shape {tuple(target.shape)}, "
                             f"parameter has {tuple(param.shape)}")
        total = total + (param - target).pow(2).sum()
    return 0.5 * mu * total
