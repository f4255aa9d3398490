"""Named sets of training settings (``mucald_train --preset paper``) applied over the defaults.

A preset replaces only the settings it names, and never one the user gave explicitly: with
``--preset paper --rounds 4`` the run has four rounds and the paper's optimiser.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mucald_unet.config import TrainingConfig
from mucald_unet.errors import TrainingError

BUDGET_SETTINGS = frozenset({"rounds", "local_epochs", "iterations_per_epoch"})


@dataclass(frozen=True)
class TrainingPreset:
    """``settings`` are dotted keys of ``TrainingConfig.to_dict`` (``optimizer.lr``)."""

    name: str
    summary: str
    settings: Mapping[str, Any]

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
        return config.with_overrides({k: v for k, v in self.settings.items() if k not in kept})

    def without_budget(self) -> "TrainingPreset":
        """The preset less its rounds and epochs: for comparisons that fix the budget themselves."""
        return TrainingPreset(self.name, self.summary, MappingProxyType(
            {k: v for k, v in self.settings.items() if k not in BUDGET_SETTINGS}))


PAPER = TrainingPreset(
    name="paper",
    summary="the paper's training settings (MUCALD.md): AdamW at 1e-4 (encoders and SCMs 5e-5), constant rate, "
            "24 rounds x 5 local epochs, FedProx mu 1e-3, equal aggregation weights",
    settings=MappingProxyType({
        "optimizer.kind": "adamw", "optimizer.lr": 1e-4, "optimizer.aux_lr": 5e-5,
        "optimizer.schedule": "constant", "rounds": 24, "local_epochs": 5, "fedprox_mu": 1e-3,
        "aggregation": "equal"}))

PRESETS: Mapping[str, TrainingPreset] = MappingProxyType({PAPER.name: PAPER})


def preset_named(name: str) -> TrainingPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise TrainingError(f"unknown preset {name!r}. Fix: use one of {', '.join(PRESETS)}.") from None
