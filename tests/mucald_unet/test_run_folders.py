"""Run folders that never overwrite each other, resume that is exact or refused, plans found exactly."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from mucald_unet.commands.train import main as train_main
from mucald_unet.config import (MAX_RUN_NAME, AuxiliarySchedule, CrdmConfig, LossWeights, Method, OptimizerConfig,
                                TrainingConfig)
from mucald_unet.errors import TrainingError
from mucald_unet.training.checkpoint import BEST, FINAL, load_checkpoint
from mucald_unet.training.trainer import CONFIG_FILE, LOG_FILE, FederatedTrainer, run_folder_for, run_is_finished
from planners.errors import PlanError
from planners.locate import find_client_plans, find_plans
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import CrashAfterRound, quick_config


def state_of(folder: Path) -> dict[str, torch.Tensor]:
    """Every client's and the server's weights in a run's final checkpoint, flattened."""
    checkpoint = load_checkpoint(folder / FINAL)
    flat = {}
    for client, state in checkpoint.clients.items():
        for module, weights in state["modules"].items():
            flat.update({f"{client}.{module}.{k}": v for k, v in weights.items()})
    for client, weights in checkpoint.server["segments"].items():
        flat.update({f"server.{client}.{k}": v for k, v in weights.items()})
    return flat


SHORT = "mucald__rounds-1__iters-1"  # the run name of args(): one round of one iteration


def args(federation: Path, results: Path, *extra: str) -> list[str]:
    return ["-d", "1", "2", "3", "--preprocessed", str(federation.parent.parent), "--results", str(results),
            "--rounds", "1", "--iters", "1", "--device", "cpu", *extra]


# ---- names ------------------------------------------------------------------------------------
def test_the_default_run_keeps_its_short_name_and_every_flag_shows_in_the_name() -> None:
    assert TrainingConfig().run_name == "mucald"
    assert TrainingConfig(method=Method.SPLITFED).run_name == "splitfed"
    named = TrainingConfig(seed=1, aggregation="causal", local_norms=True, fedprox_mu=0.01,
                           optimizer=OptimizerConfig(lr=3e-4), crdm=CrdmConfig(eval_timestep=100), rounds=40)
    assert named.run_name == "mucald__rounds-40__seed-1__agg-causal__mu-0.01__local-norms__lr-0.0003__eval-t-100"


def test_any_single_setting_changed_gives_another_folder() -> None:
    default = TrainingConfig()
    changed = [replace(default, rounds=11), replace(default, local_epochs=2), replace(default, iterations_per_epoch=5),
               replace(default, seed=3), replace(default, aggregation="samples"), replace(default, fedprox_mu=0.0),
               replace(default, local_norms=True), replace(default, losses=LossWeights(proxy=0.1)),
               replace(default, schedule=AuxiliarySchedule(warmup_fraction=0.0)),
               replace(default, optimizer=OptimizerConfig(grad_clip=1.0)),
               replace(default, crdm=CrdmConfig(denoiser_downsample=2))]
    names = [c.run_name for c in changed]
    assert len(set(names)) == len(names) and default.run_name not in names
    assert replace(default, device="cuda").run_name == "mucald"  # the device does not change what is learned
    assert {f.name for f in fields(TrainingConfig)} >= {"rounds", "seed", "aggregation"}


def test_names_too_long_end_in_a_digest_that_still_tells_runs_apart() -> None:
    long = TrainingConfig(seed=1, losses=LossWeights(proxy=0.2, diffusion=0.1, kl_u=1e-3, kl_z=0.3),
                          crdm=CrdmConfig(eval_timestep=100, scm_hidden=64), rounds=40)
    other = replace(long, crdm=CrdmConfig(eval_timestep=100, scm_hidden=32))
    assert len(long.run_name) <= MAX_RUN_NAME and long.run_name.startswith("mucald__rounds-40__seed-1")
    assert "__more-" in long.run_name and long.run_name != other.run_name


def test_a_subset_of_the_planned_clients_names_its_clients(tiny_federation: Path, tmp_path: Path) -> None:
    config = TrainingConfig(method=Method.LOCAL)
    assert run_folder_for(tmp_path, tiny_federation, config).parent.name == "local"
    assert run_folder_for(tmp_path, tiny_federation, config, [CLIENTS[1]]).parent.name == "local__clients-2"
    assert run_folder_for(tmp_path, tiny_federation, config, CLIENTS[::-1]).parent.name == "local"


