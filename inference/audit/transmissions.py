"""What crosses split 1 for given images, as the server sees it during training.

The client's head (FE -> CRDM1 -> split-1 defence) runs in training mode, so CRDM draws its
timestep and noise as it does in every training step (and the Gaussian defence its noise); each
call is a fresh draw, which is what an averaging attacker collects over rounds. The defence-free
surrogate is FE alone (and a bottleneck's projection): what a non-adaptive attacker assumes crosses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inference.model import TrainedClientModel


def transmitted(model: TrainedClientModel, images: Tensor, batch: int = 16) -> Tensor:
    """One training-mode transmission per image (no gradients)."""
    return _batched(lambda x: model.network.head(x).features, model, images, batch, training=True)


def undefended(model: TrainedClientModel, images: Tensor, batch: int = 16) -> Tensor:
    """FE features: what would cross without CRDM or a noise defence (through a channel
    bottleneck's projection, which is the network itself rather than noise on top of it)."""
    return _batched(lambda x: model.network.narrow(model.network.front_end(x)), model, images, batch, training=False)


def averaged_transmissions(model: TrainedClientModel, images: Tensor, draws: int, batch: int = 16) -> Tensor:
    """The mean of ``draws`` independent transmissions of each image."""
    return torch.stack([transmitted(model, images, batch) for _ in range(draws)]).mean(0)


def _batched(function, model: TrainedClientModel, images: Tensor, batch: int, training: bool) -> Tensor:
    model.network.train(training)
    try:
        with torch.no_grad():
            return torch.cat([function(images[i:i + batch].to(model.device)).cpu()
                              for i in range(0, len(images), batch)])
    finally:
        model.network.eval()
