"""FE, SS and BE built from plans, in 2D and 3D."""

from __future__ import annotations

import torch

from mucald_unet.federation.client_network import latent_downsample
from mucald_unet.networks.segments import build_back_end, build_front_end, build_server_segment
from planners.plans import CausalNodesPlan, DiffusionPlan, FederationPlan, NetworkTopologyPlan


def federation(dims: int) -> FederationPlan:
    strides = ((1,) * dims, (2,) * dims, (1, 2, 2) if dims == 3 else (2, 2))
    topology = NetworkTopologyPlan(dims, ((3,) * dims,) * 3, strides, (8, 16, 32))
    return FederationPlan(f"{dims}d", 8, topology, DiffusionPlan(), CausalNodesPlan())


class _Client:
    in_channels, fe_channels, be_channels, num_classes = 3, 8, 8, 4


def test_split_network_shapes_in_2d_and_3d() -> None:
    for dims, shape in ((2, (2, 3, 16, 24)), (3, (1, 3, 8, 16, 16))):
        plan = federation(dims)
        fe, ss, be = build_front_end(plan, _Client), build_server_segment(plan), build_back_end(plan, _Client)
        features = fe(torch.randn(shape))
        assert features.shape == (shape[0], 8, *shape[2:])
        middle = ss(features)
        assert middle.shape == features.shape
        assert be(middle).shape == (shape[0], 4, *shape[2:])


def test_the_latent_denoiser_pools_only_axes_the_server_pools() -> None:
    assert latent_downsample(federation(2), 4) == (4, 4)
    assert latent_downsample(federation(3), 4) == (2, 4, 4)  # z is pooled once by the server
