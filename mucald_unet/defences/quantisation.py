"""Uniform quantisation of the features that cross split 1: a defence that removes information.

Each sample's channel keeps 2**bits levels spread over its own value range, so what the server
sees is a coarse code of the client's features rather than a near-copy of the image. Noise is
fresh per transmission and averages out; a rounding step is the same every time, so repeated
queries and adaptive decoders cannot undo it. Gradients pass straight through (the estimator of
torch's fake quantisation, as in quantisation-aware training), so the client still learns.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MAX_BITS = 16


class BoundaryQuantiser(nn.Module):
    """(B, C, *spatial) -> the same shape with 2**bits levels per (sample, channel); bits 0: unchanged."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not 0 <= bits <= MAX_BITS:
            raise ValueError(f"quantisation needs 1 to {MAX_BITS} bits (got {bits})")
        self.bits = int(bits)

    def forward(self, features: Tensor) -> Tensor:
        if self.bits == 0:
            return features
        rows = features.reshape(features.shape[0] * features.shape[1], -1)
        low, high = rows.detach().amin(dim=1), rows.detach().amax(dim=1)
        top = 2 ** self.bits - 1
        constant = high == low  # one level already; quantising it would snap the value to the grid's zero
        scale = torch.where(constant, 1.0, (high - low) / top).float()
        zero_point = torch.round(-low / scale).clamp(0, top).to(torch.int32)
        quantised = torch.fake_quantize_per_channel_affine(rows.float(), scale, zero_point, 0, 0, top)
        quantised = torch.where(constant[:, None], rows, quantised.to(features.dtype))
        return quantised.reshape(features.shape)
