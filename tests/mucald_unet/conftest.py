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


class CrashAfterRound(SilentTrainingReporter):
    """Raises once round ``round_index`` is checkpointed: a process killed between rounds."""

    def __init__(self, round_index: int) -> None:
        self.round_index = round_index

    def round_done(self, round_index: int, records: list[dict]) -> None:
        if round_index == self.round_index:
            raise KeyboardInterrupt("killed")
