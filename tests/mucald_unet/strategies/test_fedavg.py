"""FedAvg and FedProx on the server segment: the round-end mean is the explicit weighted mean,
``--local-norms`` keeps norms personal (both aliases of a tensor agree), and FedProx's gradient is
mu (w - w_ref)."""

from __future__ import annotations

import pytest
import torch

from mucald_unet.federation.strategies import canonical_names, method_spec
from mucald_unet.federation.strategies.fedavg import FedAvg, FedProx
from tests.mucald_unet.strategies.conftest import (CLIENTS, WEIGHTS, batch, client_segments, context, snapshot,
                                                   toy_segment, weighted_mean)


def test_canonical_names_map_an_alias_to_the_first_name_of_its_tensor() -> None:
    names = canonical_names(toy_segment(0))
    assert names["skip_layers.upsample.conv1.weight"] == "upsamples.1.conv1.weight"
    assert names["upsamples.1.conv1.weight"] == "upsamples.1.conv1.weight"
    assert names["input_block.norm1.bias"] == "input_block.norm1.bias"


def test_the_aggregate_is_the_explicit_weighted_mean_and_every_copy_takes_it() -> None:
    strategy = FedAvg(context())
    segments, global_segment = client_segments(), toy_segment(42)
    expected = {k: weighted_mean(segments, k) for k in global_segment.state_dict()}
    strategy.aggregate(segments, global_segment, WEIGHTS)
    for key, value in global_segment.state_dict().items():
        torch.testing.assert_close(value.double(), expected[key], rtol=0, atol=1e-6)
        for client in CLIENTS:
            assert torch.equal(segments[client].state_dict()[key], value), (client, key)


def test_local_norms_stay_with_their_client_and_the_rest_is_averaged() -> None:
    strategy = FedAvg(context(local_norms=True))
    segments = client_segments()
    before = {c: snapshot(m) for c, m in segments.items()}
    global_segment = toy_segment(42)
    strategy.aggregate(segments, global_segment, WEIGHTS)
    norms = {k for k in global_segment.state_dict() if ".norm" in k}
    assert norms and strategy.shared_keys() == set(global_segment.state_dict()) - norms
    for client, segment in segments.items():
        for key, value in segment.state_dict().items():
            expected = before[client][key] if key in norms else global_segment.state_dict()[key]
            assert torch.equal(value, expected), (client, key)


def test_fedprox_gradient_is_mu_times_the_distance_to_the_reference() -> None:
    mu = 0.3
    strategy = FedProx(context(fedprox_mu=mu))
    segment, reference = toy_segment(1), snapshot(toy_segment(2))
    terms = strategy.extra_terms("a", segment, reference)
    assert set(terms) == {"fedprox"}
    terms["fedprox"].backward()
    for name, p in segment.named_parameters():
        torch.testing.assert_close(p.grad, mu * (p.detach() - reference[name]), rtol=1e-6, atol=1e-7)


def test_fedprox_does_not_pull_personal_norms_and_mu_zero_adds_nothing() -> None:
    strategy = FedProx(context(fedprox_mu=0.3, local_norms=True))
    segment, reference = toy_segment(1), snapshot(toy_segment(2))
    strategy.extra_terms("a", segment, reference)["fedprox"].backward()
    for name, p in segment.named_parameters():
        assert (float(p.grad.abs().max()) == 0.0) == (".norm" in name), name
    assert FedProx(context(fedprox_mu=0.0)).extra_terms("a", segment, reference) == {}


@pytest.mark.parametrize("method", ["mucald", "splitfed", "fedprox"])
def test_mucald_splitfed_and_fedprox_share_the_fedprox_server_segment(method: str) -> None:
    assert method_spec(method).strategy is FedProx
    segment = toy_segment(1)
    assert FedProx(context(method)).extra_terms("a", segment, snapshot(segment))["fedprox"].item() == 0.0
    assert segment(batch()).shape == batch().shape
