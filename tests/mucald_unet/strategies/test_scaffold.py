"""SCAFFOLD: each step's gradient becomes g - c_i + c, and at round end c_i+ and c+ follow the
paper's option II, c_i+ = c_i - c + (x - y_i) / (K lr), c+ = c + sum_i w_i (c_i+ - c_i)."""

from __future__ import annotations

import copy

import torch

from mucald_unet.federation.strategies.scaffold import Scaffold
from tests.mucald_unet.strategies.conftest import (CLIENTS, WEIGHTS, batch, context, sgd, snapshot, toy_segment,
                                                   weighted_mean)


def with_random_variates(strategy: Scaffold, seed: int = 7) -> Scaffold:
    generator = torch.Generator().manual_seed(seed)
    for variates in (strategy.c, *strategy.c_client.values()):
        for value in variates.values():
            value.copy_(0.1 * torch.randn(value.shape, generator=generator))
    return strategy


def loss_of(segment: torch.nn.Module, seed: int) -> torch.Tensor:
    return segment(batch(seed)).square().mean()


def test_the_corrected_gradient_is_g_minus_c_i_plus_c() -> None:
    strategy = with_random_variates(Scaffold(context("scaffold")))
    segment = toy_segment(1)
    loss_of(segment, 0).backward()
    raw = {n: p.grad.clone() for n, p in segment.named_parameters()}
    strategy.correct_gradients("b", segment)
    assert set(raw) == set(strategy.c)
    for name, p in segment.named_parameters():
        torch.testing.assert_close(p.grad, raw[name] - strategy.c_client["b"][name] + strategy.c[name])


def test_the_round_end_variates_follow_option_ii_under_plain_sgd() -> None:
    lr, steps = 0.05, 3
    strategy = with_random_variates(Scaffold(context("scaffold")))
    c_before = {k: v.clone() for k, v in strategy.c.items()}
    c_i_before = {c: {k: v.clone() for k, v in variates.items()} for c, variates in strategy.c_client.items()}
    x = toy_segment(10)
    segments = {c: copy.deepcopy(x) for c in CLIENTS}
    for i, client in enumerate(CLIENTS):
        optimizer = sgd(segments[client], lr)
        for step in range(steps):
            loss_of(segments[client], 10 * i + step).backward()
            strategy.correct_gradients(client, segments[client])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    y = {c: snapshot(m) for c, m in segments.items()}
    expected_global = {k: weighted_mean(segments, k) for k in x.state_dict()}
    global_segment = toy_segment(42)
    strategy.aggregate(segments, global_segment, WEIGHTS)
    x_state = dict(x.named_parameters())
    for name in strategy.c:
        delta = torch.zeros_like(strategy.c[name])
        for client in CLIENTS:
            option_ii = (c_i_before[client][name] - c_before[name]
                         + (x_state[name].detach() - y[client][name]) / (steps * lr))
            torch.testing.assert_close(strategy.c_client[client][name], option_ii, rtol=1e-4, atol=1e-5)
            delta += WEIGHTS[client] * (strategy.c_client[client][name] - c_i_before[client][name])
        torch.testing.assert_close(strategy.c[name], c_before[name] + delta, rtol=1e-5, atol=1e-6)
    for key, value in global_segment.state_dict().items():  # the segments: FedAvg, global step size 1
        torch.testing.assert_close(value.double(), expected_global[key], rtol=0, atol=1e-6)


def test_the_variates_survive_a_state_dict_round_trip_and_untrained_clients_keep_theirs() -> None:
    strategy = with_random_variates(Scaffold(context("scaffold")))
    segment = toy_segment(1)
    loss_of(segment, 0).backward()
    strategy.correct_gradients("a", segment)  # only "a" trained this round
    kept = {k: v.clone() for k, v in strategy.c_client["b"].items()}
    strategy.aggregate({c: toy_segment(i) for i, c in enumerate(CLIENTS)}, toy_segment(42), WEIGHTS)
    assert all(torch.equal(strategy.c_client["b"][k], v) for k, v in kept.items())
    restored = Scaffold(context("scaffold"))
    restored.load_state_dict(copy.deepcopy(strategy.state_dict()))
    for name, value in strategy.c.items():
        assert torch.equal(restored.c[name], value)
        assert all(torch.equal(restored.c_client[c][name], strategy.c_client[c][name]) for c in CLIENTS)
