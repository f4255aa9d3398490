"""A channel bottleneck at the cut: a learned 1x1 projection leaves only a few channels to cross.

Where the cut depth narrows what crosses in space, this narrows it in width: the client keeps its
full-width features and sends a linear code of them, and the server's first layer reads that code.
What the projection drops never leaves the client, whatever the attacker does afterwards.
"""

from __future__ import annotations

from torch import Tensor, nn


class ChannelBottleneck(nn.Module):
    """(B, in_channels, *spatial) -> (B, out_channels, *spatial), out_channels < in_channels."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if not 1 <= out_channels < in_channels:
            raise ValueError(f"a bottleneck of {out_channels} channels does not narrow {in_channels}")
        self.project = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2](in_channels, out_channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.project(features)
