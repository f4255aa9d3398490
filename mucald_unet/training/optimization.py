"""Optimisers and learning-rate schedules of every trained part, built from ``OptimizerConfig``.

Clients (FE, CRDMs, BE) and the server (its segments) build their optimisers here, so one
setting switches every part of every method between nnU-Net's SGD and AdamW. The schedule is a
pure function of the run's global progress (0..1), set before each step: nothing about it is
stored, so a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from mucald_unet.config import LrSchedule, OptimizerConfig, OptimizerKind

INITIAL_LR = "initial_lr"  # each group's rate before the schedule scales it


def build_optimizer(groups: Sequence[dict[str, Any]], config: OptimizerConfig) -> torch.optim.Optimizer:
    """One optimiser over ``groups`` (each ``{"params", "lr", "name"}``); the schedule scales each
    group's ``lr`` from the ``initial_lr`` recorded here."""
    groups = [{**group, INITIAL_LR: group["lr"]} for group in groups if list(group["params"])]
    if config.kind is OptimizerKind.SGD:
        return torch.optim.SGD(groups, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, fused=True)


def module_optimizer(modules: Iterable[nn.Module], config: OptimizerConfig, lr: float | None = None,
                     name: str = "networks") -> torch.optim.Optimizer:
    """The optimiser of whole modules at one rate (the server's segments)."""
    params = [p for module in modules for p in module.parameters()]
    return build_optimizer([{"params": params, "lr": config.lr if lr is None else lr, "name": name}], config)


def schedule_factor(config: OptimizerConfig, progress: float) -> float:
    """Multiplier of every group's rate at ``progress`` (0..1 of the run): 1, or nnU-Net's poly decay."""
    if config.schedule is LrSchedule.CONSTANT:
        return 1.0
    return (1.0 - min(max(progress, 0.0), 1.0)) ** config.poly_exponent


def apply_schedule(optimizer: torch.optim.Optimizer, config: OptimizerConfig, progress: float) -> None:
    """Set each group's rate for the step taken at ``progress``."""
    factor = schedule_factor(config, progress)
    for group in optimizer.param_groups:
        group["lr"] = group[INITIAL_LR] * factor
