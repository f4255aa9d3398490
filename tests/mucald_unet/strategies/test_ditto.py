"""Ditto: a global track averaged by FedAvg and a personal segment per client whose regulariser
lambda/2 ||v - w||^2 has the gradient lambda (v - w); the personal segment is never averaged."""

from __future__ import annotations

import pytest
import torch

from mucald_unet.config import StrategyOptions, TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies import SegmentSlot
from mucald_unet.federation.strategies.ditto import Ditto
from tests.mucald_unet.strategies.conftest import (CLIENTS, WEIGHTS, client_segments, context, sgd, snapshot,
                                                   toy_segment, weighted_mean)


def ditto(lam: float = 0.4, iterations: int = 4) -> Ditto:
    return Ditto(context("ditto", iterations_per_epoch=iterations, strategy=StrategyOptions(ditto_lambda=lam)))


def test_the_personal_regulariser_gradient_is_lambda_times_v_minus_w() -> None:
    strategy = ditto(lam=0.4)
    personal, reference = toy_segment(1), snapshot(toy_segment(2))
    terms = strategy.extra_terms("a", personal, reference)
    assert set(terms) == {"ditto"}
    terms["ditto"].backward()
    for name, v in personal.named_parameters():
        torch.testing.assert_close(v.grad, 0.4 * (v.detach() - reference[name]), rtol=1e-6, atol=1e-7)
    assert strategy.extra_terms("a", strategy.tracks["a"].module, reference) == {}  # the global track: plain loss


def test_the_first_half_of_a_round_trains_the_global_track_the_rest_the_personal_segment() -> None:
    strategy = ditto(iterations=4)
    deployed = SegmentSlot(toy_segment(1), sgd(toy_segment(1)))
    chosen = [strategy.segment_to_train("b", step, deployed) for step in range(4)]
    assert chosen == [strategy.tracks["b"]] * 2 + [deployed] * 2
    assert ditto(iterations=1).segment_to_train("b", 0, deployed) is deployed


def test_the_aggregate_averages_the_global_track_and_leaves_the_personal_segments() -> None:
    strategy = ditto()
    for client, track in zip(CLIENTS, client_segments(seed=20).values()):
        strategy.tracks[client].module.load_state_dict(track.state_dict())
    tracks = {c: slot.module for c, slot in strategy.tracks.items()}
    expected = {k: weighted_mean(tracks, k) for k in toy_segment(0).state_dict()}
    personal = client_segments()
    before = {c: snapshot(m) for c, m in personal.items()}
    global_segment = toy_segment(42)
    strategy.aggregate(personal, global_segment, WEIGHTS)
    for key, value in global_segment.state_dict().items():
        torch.testing.assert_close(value.double(), expected[key], rtol=0, atol=1e-6)
        assert all(torch.equal(strategy.tracks[c].module.state_dict()[key], value) for c in CLIENTS)
        assert all(torch.equal(personal[c].state_dict()[key], before[c][key]) for c in CLIENTS)
    assert strategy.shared_keys() == set()


def test_the_global_track_survives_a_state_dict_round_trip_and_local_norms_are_refused() -> None:
    strategy = ditto()
    strategy.tracks["a"].module.load_state_dict(toy_segment(5).state_dict())
    restored = ditto()
    restored.load_state_dict(strategy.state_dict())
    for key, value in strategy.tracks["a"].module.state_dict().items():
        assert torch.equal(restored.tracks["a"].module.state_dict()[key], value)
    with pytest.raises(TrainingError, match="ditto keeps each client's whole.*drop --local-norms"):
        TrainingConfig(method="ditto", local_norms=True)  # refused before any training is set up
