"""Domain discriminator at a split point: which client sent these features?

It lives at the server, which sees every client's transmissions anyway, so it learns from all
domains (the published code gave each client its own discriminator that only ever saw one label).
One strided conv keeps it cheap; global pooling lets clients with different patch sizes share it.
"""

from __future__ import annotations

from torch import Tensor, nn

from mucald_unet.networks.layers import conv, global_average_pool


class DomainDiscriminator(nn.Module):
    def __init__(self, spatial_dims: int, channels: int, num_domains: int, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(conv(spatial_dims, channels, hidden, stride=2), nn.ReLU())
        self.classify = nn.Linear(hidden, num_domains)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(global_average_pool(self.features(x)))
