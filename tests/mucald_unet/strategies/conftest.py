"""Hand-made server segments for the strategies' math: DynUNet's naming in miniature."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mucald_unet.config import TrainingConfig
from mucald_unet.federation.strategies import StrategyContext

CLIENTS = ("a", "b", "c")
WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}


class Stage(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm1(self.conv1(x)))


class ToySegment(nn.Module):
    """``input_block``, two decoder stages ``upsamples.0/1``, ``output_block``, and ``skip_layers``
    registering the last decoder stage a second time, as DynUNet does."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.input_block = Stage(channels)
        self.upsamples = nn.ModuleList([Stage(channels), Stage(channels)])
        self.output_block = nn.Conv2d(channels, channels, 1)
        self.skip_layers = nn.Module()
        self.skip_layers.upsample = self.upsamples[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_block(self.upsamples[1](self.upsamples[0](self.input_block(x))))


def toy_segment(seed: int) -> ToySegment:
    """Random weights, norms included (their defaults are all ones and zeros)."""
    torch.manual_seed(seed)
    segment = ToySegment()
    with torch.no_grad():
        for p in segment.parameters():
            p.copy_(torch.randn_like(p))
    return segment


def sgd(module: nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=lr)


def context(method: str = "splitfed", **settings) -> StrategyContext:
    return StrategyContext(TrainingConfig(method=method, **settings), CLIENTS, toy_segment(99), sgd)


def client_segments(seed: int = 0) -> dict[str, ToySegment]:
    return {c: toy_segment(seed + i) for i, c in enumerate(CLIENTS)}


def weighted_mean(segments: dict[str, nn.Module], key: str) -> torch.Tensor:
    """The explicit sum_i w_i theta_i, in double precision."""
    return sum(WEIGHTS[c] * m.state_dict()[key].double() for c, m in segments.items())


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach() for k, v in module.state_dict().items()})


def batch(seed: int = 5) -> torch.Tensor:
    return torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
