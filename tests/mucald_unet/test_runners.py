"""The roles as runners: a client alone in its process trains exactly as the simulator trains it,
what a client learns of the others comes from the server's roster, and the server refuses what
comes too early (a roster before every client joined, averages before every client reported)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mucald_unet.errors import ServerRefusal
from mucald_unet.federation.transport import InMemoryTransport
from mucald_unet.training.augmentation import seed_augmentation
from mucald_unet.training.runners import ClientRunner, ServerRunner, load_client_data
from mucald_unet.training.trainer import FederatedTrainer
from planners.plans import load_plans
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


def build_runners(plans_path: Path, names: list[str], config, wire: bool = False):
    """Server and clients as separate roles, built in the simulator's order (same seeds, same weights)."""
    plans = load_plans(plans_path)
    torch.manual_seed(config.seed)
    seed_augmentation(config.seed)
    data = {name: load_client_data(plans_path, plans, name, config) for name in names}
    server = ServerRunner(plans.federation, names, config)
    transport = InMemoryTransport(server, wire=wire)
    return server, [ClientRunner(name, plans, config, data[name], transport) for name in names]


def state_tensors(clients: list, server) -> dict[str, torch.Tensor]:
    tensors = {f"server.{k}": v for k, v in server.global_segment.state_dict().items()}
    for c, segment in server.segments.items():
        tensors.update({f"server.{c}.{k}": v for k, v in segment.state_dict().items()})
    for client in clients:
        for part, module in client.trainable_modules().items():
            tensors.update({f"{client.name}.{part}.{k}": v for k, v in module.state_dict().items()})
    return tensors


def test_a_client_alone_in_its_process_trains_as_the_simulator_does(tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="splitfed", rounds=2, iterations=3)
    simulated = FederatedTrainer(tiny_federation, CLIENTS[:1], config, tmp_path / "sim")
    summary = simulated.run()

    server, (client,) = build_runners(tiny_federation, CLIENTS[:1], config, wire=True)  # through the bytes
    client.join()
    client.fetch_roster()
    rounds = [client.run_round(r) for r in range(config.rounds)]

    assert rounds[-1].validation.mean_dice == pytest.approx(summary.final_dice[CLIENTS[0]], abs=1e-6)
    assert set(rounds[-1].terms) >= {"seg"} and client.last_val_loss == rounds[-1].validation.loss
    expected = state_tensors(simulated.clients, simulated.server)
    got = state_tensors([client.client], server.server)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, different[:5]


def test_the_segmentation_weight_comes_from_the_servers_roster(tiny_federation: Path) -> None:
    server, clients = build_runners(tiny_federation, CLIENTS, quick_config(method="splitfed"))
    for runner in clients:
        runner.join()
    for runner in clients:
        runner.fetch_roster()
    sizes = {runner.name: len(runner.client.data.train) for runner in clients}
    assert len(set(sizes.values())) > 1  # the tiny clients differ, so the weights must too
    for runner in clients:
        assert runner.client.seg_weight == pytest.approx(max(sizes.values()) / sizes[runner.name])
    assert server.server.num_samples == sizes  # all the server holds of them: counts


def test_the_roster_is_refused_until_every_client_joined(tiny_federation: Path) -> None:
    _, clients = build_runners(tiny_federation, CLIENTS, quick_config(method="splitfed"))
    clients[0].join()
    with pytest.raises(ServerRefusal, match=f"waiting for {CLIENTS[1]}, {CLIENTS[2]} to join"):
        clients[0].fetch_roster()
    assert clients[0].client.seg_weight == 1.0


def test_averages_are_refused_until_every_client_reported_the_round(tiny_federation: Path) -> None:
    server, clients = build_runners(tiny_federation, CLIENTS, quick_config(method="mucald", iterations=1))
    for runner in clients:
        runner.join()
    for runner in clients:
        runner.fetch_roster()
    for runner in clients:
        runner.step(0, 0)
    clients[0].report_round(0)
    with pytest.raises(ServerRefusal, match=f"round 0 is not aggregated yet: waiting for the round report of "
                                            f"{CLIENTS[1]}, {CLIENTS[2]}"):
        clients[0].finish_round(0)
    for runner in clients[1:]:
        runner.report_round(0)
    assert server.server.rounds_aggregated == 1
    validation = clients[0].finish_round(0)
    assert 0.0 <= validation.mean_dice <= 1.0 and clients[0].last_val_loss == validation.loss
