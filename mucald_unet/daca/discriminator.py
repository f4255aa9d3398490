"""Domain discriminator at a split point: which client sent these features?

It lives at the server, which sees every client's transmissions anyway, so it learns from all
domains (the published code gave each client its own discriminator that only ever saw one label).
A 4x average pool before its conv keeps it cheap (a full-resolution conv here cost a quarter of
a SplitFed step); global pooling lets clients with different patch sizes share it.
"""

from __future__ import annotations

from torch import Tensor, nn

from mucald_unet.networks.layers import average_pool, conv, global_average_pool


class DomainDiscriminator(nn.Module):
    def __init__(self, spatial_dims: int, channels: int, num_domains: int, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(average_pool(spatial_dims, 4), conv(spatial_dims, channels, hidden), nn.ReLU())
        self.classify = nn.Linear(hidden, num_domains)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(global_average_pool(self.features(x)))
