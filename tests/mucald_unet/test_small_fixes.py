"""Small correctness fixes (issue 11): offline commands, the appended manifest, NoPeek's clamp,
mirroring only what training mirrored, and a refused out-of-range evaluation timestep."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mucald_unet.defences.distance_correlation import u_distance_correlation_sqr
from mucald_unet.defences.nopeek import nopeek_loss, tiles


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
