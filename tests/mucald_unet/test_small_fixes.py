"""Small correctness fixes (issue 11): offline commands, the appended manifest, NoPeek's clamp,
mirroring only what training mirrored, and a refused out-of-range evaluation timestep."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import pytest
import torch

from mucald_unet.commands.train import main as train_main
from mucald_unet.crdm.noise_schedule import NoiseSchedule
from mucald_unet.defences.distance_correlation import u_distance_correlation_sqr
from mucald_unet.defences.nopeek import nopeek_loss, tiles
from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import Direction, Kind, ManifestEntry, Message
from mucald_unet.federation.transport import append_manifest
from mucald_unet.training.run_log import RunLog
from mucald_unet.training.trainer import MANIFEST_FILE, FederatedTrainer, run_folder_for
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config
from planners.plans import DiffusionPlan


# ---- commands run offline ------------------------------------------------------------------------
def _offline_after_import(module: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if env_value is not None:
        env["HF_HUB_OFFLINE"] = env_value
    code = (f"import {module}, huggingface_hub.constants as c, diffusers.utils.hub_utils as h; "
            "print(c.HF_HUB_OFFLINE, h.HF_HUB_OFFLINE)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("module", ["mucald_unet.commands.train", "inference.commands.predict"])
def test_importing_a_command_turns_the_hub_offline_before_diffusers_reads_it(module: str) -> None:
    assert _offline_after_import(module, None) == "True True"


def test_a_users_own_hub_offline_value_wins() -> None:
    assert _offline_after_import("mucald_unet.commands.train", "0") == "False False"


# ---- the manifest is appended -------------------------------------------------------------------
def _entries(round_index: int, steps: int = 3) -> list[ManifestEntry]:
    return [ManifestEntry.of(Message("Dataset001_A", Kind.FEATURES, "split1", round_index, step,
                                     {"features": torch.zeros(2, 8, 4, 4)}), Direction.TO_SERVER)
            for step in range(steps)]


def _rounds(path: Path) -> list[int]:
    return [json.loads(line)["round"] for line in path.read_text().splitlines()]


def test_appending_a_round_leaves_the_earlier_rounds_bytes_in_place(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILE
    append_manifest(path, _entries(0))
    before, inode = path.read_bytes(), path.stat().st_ino
    append_manifest(path, _entries(1))
    assert path.stat().st_ino == inode  # the same file, appended to (a rewrite would replace it)
    assert path.read_bytes()[:len(before)] == before
    assert _rounds(path) == [0, 0, 0, 1, 1, 1]


def test_a_line_torn_by_a_crash_is_cut_off_before_the_next_round(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILE
    append_manifest(path, _entries(0))
    with open(path, "ab") as handle:
        handle.write(b'{"round": 1, "step": 0, "cli')  # the crash hit mid-line
    append_manifest(path, _entries(1, steps=1))
    assert _rounds(path) == [0, 0, 0, 1]


def test_a_resumed_run_keeps_only_the_manifest_of_its_checkpointed_rounds(tiny_federation: Path,
                                                                          tmp_path: Path) -> None:
    config = quick_config(method="splitfed", rounds=1, iterations=1)
    folder = run_folder_for(tmp_path, tiny_federation, config)
    FederatedTrainer(tiny_federation, CLIENTS, config, folder).run()
    path = folder / MANIFEST_FILE
    trained = path.read_bytes()
    assert set(_rounds(path)) == {0}
    append_manifest(path, _entries(1))  # a round that crashed before its checkpoint ...
    with open(path, "ab") as handle:
        handle.write(b'{"round": 1, "st')  # ... part-way through a line
    FederatedTrainer(tiny_federation, CLIENTS, config, folder).run(resume=True)
    assert path.read_bytes() == trained
    assert RunLog(path).records() == [json.loads(line) for line in trained.splitlines()]


# ---- NoPeek ----------------------------------------------------------------------------------------
def test_nopeek_is_not_rewarded_for_a_negative_distance_correlation_estimate() -> None:
    generator = torch.Generator().manual_seed(8)
    images = torch.randn(2, 1, 8, 8, generator=generator)
    features = torch.randn(2, 4, 8, 8, generator=generator, requires_grad=True)
    estimate = u_distance_correlation_sqr(tiles(images, [4, 4]), tiles(features.detach(), [4, 4]))
    assert float(estimate) < -0.1  # the bias-corrected estimator is negative for these inputs
    loss = nopeek_loss(images, features, tile_size=4)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert features.grad is not None and float(features.grad.abs().max()) == 0.0


# ---- the evaluation timestep ------------------------------------------------------------------------
@pytest.mark.parametrize("chosen", [0, 400, 100000])
def test_an_eval_timestep_outside_the_schedule_is_refused_not_clamped(chosen: int) -> None:
    with pytest.raises(TrainingError, match=r"--eval-timestep is .*valid range 1\.\.399.*T = 400"):
        NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=200), eval_timestep=chosen)
    assert NoiseSchedule(DiffusionPlan(num_train_timesteps=400), eval_timestep=399).eval_timestep == 399
    with pytest.raises(TrainingError, match="federation.diffusion.eval_timestep is 0"):
        NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=0))


def test_the_refusal_names_the_bound_the_noise_gain_cap_implies() -> None:
    capped = NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=200), max_noise_gain=3.0)
    with pytest.raises(TrainingError, match=f"max_noise_gain 3 allows at most {capped.max_train_timestep}"):
        NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=200), max_noise_gain=3.0,
                      eval_timestep=1000)


def test_mucald_train_refuses_an_out_of_range_eval_timestep_before_training(
        tiny_federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = train_main(["-d", "1", "2", "3", "--preprocessed", str(tiny_federation.parent.parent),
                       "--results", str(tmp_path), "--rounds", "1", "--iters", "1", "--device", "cpu",
                       "--eval-timestep", "100000"])
    err = capsys.readouterr().err.replace("\n", "")
    assert code == 1
    assert "--eval-timestep is 100000, outside the valid range 1.." in err and "Traceback" not in err
    assert not list(tmp_path.rglob("checkpoint_*.pt")) and not list(tmp_path.rglob("log.jsonl"))
