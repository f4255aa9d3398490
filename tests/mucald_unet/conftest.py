"""Training-test helpers; the tiny planned federation itself lives in tests/conftest.py."""

from __future__ import annotations

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


class CrashAfterRound(SilentTrainingReporter):
    """Raises once round ``round_index`` is checkpointed: a process killed between rounds."""

    def __init__(self, round_index: int) -> None:
        self.round_index = round_index

    def round_done(self, round_index: int, records: list[dict]) -> None:
        if round_index == self.round_index:
            raise KeyboardInterrupt("killed")
