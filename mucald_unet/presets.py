"""Named sets of training settings (``mucald_train --preset paper``) applied over the defaults.

A preset replaces only the settings it names, and never one the user gave explicitly: with
``--preset paper --rounds 4`` the run has four rounds and the paper's optimiser.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from mucald_unet.config import DefenceConfig, TrainingConfig
from mucald_unet.errors import TrainingError

BUDGET_SETTINGS = frozenset({"rounds", "local_epochs", "iterations_per_epoch"})


@dataclass(frozen=True)
class TrainingPreset:
    """``settings`` are dotted keys of ``TrainingConfig.to_dict`` (``optimizer.lr``); ``defence`` is a
    ``--defence`` value (it may combine several); ``min_cut_depth`` the shallowest cut of a plan the
    preset was measured at (a shallower plan is refused by ``check_plan``)."""

    name: str
    summary: str
    settings: Mapping[str, Any]
    defence: str | None = None
    min_cut_depth: int = 0

    def apply(self, config: TrainingConfig, keep: Collection[str] = ()) -> TrainingConfig:
        """``config`` with this preset's settings, except those named in ``keep`` (given explicitly).

        The rates follow what they derive from: an explicit ``optimizer.kind`` keeps the preset's rate
        off, so ``--optimizer sgd`` never runs at the paper's AdamW rate, and an explicit rate keeps
        the preset's encoder rate off, so the encoders run at half of it (the paper's ratio).
        """
        kept = set(keep)
        if "optimizer.kind" in kept:
            kept.add("optimizer.lr")
        if "optimizer.lr" in kept:
            kept.add("optimizer.aux_lr")
        config = config.with_overrides({k: v for k, v in self.settings.items() if k not in kept})
        if self.defence is not None and "defence" not in kept:
            config = replace(config, defence=DefenceConfig.parse(self.defence))
        return config

    def check_plan(self, cut_depth: int, plans_path: object) -> None:
        """Refuse a plan whose cut is shallower than the one this preset was measured at."""
        if cut_depth < self.min_cut_depth:
            raise TrainingError(f"--preset {self.name} was measured at cut depth {self.min_cut_depth} or deeper; "
                                f"{plans_path} cuts at depth {cut_depth}. Fix: plan again with "
                                f"mucald_plan_and_preprocess ... --cut-depth {self.min_cut_depth} (into its own "
                                "--preprocessed folder), or choose another preset.")

    def without_budget(self) -> "TrainingPreset":
        """The preset less its rounds and epochs: for comparisons that fix the budget themselves."""
        return replace(self, settings=MappingProxyType(
            {k: v for k, v in self.settings.items() if k not in BUDGET_SETTINGS}))


PAPER = TrainingPreset(
    name="paper",
    summary="the paper's training settings (MUCALD.md): AdamW at 1e-4 (encoders and SCMs 5e-5), constant rate, "
            "24 rounds x 5 local epochs, FedProx mu 1e-3, equal aggregation weights",
    settings=MappingProxyType({
        "optimizer.kind": "adamw", "optimizer.lr": 1e-4, "optimizer.aux_lr": 5e-5,
        "optimizer.schedule": "constant", "rounds": 24, "local_epochs": 5, "fedprox_mu": 1e-3,
        "aggregation": "equal"}))

PRIVATE = TrainingPreset(
    name="private",
    summary="the privacy frontier's best point (docs/privacy.md): a plan cut at depth 1 or deeper, and at split 1 "
            "a learned 8-channel bottleneck whose output crosses quantised to 4 levels (bottleneck:8+quantise:2)",
    settings=MappingProxyType({}), defence="bottleneck:8+quantise:2", min_cut_depth=1)

PRESETS: Mapping[str, TrainingPreset] = MappingProxyType({PAPER.name: PAPER, PRIVATE.name: PRIVATE})


def preset_named(name: str) -> TrainingPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise TrainingError(f"unknown preset {name!r}. Fix: use one of {', '.join(PRESETS)}.") from None
