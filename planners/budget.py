"""What one training sample of the planned split network costs: feature-map memory and compute.

Both are static estimates from the topology, as nnU-Net estimates VRAM: sums over the planned
convolutions of the feature maps they produce. The network is FE (two convolutions at full
resolution) -> server U-Net body -> BE (one convolution and a 1x1 head).
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


def sample_cost(patch: tuple[int, ...], topology: Topology, in_channels: int, num_classes: int,
                split_channels: int) -> SampleCost:
    """Forward FLOPs and stored feature-map bytes of one sample through FE, server body and BE."""
    flops = 0.0
    values = 0.0

    def conv(voxels: float, kernel: tuple[int, ...], c_in: int, c_out: int) -> None:
        nonlocal flops, values
        flops += 2.0 * math.prod(kernel) * c_in * c_out * voxels
        values += TENSORS_PER_CONV * c_out * voxels

    full = float(math.prod(patch))
    dims = len(patch)
    three = (3,) * dims
    conv(full, three, in_channels, split_channels)  # FE
    conv(full, three, split_channels, split_channels)
    size = list(patch)
    previous = split_channels
    for stage, (kernel, stride, width) in enumerate(zip(topology.kernel_sizes, topology.strides,
                                                        topology.filters)):
        size = [math.ceil(s / st) for s, st in zip(size, stride)]
        voxels = float(math.prod(size))
        conv(voxels, kernel, previous, width)  # encoder block
        conv(voxels, kernel, width, width)
        if stage < len(topology.filters) - 1:  # decoder block on the skip + upsampled features
            conv(voxels, kernel, 2 * width, width)
            conv(voxels, kernel, width, width)
        previous = width
    conv(full, (1,) * dims, topology.filters[0], split_channels)  # server output projection
    conv(full, three, split_channels, split_channels)  # BE
    conv(full, (1,) * dims, split_channels, num_classes)
    return SampleCost(flops, values * BYTES_PER_VALUE)
