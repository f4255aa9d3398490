"""Training-test helpers; the tiny planned federation itself lives in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import torch

from mucald_unet.config import AuxiliarySchedule, Method, TrainingConfig, parse_ablations
from mucald_unet.training.augmentation import AugmentationConfig
from mucald_unet.training.trainer import SilentTrainingReporter


def quick_config(method: str = "mucald", ablations: str = "", rounds: int = 1, iterations: int = 2,
                 seed: int = 0, **changes) -> TrainingConfig:
    """A short run in which the auxiliary terms are on from the first step (no warm-up)."""
    return TrainingConfig(method=Method(method), ablations=parse_ablations(ablations), rounds=rounds,
                          iterations_per_epoch=iterations, seed=seed,
                          schedule=AuxiliarySchedule(warmup_fraction=0.0, ramp_fraction=0.0),
                          augmentation=changes.pop("augmentation", AugmentationConfig()), **changes)


def assert_every_client_predicts(plans_path: Path, checkpoint: Path) -> None:
    """Each planned client's model loads from ``checkpoint`` and gives finite logits of its classes
    for a patch of its shape."""
    from inference.model import load_client_model
    from planners.plans import load_plans

    for name, plan in load_plans(plans_path).clients.items():
        model = load_client_model(plans_path, name, checkpoint)
        with torch.no_grad():
            logits = model(torch.randn(1, plan.in_channels, *plan.patch_size))
        assert logits.shape == (1, plan.num_classes, *plan.patch_size) and torch.isfinite(logits).all()


def record_step_gradients(run) -> tuple[dict, dict]:
    """Make the first client's and its server segment's optimiser steps record the clipped
    gradients (parameter name -> gradient) instead of stepping: what one split step computed."""
    client = run.clients[0]
    recorded: tuple[dict, dict] = ({}, {})

    def recorder(module: torch.nn.Module, into: dict):
        return lambda *args, **kwargs: into.update({k: p.grad.clone() for k, p in module.named_parameters()
                                                    if p.grad is not None})
    client.optimizer.step = recorder(client.network, recorded[0])
    run.server.optimizers[client.name].step = recorder(run.server.segments[client.name], recorded[1])
    return recorded


def assert_whole_network_gradients(loss: torch.Tensor, client, modules: tuple, recorded: tuple[dict, dict],
                                   rtol: float, atol: float) -> None:
    """Back-propagate ``loss`` through the whole (unsplit) client network and server segment in
    ``modules``, clip each as the split step does, and compare with the split step's gradients."""
    loss.backward()
    for module in modules:
        torch.nn.utils.clip_grad_norm_(module.parameters(), client.config.optimizer.grad_clip)
    for got, module in zip(recorded, modules):
        expected = {k: p.grad for k, p in module.named_parameters() if p.grad is not None}
        assert set(got) == set(expected)
        for key, gradient in got.items():
            assert gradient.dtype == torch.float32
            torch.testing.assert_close(gradient, expected[key], rtol=rtol, atol=atol, msg=key)


class CrashAfterRound(SilentTrainingReporter):
    """Raises once round ``round_index`` is checkpointed: a process killed between rounds."""

    def __init__(self, round_index: int) -> None:
        self.round_index = round_index

    def round_done(self, round_index: int, records: list[dict]) -> None:
        if round_index == self.round_index:
            raise KeyboardInterrupt("killed")
