"""Presets: named settings over the defaults that never override what the user typed."""

from __future__ import annotations

import pytest

from mucald_unet.config import DefenceConfig, TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.presets import PAPER, PRIVATE, preset_named


def test_paper_preset_is_the_papers_recipe() -> None:
    config = PAPER.apply(TrainingConfig())
    assert (config.rounds, config.local_epochs, config.fedprox_mu, config.aggregation) == (24, 5, 1e-3, "equal")
    assert (config.optimizer.kind.value, config.optimizer.lr, config.optimizer.encoder_lr) == ("adamw", 1e-4, 5e-5)


def test_explicit_settings_and_what_derives_from_them_are_kept() -> None:
    typed = TrainingConfig(rounds=3).with_overrides({"optimizer.kind": "sgd", "optimizer.lr": 1e-2})
    config = PAPER.apply(typed, keep={"rounds", "optimizer.kind"})
    assert config.rounds == 3 and config.local_epochs == 5
    # sgd typed: neither the paper's AdamW rate nor its encoder rate is forced on it
    assert (config.optimizer.kind.value, config.optimizer.lr, config.optimizer.encoder_lr) == ("sgd", 1e-2, 5e-3)
    own_rate = PAPER.apply(TrainingConfig().with_overrides({"optimizer.lr": 3e-4}), keep={"optimizer.lr"})
    assert own_rate.optimizer.encoder_lr == pytest.approx(1.5e-4)  # half the typed rate, the paper's ratio


def test_without_budget_leaves_rounds_and_epochs_to_the_caller() -> None:
    config = PAPER.without_budget().apply(TrainingConfig(rounds=10))
    assert (config.rounds, config.local_epochs, config.optimizer.lr) == (10, 1, 1e-4)


def test_unknown_preset_and_unknown_override_are_refused() -> None:
    with pytest.raises(TrainingError, match="unknown preset 'papers'.*paper"):
        preset_named("papers")
    with pytest.raises(TrainingError, match="unknown training setting 'optimiser.lr'"):
        TrainingConfig().with_overrides({"optimiser.lr": 1e-4})


def test_private_preset_sets_the_frontiers_defence_and_needs_a_cut_of_depth_one() -> None:
    config = PRIVATE.apply(TrainingConfig())
    assert config.defence == DefenceConfig.parse("bottleneck:8+quantise:2")
    assert config.run_name == "mucald__bottleneck-8+quantise-2"
    typed = TrainingConfig(defence=DefenceConfig.parse("quantise:1"))
    assert PRIVATE.apply(typed, keep={"defence"}).defence == typed.defence  # a typed --defence wins
    assert PRIVATE.without_budget().defence == PRIVATE.defence
    PRIVATE.check_plan(1, "plans.json")
    PRIVATE.check_plan(2, "plans.json")
    with pytest.raises(TrainingError, match=r"measured at cut depth 1 or deeper; plans.json cuts at depth 0. Fix: "
                                            r"plan again with mucald_plan_and_preprocess ... --cut-depth 1"):
        PRIVATE.check_plan(0, "plans.json")
    PAPER.check_plan(0, "plans.json")  # the paper's preset has no cut requirement
