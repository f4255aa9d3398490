"""Reconstruction attacks on what crosses split 1.

* Inverse network: a decoder (MONAI U-Net) trained on the attacker's auxiliary (features, image)
  pairs, then applied to the private transmissions. Non-adaptive: trained on defence-free
  features (FE). Adaptive: trained on transmissions with the defence switched on, several fresh
  draws per image. Averaging: the adaptive decoder applied to the mean of K transmissions of the
  same image (the noise is fresh each time, so averaging removes it).
* White-box inversion: the attacker knows the client's head (FE and CRDM1, e.g. by colluding with
  aggregation); it optimises an image so that the head's transmission matches the intercepted
  one (fresh draws each step: expectation over the defence's noise) with a total-variation prior.
  Instance normalisation makes FE blind to each channel's offset and scale, so the attacker then
  gives every reconstructed channel the auxiliary images' mean and spread for that channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from inference.model import TrainedClientModel
from mucald_unet.defences.inversion_adversary import inversion_decoder


@dataclass(frozen=True)
class InversionBudget:
    decoder_steps: int = 600
    decoder_batch: int = 16
    decoder_lr: float = 2e-3
    adaptive_draws: int = 4  # transmissions per auxiliary image for the adaptive decoder
    averaging_draws: int = 8  # K transmissions averaged by the averaging attacker
    whitebox_steps: int = 300
    whitebox_lr: float = 0.05
    tv_weight: float = 0.01


def train_decoder(features: Tensor, images: Tensor, budget: InversionBudget, seed: int) -> nn.Module:
    """Fit a decoder features -> images (MSE) on the attacker's pairs."""
    torch.manual_seed(seed)
    upsampling = tuple(i // f for i, f in zip(images.shape[2:], features.shape[2:]))
    decoder = inversion_decoder(images.ndim - 2, features.shape[1], images.shape[1], upsampling)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=budget.decoder_lr)
    generator = torch.Generator().manual_seed(seed)
    decoder.train()
    for _ in range(budget.decoder_steps):
        index = torch.randint(len(features), (min(budget.decoder_batch, len(features)),), generator=generator)
        loss = nn.functional.mse_loss(decoder(features[index]), images[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return decoder.eval()


def decode(decoder: nn.Module, features: Tensor, batch: int = 16) -> Tensor:
    with torch.no_grad():
        return torch.cat([decoder(features[i:i + batch]) for i in range(0, len(features), batch)])


def total_variation(images: Tensor) -> Tensor:
    dims = range(2, images.ndim)
    return sum((images.diff(dim=d).abs().mean() for d in dims), torch.zeros((), device=images.device))


def match_channel_statistics(images: Tensor, reference: Tensor) -> Tensor:
    """Per image and channel, the reference set's mean and standard deviation for that channel."""
    dims = tuple(range(2, images.ndim))
    mean, std = images.mean(dims, keepdim=True), images.std(dims, keepdim=True).clamp_min(1e-6)
    ref_dims = (0, *dims)
    return (images - mean) / std * reference.std(ref_dims, keepdim=True) + reference.mean(ref_dims, keepdim=True)


def whitebox_inversion(model: TrainedClientModel, observed: Tensor, start: Tensor, budget: InversionBudget,
                       seed: int, reference: Tensor | None = None) -> Tensor:
    """Images whose transmission matches ``observed`` (N, *crossing shape); ``start`` is the prior and
    ``reference`` (the auxiliary images) calibrates each channel's intensities afterwards."""
    torch.manual_seed(seed)
    guess = start.clone().to(model.device).requires_grad_(True)
    observed = observed.to(model.device)
    optimizer = torch.optim.Adam([guess], lr=budget.whitebox_lr)
    model.network.train()  # CRDM1 and the defence draw fresh noise, as in every training step
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        for _ in range(budget.whitebox_steps):
            mismatch = nn.functional.mse_loss(model.network.head(guess).features, observed)
            loss = mismatch + budget.tv_weight * total_variation(guess)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        model.network.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    found = guess.detach().cpu()
    return match_channel_statistics(found, reference) if reference is not None else found
