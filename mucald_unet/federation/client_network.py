"""The client's part of the split network: FE, CRDM at both split points, the split-1 defence, BE.

Training (``SplitClient``) and prediction (``inference``) build it here, from the plan and the
run's settings, so a checkpoint's client modules always load into the same structure. The
middle (the server segment) is a callable: the transport during training and validation, the
checkpoint's own copy of SS when a hospital predicts offline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock
from torch import Tensor, nn

from mucald_unet.config import Ablation, TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.crdm.causal_latent import NodeGraph
from mucald_unet.crdm.noise_schedule import NoiseSchedule
from mucald_unet.crdm.split_point import CausalDiffusionSplit, SplitOptions, SplitResult
from mucald_unet.defences.bottleneck import ChannelBottleneck
from mucald_unet.defences.gaussian import BoundaryNoise
from mucald_unet.defences.inversion_adversary import SimulatedInverter
from mucald_unet.defences.quantisation import BoundaryQuantiser
from mucald_unet.networks.mixture import MixtureWeights
from mucald_unet.networks.segments import (build_back_end, build_front_end, deep_supervision_scales,
                                           split1_channels)
from planners.plans import ClientPlan, FederationPlan

SPLITS = ("crdm1", "crdm2")

Middle = Callable[[Tensor], Tensor]  # split-1 features -> split-2 features (the server's segment)


@dataclass
class ClientHead:
    """What the client's head produces for one batch."""

    features: Tensor  # what crosses split 1
    losses: dict[str, Tensor]  # CRDM1's
    skips: list[Tensor]  # FE's skip connections for BE; none at cut depth 0


