"""FedEM: the server segment is a mixture of M bodies whose outputs cross stacked; the client's
E-step weighs each sample's component losses by q proportional to pi exp(-loss), pi becomes the
round's mean responsibility, and predictions are log sum_m pi_m softmax(logits_m)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mucald_unet.config import StrategyOptions, TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.networks.mixture import MixtureSegment, MixtureWeights, split_components
from mucald_unet.training.trainer import LOG_FILE, MANIFEST_FILE, FederatedTrainer
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


def test_the_mixture_segment_stacks_each_components_output_component_major() -> None:
    torch.manual_seed(0)
    components = [nn.Conv2d(3, 3, 1) for _ in range(3)]
    x = torch.randn(2, 3, 4, 4)
    stacked = MixtureSegment(components)(x)
    assert stacked.shape == (6, 3, 4, 4)
    for m, component in enumerate(components):
        torch.testing.assert_close(split_components(stacked, 3)[m], component(x))
    with pytest.raises(ValueError, match="7 stacked samples are not 3 components"):
        split_components(torch.zeros(7, 1), 3)


def test_predictions_are_the_pi_weighted_mixture_and_responsibilities_follow_pi_and_losses() -> None:
    mixture = MixtureWeights(2)
    mixture.set_weights(torch.tensor([3.0, 1.0]))  # normalised to 0.75 / 0.25
    torch.testing.assert_close(mixture.weights, torch.tensor([0.75, 0.25]))
    logits = torch.randn(2 * 4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    first, second = logits[:4].softmax(1), logits[4:].softmax(1)
    torch.testing.assert_close(mixture.combine(logits).exp(), 0.75 * first + 0.25 * second)
    losses = torch.tensor([[0.2, 1.0], [0.7, 0.1]])  # (M, B)
    q = mixture.responsibilities(losses)
    expected = torch.tensor([0.75, 0.25]).view(2, 1) * torch.exp(-losses)
    torch.testing.assert_close(q, expected / expected.sum(0))


def test_a_round_averages_each_component_sends_m_maps_and_updates_pi(tiny_federation: Path, tmp_path: Path) -> None:
    run = FederatedTrainer(tiny_federation, CLIENTS, quick_config("fedem", iterations=2), tmp_path)
    run.run()
    segment = run.server.segments[CLIENTS[0]]
    first, second = (dict(c.named_parameters()) for c in segment.components[:2])
    assert len(segment.components) == 3 and any(not torch.equal(first[k], second[k]) for k in first)
    for client in run.clients:
        weights = client.network.mixture.weights
        assert float(weights.sum()) == pytest.approx(1.0) and not torch.allclose(weights, torch.full((3,), 1 / 3))
    records = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    logged = [r["losses"] for r in records if r.get("event") == "round"]
    assert all(sum(terms[f"fedem_pi{m}"] for m in range(3)) == pytest.approx(1.0) for terms in logged)
    entries = [json.loads(line) for line in (tmp_path / MANIFEST_FILE).read_text().splitlines()]
    sent = [e for e in entries if e["kind"] == "features" and e["step"] == 0 and e["client"] == CLIENTS[0]]
    up, down = (next(e["shapes"]["features"] for e in sent if e["direction"] == d) for d in ("client->server", "server->client"))
    assert down[0] == 3 * up[0] and down[1:] == up[1:]


def test_fedem_needs_two_components_and_its_option_is_its_own() -> None:
    with pytest.raises(TrainingError, match="fedem_components=1 >= 2"):
        TrainingConfig(method="fedem", strategy=StrategyOptions(fedem_components=1))
    with pytest.raises(TrainingError, match="--fedem-components is an option of --method fedem"):
        TrainingConfig(method="splitfed", strategy=StrategyOptions(fedem_components=4))
    assert TrainingConfig(method="fedem").mixture_size == 3 and TrainingConfig(method="splitfed").mixture_size == 1
