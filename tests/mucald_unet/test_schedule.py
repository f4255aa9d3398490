"""The auxiliary-loss schedule runs over the whole run's progress, not per round (MUCALD.md)."""

from __future__ import annotations

import pytest

from mucald_unet.config import AuxiliarySchedule, TrainingConfig


def test_the_factor_is_zero_in_the_warm_up_linear_in_the_ramp_and_one_after() -> None:
    schedule = AuxiliarySchedule(warmup_fraction=0.1, ramp_fraction=0.2)
    assert schedule.factor(0.0) == 0.0
    assert schedule.factor(0.0999) == 0.0
    assert schedule.factor(0.1) == 0.0  # the warm-up's end starts the ramp at zero
    assert schedule.factor(0.15) == pytest.approx(0.25)
    assert schedule.factor(0.2) == pytest.approx(0.5)  # mid-ramp
    assert schedule.factor(0.3) == pytest.approx(1.0)  # the ramp's end
    assert schedule.factor(0.65) == 1.0 and schedule.factor(1.0) == 1.0
    assert AuxiliarySchedule(warmup_fraction=0.1, ramp_fraction=0.0).factor(0.1) == 1.0  # no ramp: a step
    assert AuxiliarySchedule(warmup_fraction=0.0, ramp_fraction=0.0).factor(0.0) == 1.0


def test_progress_counts_steps_across_rounds() -> None:
    config = TrainingConfig(rounds=4, local_epochs=2, iterations_per_epoch=5)
    assert config.iterations_per_round == 10
    assert config.progress(0, 0) == 0.0
    assert config.progress(0, 5) == pytest.approx(0.125)
    assert config.progress(1, 0) == pytest.approx(0.25)
    assert config.progress(1, 5) == pytest.approx(0.375)
    assert config.progress(3, 10) == pytest.approx(1.0)  # after the last step of the last round


@pytest.mark.parametrize("round_index, step, expected", [
    (0, 3, 0.0),  # progress 0.075: warm-up
    (0, 4, 0.0),  # 0.1: the warm-up's end
    (0, 8, 0.5),  # 0.2: mid-ramp
    (1, 0, 0.75),  # 0.25: the ramp goes on in the next round, it does not restart
    (1, 2, 1.0),  # 0.3: the ramp's end
    (3, 9, 1.0),  # 0.975: the last step
])
def test_the_factor_of_a_step_follows_global_progress(round_index: int, step: int, expected: float) -> None:
    config = TrainingConfig(rounds=4, local_epochs=2, iterations_per_epoch=5,
                            schedule=AuxiliarySchedule(warmup_fraction=0.1, ramp_fraction=0.2))
    assert config.schedule.factor(config.progress(round_index, step)) == pytest.approx(expected)
