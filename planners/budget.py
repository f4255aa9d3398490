"""What one training sample of the planned split network costs: feature-map memory and compute.

Both are static estimates from the topology, as nnU-Net estimates VRAM: sums over the planned
convolutions of the feature maps they produce. The network is FE (two convolutions at full
resolution) -> server U-Net body -> BE (one convolution and a 1x1 head); at cut depth K the
client also runs the body's first K encoder and decoder stages, and the server's first stage
starts at the resolution of the cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from planners.topology import Topology

BYTES_PER_VALUE = 4
TENSORS_PER_CONV = 3  # convolution output, normalisation output, activation output kept for backward
TRAIN_FLOPS_PER_FORWARD_FLOP = 3.0  # backward costs about twice the forward pass
# Effective training throughput of 2 CPU cores for this kind of network (convolutions reach
# 27-65 GFLOP/s with torch 2.13 on the reference machine; norms, activations and Python overhead
# roughly halve that).
CPU_EFFECTIVE_FLOPS = 15e9
GPU_ACTIVATION_SHARE = 0.5  # the rest of the card holds weights, optimiser state and workspace


@dataclass(frozen=True)
class Preset:
    """How big a patch and batch may be: a GPU memory budget or a CPU time budget."""

    target: Literal["cpu", "gpu"]
    memory_gb: float = 8.0
    seconds_per_federation_iteration: float = 3.0  # 1 s per client of a 3-client federation

    def fits(self, cost: "SampleCost", batch: int, num_clients: int) -> bool:
        if self.target == "gpu":
            return cost.activation_bytes * batch <= self.memory_gb * 1e9 * GPU_ACTIVATION_SHARE
        seconds = cost.forward_flops * TRAIN_FLOPS_PER_FORWARD_FLOP * batch / CPU_EFFECTIVE_FLOPS
        return seconds <= self.seconds_per_federation_iteration / num_clients

    def describe(self) -> str:
        if self.target == "gpu":
            return f"gpu: feature maps within {GPU_ACTIVATION_SHARE:.0%} of {self.memory_gb:g} GB"
        return (f"cpu: one iteration of the whole federation ~{self.seconds_per_federation_iteration:g} s "
                f"on 2 cores (estimated at {CPU_EFFECTIVE_FLOPS / 1e9:g} GFLOP/s)")


@dataclass(frozen=True)
class SampleCost:
    forward_flops: float
    activation_bytes: float
    client_forward_flops: float = 0.0  # the client's share: FE, BE and the stages above the cut
    client_activation_bytes: float = 0.0

    @property
    def client_compute_share(self) -> float:
        return self.client_forward_flops / self.forward_flops if self.forward_flops else 0.0


def sample_cost(patch: tuple[int, ...], topology: Topology, in_channels: int, num_classes: int,
                split_channels: int, cut_depth: int = 0) -> SampleCost:
    """Forward FLOPs and stored feature-map bytes of one sample through FE, server body and BE,
    with the client's share when it runs the first ``cut_depth`` stages (encoder and decoder)."""
    flops = values = client_flops = client_values = 0.0

    def conv(voxels: float, kernel: tuple[int, ...], c_in: int, c_out: int, client: bool) -> None:
        nonlocal flops, values, client_flops, client_values
        conv_flops, conv_values = 2.0 * math.prod(kernel) * c_in * c_out * voxels, TENSORS_PER_CONV * c_out * voxels
        flops += conv_flops
        values += conv_values
        if client:
            client_flops += conv_flops
            client_values += conv_values

    full = float(math.prod(patch))
    dims = len(patch)
    three = (3,) * dims
    conv(full, three, in_channels, split_channels, True)  # FE
    conv(full, three, split_channels, split_channels, True)
    size = list(patch)
    previous = split_channels
    crossing = split_channels
    for stage, (kernel, stride, width) in enumerate(zip(topology.kernel_sizes, topology.strides,
                                                        topology.filters)):
        size = [math.ceil(s / st) for s, st in zip(size, stride)]
        voxels = float(math.prod(size))
        client = stage < cut_depth
        if stage > 0 and stage <= cut_depth:  # a client encoder stage
            conv(voxels, kernel, previous, width, True)
            conv(voxels, kernel, width, width, True)
            previous = crossing = width
        if stage >= cut_depth:  # a server encoder stage (its first one at the resolution of the cut)
            conv(voxels, kernel, previous, width, False)
            conv(voxels, kernel, width, width, False)
        if stage < len(topology.filters) - 1:  # decoder block on the skip + upsampled features
            conv(voxels, kernel, 2 * width, width, client)
            conv(voxels, kernel, width, width, client)
        if stage == cut_depth:
            crossing_voxels = voxels
        previous = width
    conv(crossing_voxels, (1,) * dims, topology.filters[cut_depth], crossing, False)  # server output projection
    conv(full, three, split_channels, split_channels, True)  # BE
    conv(full, (1,) * dims, split_channels, num_classes, True)
    return SampleCost(flops, values * BYTES_PER_VALUE, client_flops, client_values * BYTES_PER_VALUE)
