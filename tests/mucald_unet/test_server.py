"""The server role: message dispatch and its refusals, DACA's reversed gradient at split 1, one
discriminator update per federation step, FedProx's proximal gradient on the server segment,
and a round that survives a dropped client.

Built directly on the tiny federation's plan, without clients, so every tensor sent is chosen here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from mucald_unet.config import LossWeights, OptimizerConfig
from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import VALIDATION_STEP, Kind, Message
from mucald_unet.federation.server import SplitServer
from mucald_unet.training.trainer import FederatedTrainer
from planners.plans import load_plans
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config

CLIENT = CLIENTS[0]


def build_server(plans_path: Path, seed: int = 0, **config) -> SplitServer:
    torch.manual_seed(seed)  # the same initial segment and discriminators for the same seed
    return SplitServer(load_plans(plans_path).federation, CLIENTS, quick_config(**config))


def split_features(plans_path: Path, seed: int = 1, batch: int = 2) -> torch.Tensor:
    plans = load_plans(plans_path)
    shape = (batch, plans.federation.split_channels, *plans.client(CLIENT).patch_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def forward(client: str, features: torch.Tensor, step: int = 0) -> Message:
    return Message(client, Kind.FEATURES, "split1", 0, step, {"features": features.clone()})


def backward(client: str, gradient: torch.Tensor, step: int = 0) -> Message:
    return Message(client, Kind.GRADIENT, "split2", 0, step, {"gradient": gradient.clone()})


# ---- dispatch ---------------------------------------------------------------------------------

def test_unknown_messages_clients_and_out_of_order_gradients_are_typed_errors(tiny_federation: Path) -> None:
    server = build_server(tiny_federation, method="splitfed")
    x = split_features(tiny_federation)
    with pytest.raises(TrainingError, match="does not understand features/split2"):
        server.handle(Message(CLIENT, Kind.FEATURES, "split2", 0, 0, {"features": x}))
    with pytest.raises(TrainingError, match="does not understand ack/join"):
        server.handle(Message(CLIENT, Kind.ACK, "join", 0, 0))
    with pytest.raises(TrainingError, match="unknown client 'Dataset999_Nobody'"):
        server.handle(forward("Dataset999_Nobody", x))
    with pytest.raises(TrainingError, match=f"{CLIENT} sent a gradient without a forward pass in step 3"):
        server.handle(backward(CLIENT, torch.zeros_like(x), step=3))
    server.handle(forward(CLIENT, x))
    server.handle(backward(CLIENT, torch.zeros_like(x)))
    with pytest.raises(TrainingError, match="without a forward pass"):  # one gradient per forward
        server.handle(backward(CLIENT, torch.zeros_like(x)))


def test_messages_missing_their_tensor_or_scalar_are_typed_errors(tiny_federation: Path) -> None:
    server = build_server(tiny_federation, method="splitfed")
    with pytest.raises(TrainingError, match="features/split1 from .* carries no tensor 'features'"):
        server.handle(Message(CLIENT, Kind.FEATURES, "split1", 0, 0, {"gradient": torch.zeros(1)}))
    with pytest.raises(TrainingError, match="report/join from .* carries no scalar 'num_samples'"):
        server.handle(Message(CLIENT, Kind.REPORT, "join", 0, 0))
    server.handle(forward(CLIENT, split_features(tiny_federation)))
    with pytest.raises(TrainingError, match="gradient/split2 from .* carries no tensor 'gradient'"):
        server.handle(Message(CLIENT, Kind.GRADIENT, "split2", 0, 0))


def test_validation_forward_is_deterministic_and_leaves_nothing_pending(tiny_federation: Path) -> None:
    server = build_server(tiny_federation, method="splitfed")
    x = split_features(tiny_federation)
    first = server.handle(Message(CLIENT, Kind.FEATURES, "split1", 0, VALIDATION_STEP, {"features": x}))
    second = server.handle(Message(CLIENT, Kind.FEATURES, "split1", 0, VALIDATION_STEP, {"features": x}))
    assert (first.kind, first.name) == (Kind.FEATURES, "split2")
    assert first.tensors["features"].shape == x.shape and torch.equal(first.tensors["features"],
                                                                      second.tensors["features"])
    with pytest.raises(TrainingError, match="without a forward pass"):
        server.handle(backward(CLIENT, torch.zeros_like(x), step=VALIDATION_STEP))


# ---- DACA ---------------------------------------------------------------------------------------

def test_the_adversarial_gradient_at_split_1_is_the_reversed_discriminator_gradient(tiny_federation: Path) -> None:
    """Only the adversarial terms act (zero split-2 gradient, FedProx off): what returns to the client
    is -lambda_adv x d(CE_split1 + CE_split2)/d(features), computed here by hand on copies."""
    adversarial = 0.7
    server = build_server(tiny_federation, fedprox_mu=0.0, losses=LossWeights(adversarial=adversarial))
    segment = copy.deepcopy(server.segments[CLIENT]).train()
    discriminators = copy.deepcopy(server.discriminators)
    x = split_features(tiny_federation)
    server.handle(forward(CLIENT, x))
    reply = server.handle(backward(CLIENT, torch.zeros_like(x)))
    returned = reply.tensors["gradient"]

    seen = x.clone().requires_grad_(True)
    domain = torch.full((x.shape[0],), CLIENTS.index(CLIENT))
    ce = (nn.functional.cross_entropy(discriminators["split1"](seen), domain)
          + nn.functional.cross_entropy(discriminators["split2"](segment(seen)), domain))
    (discriminator_gradient,) = torch.autograd.grad(ce, seen)
    assert float(discriminator_gradient.abs().max()) > 0
    torch.testing.assert_close(returned, -adversarial * discriminator_gradient, atol=1e-6, rtol=1e-4)
    cosine = nn.functional.cosine_similarity(returned.flatten(), discriminator_gradient.flatten(), dim=0)
    assert float(cosine) == pytest.approx(-1.0, abs=1e-4)  # the sign: the client is pushed to fool it


def test_the_discriminators_descend_their_own_loss(tiny_federation: Path) -> None:
    """Their parameters get the plain (not reversed) gradient of the domain loss."""
    server = build_server(tiny_federation, fedprox_mu=0.0)
    initial = build_server(tiny_federation, fedprox_mu=0.0)  # same seed: the state before the step
    before = initial.discriminators
    x = split_features(tiny_federation)
    captured = {}
    original = server.discriminator_optimizer.step

    def capture_then_step(*args, **kwargs):
        captured.update({n: p.grad.clone() for n, p in server.discriminators.named_parameters()})
        return original(*args, **kwargs)

    server.discriminator_optimizer.step = capture_then_step
    for client in CLIENTS:  # the update waits for every client's batch of the step
        server.handle(forward(client, x))
        server.handle(backward(client, torch.zeros_like(x)))
    expected = {n: torch.zeros_like(p) for n, p in before.named_parameters()}
    for client in CLIENTS:
        segment = initial.segments[client].train()  # the server's copy has stepped since
        domain = torch.full((x.shape[0],), CLIENTS.index(client))
        ce = (nn.functional.cross_entropy(before["split1"](x), domain)
              + nn.functional.cross_entropy(before["split2"](segment(x)), domain))
        for (name, p), g in zip(before.named_parameters(), torch.autograd.grad(ce, list(before.parameters()))):
            expected[name] += g
    for name, g in expected.items():
        torch.testing.assert_close(captured[name], g, atol=1e-6, rtol=1e-4)


def test_exactly_one_discriminator_update_per_federation_step(tiny_federation: Path, tmp_path: Path) -> None:
    steps = 3
    run = FederatedTrainer(tiny_federation, CLIENTS, quick_config(iterations=steps), tmp_path)
    optimizer = run.server.discriminator_optimizer
    calls = []
    original = optimizer.step

    def counting_step(*args, **kwargs):
        calls.append(len(run.server._backward_done.get(len(calls), ())))
        return original(*args, **kwargs)

    optimizer.step = counting_step
    for step in range(steps):
        for client in run.clients:
            client.train_step(0, step)
            # the update happens after the last client's gradient of the step, never before
            assert len(calls) == step + (client is run.clients[-1])
    assert calls == [len(CLIENTS)] * steps  # each update saw every client's batch
    run.clients[0].validate(0)  # validation trains nothing
    assert len(calls) == steps


# ---- FedProx ------------------------------------------------------------------------------------

def segment_gradients_of_one_step(server: SplitServer, x: torch.Tensor, gradient: torch.Tensor) -> dict:
    grads = {}
    optimizer = server.optimizers[CLIENT]
    original = optimizer.step

    def capture_then_step(*args, **kwargs):
        grads.update({n: p.grad.clone() for n, p in server.segments[CLIENT].named_parameters()})
        return original(*args, **kwargs)

    optimizer.step = capture_then_step
    server.handle(forward(CLIENT, x))
    server.handle(backward(CLIENT, gradient))
    return grads


def test_fedprox_adds_mu_times_the_distance_to_the_last_average(tiny_federation: Path) -> None:
    mu = 0.5
    no_clip = OptimizerConfig(grad_clip=1e9)
    plain = build_server(tiny_federation, method="splitfed", fedprox_mu=0.0, optimizer=no_clip)
    prox = build_server(tiny_federation, method="splitfed", fedprox_mu=mu, optimizer=no_clip)
    drift = {}
    with torch.no_grad():  # the client's copy has moved away from the last average
        for (name, p), q in zip(plain.segments[CLIENT].named_parameters(), prox.segments[CLIENT].parameters()):
            drift[name] = 0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(drift)))
            p.add_(drift[name])
            q.add_(drift[name])
    x = split_features(tiny_federation)
    gradient = 1e-3 * split_features(tiny_federation, seed=2)
    without = segment_gradients_of_one_step(plain, x, gradient)
    with_prox = segment_gradients_of_one_step(prox, x, gradient)
    assert without.keys() == with_prox.keys() == drift.keys()
    for name, delta in drift.items():
        torch.testing.assert_close(with_prox[name] - without[name], mu * delta, atol=1e-6, rtol=1e-4)
    moved = {n: p for n, p in prox.segments[CLIENT].named_parameters()}
    reference = prox.reference
    assert not all(torch.equal(moved[n], reference[n]) for n in drift)  # and the step was taken


# ---- dropout ------------------------------------------------------------------------------------

def report_round(server: SplitServer, client: str, num_samples: int = 4) -> None:
    server.handle(Message(client, Kind.REPORT, "round", 0, 0, scalars={"num_samples": num_samples}))


def test_a_dropped_client_is_left_out_of_the_average_and_then_rejoins(tiny_federation: Path) -> None:
    server = build_server(tiny_federation, method="splitfed")
    lost = CLIENTS[-1]
    with torch.no_grad():  # distinct segments, so the average says whose copies went into it
        for index, client in enumerate(CLIENTS):
            for p in server.segments[client].parameters():
                p.fill_(float(index))
    for client in CLIENTS[:-1]:
        report_round(server, client)
    assert server.rounds_aggregated == 0  # still waiting for the lost client
    assert server.drop(lost) is True
    assert server.rounds_aggregated == 1 and server.last_weights == pytest.approx({CLIENTS[0]: 0.5, CLIENTS[1]: 0.5})
    expected_value = (0.0 + 1.0) / 2
    for client in CLIENTS:  # the lost client's copy takes the survivors' average too
        assert all(torch.allclose(p, torch.full_like(p, expected_value)) for p in server.segments[client].parameters())
    assert server.expected == CLIENTS[:-1]
    server.handle(Message(lost, Kind.REPORT, "join", 1, 0, scalars={"num_samples": 4}))
    assert server.expected == CLIENTS and server.dropped == set()


def test_dropping_a_client_releases_the_discriminator_update_of_its_step(tiny_federation: Path) -> None:
    server = build_server(tiny_federation, method="mucald")
    calls = []
    original = server.discriminator_optimizer.step
    server.discriminator_optimizer.step = lambda *a, **k: (calls.append(1), original(*a, **k))
    server._backward_done[0] = set(CLIENTS[:-1])  # the survivors' gradients of step 0 are in
    server._step_discriminators_of_complete_steps()
    assert calls == []  # the step waits for every expected client
    server.drop(CLIENTS[-1])
    assert calls == [1] and server._backward_done == {}


def test_dropping_every_client_or_an_unknown_one_is_refused(tiny_federation: Path) -> None:
    server = build_server(tiny_federation, method="splitfed")
    with pytest.raises(TrainingError, match="cannot drop unknown client 'Dataset999_Nobody'"):
        server.drop("Dataset999_Nobody")
    for client in CLIENTS[:-1]:
        assert server.drop(client) is False  # nobody reported: nothing to aggregate
    with pytest.raises(TrainingError, match="every client dropped out"):
        server.drop(CLIENTS[-1])
