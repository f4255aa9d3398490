"""FedRep: the whole server segment is the shared body; each round trains the personal ends first
(the server does not step), then the body (the client does not step)."""

from __future__ import annotations

from pathlib import Path

import torch

from mucald_unet.config import StrategyOptions
from mucald_unet.federation.strategies import method_spec
from mucald_unet.federation.strategies.fedrep import FedRep
from mucald_unet.federation.strategies.schedule import Phase, split_steps
from mucald_unet.training.trainer import FederatedTrainer
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config
from tests.mucald_unet.strategies.conftest import context


def test_every_server_key_is_shared() -> None:
    strategy = FedRep(context("fedrep"))
    assert strategy.shared_keys() == set(strategy.canonical)


def test_the_schedule_trains_the_ends_then_the_body() -> None:
    schedule = method_spec("fedrep").schedule(quick_config("fedrep", iterations=4))
    assert [schedule.phase(s) for s in range(4)] == [Phase(True, False)] * 2 + [Phase(False, True)] * 2
    assert [split_steps(n, 0.5) for n in (1, 2, 3, 10)] == [1, 1, 2, 5]
    assert [split_steps(10, f) for f in (0.01, 0.9, 0.99)] == [1, 9, 9]  # both phases keep a step
    late = method_spec("fedrep").schedule(quick_config("fedrep", iterations=10,
                                                       strategy=StrategyOptions(fedrep_head_fraction=0.9)))
    assert [late.phase(s).server for s in range(10)] == [False] * 9 + [True]


def adam_steps(optimizer: torch.optim.Optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


def test_in_a_round_of_four_steps_each_side_steps_twice(tiny_federation: Path, tmp_path: Path) -> None:
    run = FederatedTrainer(tiny_federation, CLIENTS, quick_config("fedrep", iterations=4), tmp_path)
    ends = {c.name: {k: v.clone() for k, v in c.back_end.state_dict().items()} for c in run.clients}
    for step in range(2):  # the ends train; the body stands still
        for client in run.clients:
            client.train_step(0, step)
    body = {c: {k: v.clone() for k, v in s.state_dict().items()} for c, s in run.server.segments.items()}
    assert all(not run.server.optimizers[c].state for c in CLIENTS)
    assert all(adam_steps(c.optimizer) == {2} for c in run.clients)
    assert all(any(not torch.equal(v, ends[c.name][k]) for k, v in c.back_end.state_dict().items())
               for c in run.clients)
    ends = {c.name: {k: v.clone() for k, v in c.back_end.state_dict().items()} for c in run.clients}
    for step in range(2, 4):  # the body trains; the ends stand still
        for client in run.clients:
            client.train_step(0, step)
    assert all(adam_steps(run.server.optimizers[c]) == {2} for c in CLIENTS)
    assert all(adam_steps(c.optimizer) == {2} for c in run.clients)
    for client in run.clients:
        assert all(torch.equal(v, ends[client.name][k]) for k, v in client.back_end.state_dict().items())
        segment = run.server.segments[client.name].state_dict()
        assert any(not torch.equal(v, body[client.name][k]) for k, v in segment.items())
