"""FE, SS and BE built from the plan: the client's ends and the server's U-Net body.

FE and BE are MONAI's conv-InstanceNorm-LeakyReLU blocks (nnU-Net's building block); SS is
MONAI's DynUNet with the planner's kernels and strides. At cut depth K the client also runs the
body's first K stages: FE pools through their encoder blocks (as DynUNet's own down blocks) and
BE climbs back through their decoder blocks on FE's skips, so the server sees coarser features.
With deep supervision the body also returns its decoder's coarser maps (DynUNet's supervision
heads, at their own resolution), which the client's coarse heads turn into logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from monai.networks.nets import DynUNet
from torch import Tensor, nn

from mucald_unet.config import DefenceConfig, TrainingConfig
from mucald_unet.networks.mixture import MixtureSegment
from planners.plans import ClientPlan, FederationPlan

NORM = ("INSTANCE", {"affine": True})
ACTIVATION = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


@dataclass(frozen=True)
class ClientStage:
    """One body stage above the cut: its kernel, its pooling stride, and its widths."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    in_channels: int  # of the stage above (its skip connection's width)
    out_channels: int


def client_stages(federation: FederationPlan) -> list[ClientStage]:
    """The first ``cut_depth`` pooling stages of the planned body, the first fed by the split width."""
    body, depth = federation.server_segment, federation.cut_depth
    widths = [federation.split_channels, *body.filters[1:depth + 1]]
    return [ClientStage(tuple(body.kernel_sizes[k]), tuple(body.strides[k]), widths[k - 1], widths[k])
            for k in range(1, depth + 1)]


class FrontEnd(nn.Module):
    """Client stem and the stages above the cut: image (B, in_channels, *patch) -> what crosses."""

    def __init__(self, spatial_dims: int, in_channels: int, hidden_channels: int, split_channels: int,
                 stages: Sequence[ClientStage] = ()) -> None:
        super().__init__()
        self.stem = UnetBasicBlock(spatial_dims, in_channels, hidden_channels, 3, 1, NORM, ACTIVATION)
        self.to_split = UnetBasicBlock(spatial_dims, hidden_channels, split_channels, 3, 1, NORM, ACTIVATION)
        self.down = nn.ModuleList(UnetBasicBlock(spatial_dims, stage.in_channels, stage.out_channels, stage.kernel,
                                                 stage.stride, NORM, ACTIVATION) for stage in stages)

    def encode(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """What crosses, and the skips BE needs (full resolution first; none at cut depth 0)."""
        features = self.to_split(self.stem(image))
        skips = []
        for block in self.down:
            skips.append(features)
            features = block(features)
        return features, skips

    def forward(self, image: Tensor) -> Tensor:
        return self.encode(image)[0]


class BackEnd(nn.Module):
    """Client decoder stages and head: what comes back (with FE's skips) -> class logits at full resolution."""

    def __init__(self, spatial_dims: int, split_channels: int, hidden_channels: int, num_classes: int,
                 stages: Sequence[ClientStage] = ()) -> None:
        super().__init__()
        self.up = nn.ModuleList(UnetUpBlock(spatial_dims, stage.out_channels, stage.in_channels, stage.kernel, 1,
                                            stage.stride, NORM, ACTIVATION) for stage in reversed(stages))
        self.block = UnetBasicBlock(spatial_dims, split_channels, hidden_channels, 3, 1, NORM, ACTIVATION)
        self.head = UnetOutBlock(spatial_dims, hidden_channels, num_classes)

    def forward(self, features: Tensor, skips: Sequence[Tensor] = ()) -> Tensor:
        if len(skips) != len(self.up):
            raise ValueError(f"BE climbs {len(self.up)} stages and needs as many skips, got {len(skips)}")
        for block, skip in zip(self.up, reversed(skips)):
            features = block(features, skip)
        return self.head(self.block(features))


def build_front_end(federation: FederationPlan, client: ClientPlan) -> FrontEnd:
    return FrontEnd(federation.server_segment.spatial_dims, client.in_channels, client.fe_channels,
                    federation.split_channels, client_stages(federation))


def build_back_end(federation: FederationPlan, client: ClientPlan) -> BackEnd:
    return BackEnd(federation.server_segment.spatial_dims, federation.split_channels, client.be_channels,
                   client.num_classes, client_stages(federation))


def split1_channels(federation: FederationPlan, defence: DefenceConfig) -> int:
    """Channels of what crosses split 1: the cut's, or fewer behind a channel bottleneck."""
    return defence.bottleneck_channels or federation.crossing_channels


class SupervisedBody(DynUNet):
    """MONAI's DynUNet whose forward is always the full-resolution map, in train and eval mode alike.

    ``forward_with_coarse`` also returns the deep-supervision heads' maps at their own, coarser
    resolution: DynUNet's own training forward would upsample each to full resolution and stack
    them, multiplying what crosses back to the client by the number of scales. The state dict is
    DynUNet's, so a body without supervision loads the checkpoints of a plain DynUNet.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.output_block(self.skip_layers(x))

    def forward_with_coarse(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The full-resolution map and, with deep supervision, the coarser maps (1/2, 1/4, ... of it)."""
        out = self.forward(x)
        return out, (list(self.heads) if self.deep_supervision else [])


def deep_supervision_scales(federation: FederationPlan, requested: int) -> int:
    """How many coarser outputs the body can give: at most one per decoder stage below its top
    one and the bottleneck's (DynUNet's limit), so a shallow body gets fewer than asked for."""
    return max(0, min(requested, len(federation.server_body().strides) - 2))


def build_server_segment(federation: FederationPlan, in_channels: int | None = None,
                         deep_supervision: int = 0) -> SupervisedBody:
    """The shared U-Net body below the cut, reading ``in_channels`` (default: the cut's width) and
    returning the cut's width; InstanceNorm so averaging it across clients averages no statistics.
    ``deep_supervision`` coarser outputs are asked for (``deep_supervision_scales`` of them are built)."""
    topology = federation.server_body()
    scales = deep_supervision_scales(federation, deep_supervision)
    return SupervisedBody(
        spatial_dims=topology.spatial_dims,
        in_channels=in_channels or federation.crossing_channels,
        out_channels=federation.crossing_channels,
        kernel_size=[list(k) for k in topology.kernel_sizes],
        strides=[list(s) for s in topology.strides],
        upsample_kernel_size=[list(s) for s in topology.strides[1:]],
        filters=list(topology.filters),
        norm_name=NORM,
        act_name=ACTIVATION,
        deep_supervision=scales > 0,
        deep_supr_num=max(1, scales),
    )


def build_middle(federation: FederationPlan, config: TrainingConfig) -> nn.Module:
    """The server's segment of one client, as the run's settings shape it: the U-Net body reading
    what crosses split 1, or (FedEM) a mixture of M bodies, each from its own draw of the random state."""
    in_channels = split1_channels(federation, config.defence)
    if config.mixture_size == 1:
        return build_server_segment(federation, in_channels, config.deep_supervision)
    return MixtureSegment([build_server_segment(federation, in_channels) for _ in range(config.mixture_size)])


def forward_with_coarse(segment: nn.Module, features: Tensor) -> tuple[Tensor, list[Tensor]]:
    """A server segment's split-2 map and its deep-supervision maps (none without supervision)."""
    if isinstance(segment, SupervisedBody):
        return segment.forward_with_coarse(features)
    return segment(features), []
