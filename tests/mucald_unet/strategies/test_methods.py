"""Every registered method trains a round on the tiny demo through the same split network; its
checkpoint loads; afterwards exactly the shared server-segment tensors are equal across clients;
and a resumed run keeps the strategy's state (SCAFFOLD's variates, Ditto's global track, MOCHA's
Omega, FedEM's mixture weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.model import load_client_model
from mucald_unet.config import StrategyOptions
from mucald_unet.federation.strategies import method_names
from mucald_unet.training.checkpoint import FINAL, load_checkpoint, save_checkpoint
from mucald_unet.training.trainer import FederatedTrainer
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import CrashAfterRound, quick_config


def shared_by_definition(method: str, name: str, decoder_stages: int) -> bool:
    """docs/federation_methods.md, restated: is the server-segment parameter ``name`` shared?"""
    if method in ("local", "ditto", "mocha"):  # ditto: the deployed segment is personal, its global track is shared
        return False
    if method == "fedbn":
        return ".norm" not in name
    if method == "fedper":
        return not name.startswith((f"upsamples.{decoder_stages - 1}.", "output_block."))
    return True


@pytest.mark.parametrize("method", method_names())
def test_each_method_trains_a_round_and_shares_exactly_its_shared_tensors(tiny_federation: Path, tmp_path: Path,
                                                                         method: str) -> None:
    run = FederatedTrainer(tiny_federation, CLIENTS, quick_config(method, iterations=2), tmp_path)
    summary = run.run()
    assert summary.rounds_done == 1 and all(np.isfinite(list(summary.final_dice.values())))
    segments = [dict(run.server.segments[c].named_parameters()) for c in CLIENTS]
    decoder_stages = len(getattr(run.server.global_segment, "upsamples", ()))  # a FedEM mixture has none of its own
    equal = {n for n in segments[0] if all(torch.equal(segments[0][n], s[n]) for s in segments[1:])}
    expected = {n for n in segments[0] if shared_by_definition(method, n, decoder_stages)}
    assert equal == expected
    checkpoint = load_checkpoint(tmp_path / FINAL)
    for client in CLIENTS:
        model = load_client_model(tiny_federation, client, tmp_path / FINAL)
        deployed = model.server_segment.state_dict()
        assert all(torch.equal(v, deployed[k]) for k, v in run.server.segments[client].state_dict().items())
    if method == "ditto":  # the global track is what Ditto averages
        tracks = list(checkpoint.server["strategy"]["tracks"].values())
        assert all(torch.equal(tracks[0][k], t[k]) for t in tracks[1:] for k in tracks[0])
    if method == "scaffold":
        variates = checkpoint.server["strategy"]["c_client"]
        assert set(variates) == set(CLIENTS) and all(float(v.abs().max()) > 0 for v in variates[CLIENTS[0]].values())


def server_and_strategy_state(folder: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(folder / FINAL)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
    walk("server", checkpoint.server)
    walk("clients", {c: s["modules"] for c, s in checkpoint.clients.items()})
    return flat


@pytest.mark.parametrize("method", ["scaffold", "ditto", "mocha", "fedem"])
def test_a_resumed_run_keeps_the_strategy_state_and_equals_an_uninterrupted_one(tiny_federation: Path,
                                                                                tmp_path: Path, method: str) -> None:
    # two clients (and FedEM two components) already share, average and couple everything a strategy keeps
    options = StrategyOptions(fedem_components=2) if method == "fedem" else StrategyOptions()
    config = quick_config(method, rounds=2, iterations=2, strategy=options)
    clients = CLIENTS[:2]
    FederatedTrainer(tiny_federation, clients, config, tmp_path / "straight").run()
    killed = FederatedTrainer(tiny_federation, clients, config, tmp_path / "resumed", reporter=CrashAfterRound(0))
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    FederatedTrainer(tiny_federation, clients, config, tmp_path / "resumed").run(resume=True)
    straight = server_and_strategy_state(tmp_path / "straight")
    resumed = server_and_strategy_state(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    kept = ".mixture.log_weights" if method == "fedem" else "server.strategy."  # FedEM's pi is the client's
    assert any(kept in k for k in straight)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_a_checkpoint_from_before_the_strategy_options_still_resumes(tiny_federation: Path, tmp_path: Path) -> None:
    FederatedTrainer(tiny_federation, CLIENTS, quick_config("splitfed", rounds=1), tmp_path).run()
    checkpoint = load_checkpoint(tmp_path / FINAL)
    checkpoint.config.pop("strategy")
    checkpoint.server.pop("strategy")
    save_checkpoint(tmp_path / FINAL, checkpoint)
    summary = FederatedTrainer(tiny_federation, CLIENTS, quick_config("splitfed", rounds=1), tmp_path).run(resume=True)
    assert summary.rounds_done == 1


def test_fedprox_and_splitfed_train_the_same_weights_at_the_same_mu(tiny_federation: Path, tmp_path: Path) -> None:
    """docs/federation_methods.md: splitfed's recipe carries the same proximal term."""
    for method in ("fedprox", "splitfed"):
        FederatedTrainer(tiny_federation, CLIENTS, quick_config(method, iterations=2, fedprox_mu=0.05),
                         tmp_path / method).run()
    fedprox = server_and_strategy_state(tmp_path / "fedprox")
    splitfed = server_and_strategy_state(tmp_path / "splitfed")
    assert fedprox.keys() == splitfed.keys()
    assert all(torch.equal(value, splitfed[key]) for key, value in fedprox.items())