# ---- never overwritten ------------------------------------------------------------------------
def test_runs_with_other_seeds_land_apart_and_a_second_fresh_start_is_refused(
        tiny_federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    federation = tmp_path / tiny_federation.parent.name
    assert train_main(args(tiny_federation, tmp_path)) == 0
    assert train_main(args(tiny_federation, tmp_path, "--seed", "1")) == 0
    assert (federation / SHORT / "fold_0" / FINAL).is_file()
    assert (federation / f"{SHORT}__seed-1" / "fold_0" / FINAL).is_file()
    recorded = json.loads((federation / f"{SHORT}__seed-1" / "fold_0" / CONFIG_FILE).read_text())
    assert recorded["run_name"] == f"{SHORT}__seed-1" and recorded["training"]["seed"] == 1
    before = (federation / SHORT / "fold_0" / FINAL).read_bytes()
    capsys.readouterr()

    assert train_main(args(tiny_federation, tmp_path)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{SHORT}/fold_0 already holds a run (1/1 rounds done)" in err
    assert "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert (federation / SHORT / "fold_0" / FINAL).read_bytes() == before  # untouched


def test_overwrite_discards_the_old_run_and_its_records(tiny_federation: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2), folder).run()
    (folder / "capture_round002.pt").write_bytes(b"old")
    with pytest.raises(TrainingError, match="already holds a run.*2/2 rounds"):
        FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=1), folder).run()
    with pytest.raises(TrainingError, match="contradict"):
        FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=1), folder).run(resume=True, overwrite=True)
    FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=1), folder).run(overwrite=True)
    rounds = {json.loads(line)["round"] for line in (folder / LOG_FILE).read_text().splitlines()}
    assert rounds == {0} and load_checkpoint(folder / FINAL).rounds_done == 1
    assert not (folder / "capture_round002.pt").exists() and (folder / BEST).is_file()


# ---- resume: exact or refused -----------------------------------------------------------------
def test_a_run_killed_after_a_round_resumes_to_the_uninterrupted_weights(tiny_federation: Path,
                                                                         tmp_path: Path) -> None:
    FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2), tmp_path / "straight").run()
    killed = FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2), tmp_path / "resumed",
                              reporter=CrashAfterRound(0))
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert load_checkpoint(tmp_path / "resumed" / FINAL).rounds_done == 1
    assert not run_is_finished(tmp_path / "resumed") and run_is_finished(tmp_path / "straight")
    FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2), tmp_path / "resumed").run(resume=True)
    straight, resumed = state_of(tmp_path / "straight"), state_of(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    assert run_is_finished(tmp_path / "resumed")


def test_resume_with_other_rounds_is_refused_with_the_reason(tiny_federation: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "run"
    FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=1), folder).run()
    with pytest.raises(TrainingError, match="run of 1 rounds; --rounds 3 would shift its auxiliary warm-up"):
        FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=3), folder).run(resume=True)
    assert load_checkpoint(folder / FINAL).rounds_done == 1
    # from the command line the rounds are part of the folder name: that folder has nothing to resume
    assert train_main(args(tiny_federation, tmp_path)) == 0
    assert train_main(args(tiny_federation, tmp_path, "--resume")) == 0  # finished: nothing to do
    capsys.readouterr()
    longer = args(tiny_federation, tmp_path, "--resume")
    longer[longer.index("--rounds") + 1] = "3"
    assert train_main(longer) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert (f"mucald__rounds-3__iters-1/fold_0: no checkpoint to resume (runs of this federation with a "
            f"checkpoint: {SHORT})") in err
    assert "cannot be lengthened" in err


# ---- plans found exactly ----------------------------------------------------------------------
def test_plans_are_found_exactly_or_the_federations_found_are_listed(tiny_federation: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    root = tiny_federation.parent.parent
    assert find_plans(root, ["3", "1", "2"]) == tiny_federation
    with pytest.raises(PlanError, match=r"no Federation_002 \(federations found: Federation_001_002_003 "
                                        r"\(datasets 1, 2, 3\)\).*--federation 1 2 3"):
        find_plans(root, ["2"])
    assert find_plans(root, ["2"], ["1", "2", "3"]) == tiny_federation
    with pytest.raises(PlanError, match="datasets 4 are not in this federation"):
        find_plans(root, ["4"], ["1", "2", "3"])
    assert find_client_plans(root, ["2"]) == tiny_federation  # the one plan holding the client

    copy = tmp_path / "pre"  # a second plan that also holds client 2 makes the client lookup ambiguous
    shutil.copytree(tiny_federation.parent, copy / "Federation_001_002_003")
    shutil.copytree(tiny_federation.parent, copy / "Federation_001_002_003_009")
    with pytest.raises(PlanError, match=r"datasets 2 are in several federations \(Federation_001_002_003, "
                                        r"Federation_001_002_003_009\).*--federation 1 2 3"):
        find_client_plans(copy, ["2"])

    assert train_main(["-d", "2", "--preprocessed", str(root), "--results", str(tmp_path / "r"),
                       "--rounds", "1", "--iters", "1", "--method", "local", "--federation", "1", "2", "3"]) == 0
    assert (tmp_path / "r" / tiny_federation.parent.name / "local__rounds-1__iters-1__clients-2" / "fold_0"
            / FINAL).is_file()
    assert train_main(["-d", "2", "--preprocessed", str(root), "--results", str(tmp_path / "r")]) == 1
    assert "--federation 1 2 3" in " ".join(capsys.readouterr().err.split())

