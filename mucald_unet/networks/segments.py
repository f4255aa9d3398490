"""FE, SS and BE built from the plan: the client's ends and the server's U-Net body.

FE and BE are MONAI's conv-InstanceNorm-LeakyReLU blocks (nnU-Net's building block); SS is
MONAI's DynUNet with the planner's kernels and strides, mapping C_split -> C_split channels.
"""

from __future__ import annotations

from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock
from monai.networks.nets import DynUNet
from torch import Tensor, nn

from mucald_unet.networks.mixture import MixtureSegment
from planners.plans import ClientPlan, FederationPlan

NORM = ("INSTANCE", {"affine": True})
ACTIVATION = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


class FrontEnd(nn.Module):
    """Client stem: image (B, in_channels, *patch) -> features (B, C_split, *patch), full resolution."""

    def __init__(self, spatial_dims: int, in_channels: int, hidden_channels: int, split_channels: int) -> None:
        super().__init__()
        self.stem = UnetBasicBlock(spatial_dims, in_channels, hidden_channels, 3, 1, NORM, ACTIVATION)
        self.to_split = UnetBasicBlock(spatial_dims, hidden_channels, split_channels, 3, 1, NORM, ACTIVATION)

    def forward(self, image: Tensor) -> Tensor:
        return self.to_split(self.stem(image))


class BackEnd(nn.Module):
    """Client head: features (B, C_split, *patch) -> class logits (B, num_classes, *patch)."""

    def __init__(self, spatial_dims: int, split_channels: int, hidden_channels: int, num_classes: int) -> None:
        super().__init__()
        self.block = UnetBasicBlock(spatial_dims, split_channels, hidden_channels, 3, 1, NORM, ACTIVATION)
        self.head = UnetOutBlock(spatial_dims, hidden_channels, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.block(features))


def build_front_end(federation: FederationPlan, client: ClientPlan) -> FrontEnd:
    return FrontEnd(federation.server_segment.spatial_dims, client.in_channels, client.fe_channels,
                    federation.split_channels)


def build_back_end(federation: FederationPlan, client: ClientPlan) -> BackEnd:
    return BackEnd(federation.server_segment.spatial_dims, federation.split_channels, client.be_channels,
                   client.num_classes)


def build_server_segment(federation: FederationPlan) -> DynUNet:
    """The shared U-Net body; InstanceNorm so averaging it across clients averages no statistics."""
    topology = federation.server_segment
    return DynUNet(
        spatial_dims=topology.spatial_dims,
        in_channels=federation.split_channels,
        out_channels=federation.split_channels,
        kernel_size=[list(k) for k in topology.kernel_sizes],
        strides=[list(s) for s in topology.strides],
        upsample_kernel_size=[list(s) for s in topology.strides[1:]],
        filters=list(topology.filters),
        norm_name=NORM,
        act_name=ACTIVATION,
    )


def build_middle(federation: FederationPlan, mixture_size: int = 1) -> nn.Module:
    """The server's segment of one client: the U-Net body, or (FedEM) a mixture of
    ``mixture_size`` bodies, each initialised from its own draw of the random state."""
    if mixture_size == 1:
        return build_server_segment(federation)
    return MixtureSegment([build_server_segment(federation) for _ in range(mixture_size)])
