"""MOCHA: personal server segments coupled by lambda/2 tr(W Omega^-1 W^T); each step's gradient is
lambda (P w_i + sum_j P_ij w_j) with the other columns at their round-start values, and Omega is
the trace-normalised square root of the clients' Gram matrix after each round."""

from __future__ import annotations

import pytest
import torch

from mucald_unet.config import StrategyOptions, TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies.mocha import OMEGA_FLOOR, Mocha, precision_of, task_relationship
from tests.mucald_unet.strategies.conftest import (CLIENTS, WEIGHTS, client_segments, context, snapshot,
                                                   toy_segment, weighted_mean)


def mocha(lam: float = 0.3) -> Mocha:
    return Mocha(context("mocha", strategy=StrategyOptions(mocha_lambda=lam)))


def flat(segment: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double() for p in segment.parameters()])


def test_omega_is_the_normalised_root_of_the_gram_matrix_and_its_inverse_is_floored() -> None:
    columns = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])  # 2 parameters x 3 clients
    gram = columns.T @ columns
    omega = task_relationship(gram)
    assert float(torch.trace(omega)) == pytest.approx(1.0)
    root_trace = torch.linalg.eigvalsh(gram.double()).clamp(min=0).sqrt().sum()
    scaled = omega * root_trace  # Omega = G^(1/2) / tr(G^(1/2)), so (Omega tr)^2 = G
    torch.testing.assert_close(scaled @ scaled, gram.double(), rtol=1e-9, atol=1e-9)
    precision = precision_of(omega)  # rank 2: one eigenvalue 0, floored
    assert float(torch.linalg.eigvalsh(precision).max()) == pytest.approx(1 / OMEGA_FLOOR)
    torch.testing.assert_close(precision_of(torch.eye(3) / 3), torch.eye(3, dtype=torch.float64) * 3)


def test_the_coupling_gradient_is_lambda_times_precision_times_the_columns() -> None:
    strategy = mocha(lam=0.3)
    segments = client_segments(seed=10)
    strategy.aggregate(segments, toy_segment(42), WEIGHTS)  # Omega and the round-start columns from these
    gram = torch.stack([flat(segments[c]) for c in CLIENTS])
    omega = task_relationship(gram @ gram.T)
    torch.testing.assert_close(strategy.omega, omega)
    precision = precision_of(omega)
    moved = toy_segment(7)  # client b's segment during its round
    terms = strategy.extra_terms("b", moved, {})
    assert set(terms) == {"mocha"}
    terms["mocha"].backward()
    start = {c: dict(segments[c].named_parameters()) for c in CLIENTS}
    for name, p in moved.named_parameters():
        expected = 0.3 * (precision[1, 1] * p.detach().double()
                          + precision[1, 0] * start["a"][name].detach().double()
                          + precision[1, 2] * start["c"][name].detach().double())
        torch.testing.assert_close(p.grad.double(), expected, rtol=1e-5, atol=1e-6)
    assert mocha(lam=0.0).extra_terms("b", moved, {}) == {}


def test_the_first_round_is_independent_tasks_and_no_segment_is_averaged() -> None:
    strategy = mocha()
    torch.testing.assert_close(strategy.omega, torch.eye(3, dtype=torch.float64) / 3)
    segments = client_segments()
    before = {c: snapshot(m) for c, m in segments.items()}
    global_segment = toy_segment(42)
    strategy.aggregate(segments, global_segment, WEIGHTS)
    for key, value in global_segment.state_dict().items():  # a summary mean, taken by no client
        torch.testing.assert_close(value.double(), weighted_mean(segments, key), rtol=0, atol=1e-6)
        assert all(torch.equal(segments[c].state_dict()[key], before[c][key]) for c in CLIENTS)
    assert strategy.shared_keys() == set()


def test_omega_and_the_columns_survive_a_state_dict_round_trip_and_local_norms_are_refused() -> None:
    strategy = mocha()
    strategy.aggregate(client_segments(seed=3), toy_segment(42), WEIGHTS)
    restored = mocha()
    restored.load_state_dict(strategy.state_dict())
    torch.testing.assert_close(restored.omega, strategy.omega)
    probe = toy_segment(9)
    assert torch.equal(restored.extra_terms("a", probe, {})["mocha"], strategy.extra_terms("a", probe, {})["mocha"])
    with pytest.raises(TrainingError, match="mocha keeps each client's whole.*drop --local-norms"):
        TrainingConfig(method="mocha", local_norms=True)
    with pytest.raises(TrainingError, match="--mocha-lambda is an option of --method mocha"):
        TrainingConfig(method="ditto", strategy=StrategyOptions(mocha_lambda=0.5))