class ClientNetwork(nn.Module):
    def __init__(self, federation: FederationPlan, plan: ClientPlan, config: TrainingConfig) -> None:
        super().__init__()
        self.front_end = build_front_end(federation, plan)
        self.back_end = build_back_end(federation, plan)
        self.boundary_noise = BoundaryNoise(config.defence.gaussian_sigma)
        self.boundary_quantiser = BoundaryQuantiser(config.defence.quantisation_bits)
        self.splits = nn.ModuleDict()
        if config.uses_crdm:
            options = split_options(federation, config)
            schedule = NoiseSchedule(federation.diffusion, config.crdm.max_noise_gain, config.crdm.eval_timestep,
                                     config.crdm.train_at_eval_noise)
            graph = NodeGraph.from_plan(plan.causal_graph, federation.causal.num_nodes)
            for split in SPLITS:
                self.splits[split] = CausalDiffusionSplit(federation.server_segment.spatial_dims,
                                                          federation.crossing_channels, graph,
                                                          federation.causal.node_dim, schedule, options)
        # FedEM: the server returns one split-2 map per component; pi combines their predictions
        self.mixture = MixtureWeights(config.mixture_size) if config.mixture_size > 1 else None
        dims, narrow = federation.server_segment.spatial_dims, config.defence.bottleneck_channels
        if narrow and narrow >= federation.crossing_channels:
            raise TrainingError(f"--defence bottleneck:{narrow} keeps all {federation.crossing_channels} channels that "
                                f"cross at cut depth {federation.cut_depth}. Fix: fewer, e.g. bottleneck:"
                                f"{max(1, federation.crossing_channels // 8)}.")
        self.bottleneck = ChannelBottleneck(dims, federation.crossing_channels, narrow) if narrow else None
        weight = config.defence.adversary_weight
        self.inverter = (SimulatedInverter(dims, split1_channels(federation, config.defence), plan.in_channels,
                                           federation.crossing_pooling, weight)
                         if weight > 0 else None)
        # deep supervision: one 1x1 head per coarser map the server returns (labels stay here)
        scales = deep_supervision_scales(federation, config.deep_supervision)
        self.coarse_heads = nn.ModuleList(UnetOutBlock(dims, federation.crossing_channels, plan.num_classes)
                                          for _ in range(scales))

    def parts(self) -> dict[str, nn.Module]:
        """The named parts a checkpoint stores one state dict for each."""
        mixture = {"mixture": self.mixture} if self.mixture is not None else {}
        optional = {name: module for name, module in (("inverter", self.inverter), ("bottleneck", self.bottleneck),
                                                      ("coarse_heads", self.coarse_heads or None))
                    if module is not None}
        return {"front_end": self.front_end, "back_end": self.back_end, **dict(self.splits.items()), **mixture,
                **optional}

    def load_parts(self, states: dict[str, dict]) -> None:
        missing = sorted(set(self.parts()) - set(states))
        if missing:
            raise KeyError(f"no state for {', '.join(missing)}")
        for name, module in self.parts().items():
            module.load_state_dict(states[name])

    def through_split(self, split: str, features: Tensor, proxies: Tensor | None = None,
                      mask: Tensor | None = None, noise_generator: torch.Generator | None = None) -> SplitResult:
        """CRDM at one split point; without CRDM the features pass unchanged."""
        if split not in self.splits:
            return SplitResult(features)
        return self.splits[split](features, proxies, mask, noise_generator)

    def head(self, images: Tensor, proxies: Tensor | None = None, mask: Tensor | None = None,
             noise_generator: torch.Generator | None = None) -> ClientHead:
        """What crosses split 1: FE -> CRDM1 -> the split-1 defence (if any), with CRDM1's losses and
        FE's skips."""
        crossing, skips = self.front_end.encode(images)
        result = self.through_split("crdm1", crossing, proxies, mask, noise_generator)
        features = self.narrow(result.features)
        features = self.boundary_quantiser(self.boundary_noise(features, noise_generator))
        return ClientHead(features, result.losses, skips)

    def narrow(self, features: Tensor) -> Tensor:
        """The channel bottleneck's projection (identity without one): the deterministic part of
        the split-1 defence."""
        return features if self.bottleneck is None else self.bottleneck(features)

    def decode(self, features: Tensor, skips: Sequence[Tensor]) -> Tensor:
        """BE on what came back (after CRDM2) and FE's skips; a mixture's M x B maps, stacked
        component-major, each reuse their sample's skips."""
        repeats = features.shape[0] // skips[0].shape[0] if skips else 1
        return self.back_end(features, [skip.repeat(repeats, *(1,) * (skip.ndim - 1)) if repeats > 1 else skip
                                        for skip in skips])

    def segment(self, images: Tensor, middle: Middle, noise_generator: torch.Generator | None = None) -> Tensor:
        """Class logits of a batch: head -> middle -> CRDM2 -> BE (no losses); with a mixture middle,
        the log of the pi-weighted mixture of the components' class probabilities."""
        head = self.head(images, noise_generator=noise_generator)
        features = self.through_split("crdm2", middle(head.features), noise_generator=noise_generator).features
        logits = self.decode(features, head.skips)
        return logits if self.mixture is None else self.mixture.combine(logits)


def split_options(federation: FederationPlan, config: TrainingConfig) -> SplitOptions:
    ablations = config.ablations
    return SplitOptions(causal_graph=Ablation.NO_CAUSAL not in ablations,
                        diffusion=Ablation.NO_DIFFUSION not in ablations,
                        forward_noise=Ablation.NO_FORWARD_NOISE not in ablations,
                        denoiser_width=config.crdm.denoiser_width_factor * federation.crossing_channels,
                        scm_hidden=config.crdm.scm_hidden, share_exogenous=config.crdm.share_exogenous,
                        denoiser_downsample=latent_downsample(federation, config.crdm.denoiser_downsample))


def latent_downsample(federation: FederationPlan, limit: int) -> tuple[int, ...]:
    """Per axis, the pooling of the server's first stages up to ``limit``: axes the plan never
    pools (thin 3D slabs) stay at the resolution of the cut, so every patch size divides evenly."""
    body = federation.server_body()
    factors = [1] * body.spatial_dims
    for stride in body.strides[1:]:
        factors = [f * s if f * s <= limit else f for f, s in zip(factors, stride)]
    return tuple(factors)
