"""Attacker-aware training (ResSFL, Li et al. 2022): a simulated inversion attacker at the client.

A decoder learns to reconstruct the client's patch from what crosses split 1, and FE learns,
through a gradient reversal, to make that reconstruction fail. Unlike noise, this shapes what FE
computes, so neither averaging nor an adaptive decoder can undo it by construction; the audit's
attackers are trained afresh after training and measure how much is left. Images never leave
the client: the decoder is a client part like BE (checkpointed, never sent).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNet
from torch import Tensor, nn

from mucald_unet.daca.gradient_reversal import reverse_gradient

ATTACKER_CHANNELS = (32, 64, 128)  # the audit's decoder
SIMULATED_CHANNELS = (16, 32, 64)  # the client's own, at about a quarter of the attacker's cost


def inversion_decoder(spatial_dims: int, feature_channels: int, image_channels: int,
                      upsampling: Sequence[int] | None = None,
                      channels: Sequence[int] = ATTACKER_CHANNELS) -> nn.Module:
    """A U-Net from what crosses to the image; features from a deeper cut are first brought to the
    image's grid by a learned transposed convolution (stride = the cut's pooling)."""
    unet = UNet(spatial_dims=spatial_dims, in_channels=feature_channels, out_channels=image_channels,
                channels=tuple(channels), strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")
    if upsampling is None or all(f == 1 for f in upsampling):
        return unet
    transposed = (nn.ConvTranspose2d, nn.ConvTranspose3d)[spatial_dims - 2]
    return nn.Sequential(transposed(feature_channels, feature_channels, tuple(upsampling), tuple(upsampling)), unet)


class SimulatedInverter(nn.Module):
    """The client's stand-in for the server's inversion attacker."""

    def __init__(self, spatial_dims: int, feature_channels: int, image_channels: int,
                 upsampling: Sequence[int], weight: float) -> None:
        super().__init__()
        self.decoder = inversion_decoder(spatial_dims, feature_channels, image_channels, upsampling,
                                         SIMULATED_CHANNELS)
        self.weight = weight

    def loss(self, transmitted: Tensor, images: Tensor) -> Tensor:
        """The decoder's reconstruction error: minimised by the decoder, maximised (times
        ``weight``) by whatever produced ``transmitted``."""
        reconstruction = self.decoder(reverse_gradient(transmitted, self.weight))
        return nn.functional.mse_loss(reconstruction, images)
