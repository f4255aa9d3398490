"""CRDM at one split point: the module that turns features x into what travels on, x0_hat.

x -> exogenous encoder -> u -> neural SCM -> z_causal (proxy loss, KLs)
x -> forward noise at t -> x_t -> denoiser(x_t, t, z_causal) -> eps_pred (diffusion loss, x detached)
x0_hat = (x_t - sqrt(1 - a_bar) eps_pred.detach()) / sqrt(a_bar): segmentation gradients reach x
through x_t with gain 1, while the residual noise is bounded by the schedule's gain cap.
Schedule, denoiser and this module are separate objects; ``shared_parts`` names the submodules
that the server averages (MUCALD.md: the exogenous encoder and the denoiser), the rest stays with
the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mucald_unet.crdm.causal_latent import (ExogenousEncoder, NeuralSCM, NodeGraph, PlainLatentMap,
                                            ProxyPrior, gaussian_kl)
from mucald_unet.crdm.denoiser import ConditionalDenoiser
from mucald_unet.crdm.noise_schedule import NoiseSchedule


@dataclass(frozen=True)
class SplitOptions:
    """Which parts of CRDM run (the ablations switch them off)."""

    causal_graph: bool = True
    diffusion: bool = True
    forward_noise: bool = True
    denoiser_width: int = 32
    denoiser_downsample: tuple[int, ...] = (4, 4)
    scm_hidden: int = 128
    share_exogenous: bool = True  # False: the encoder's node heads mean this client's own proxies


@dataclass
class SplitResult:
    features: Tensor  # what travels on (x0_hat, or x without diffusion)
    losses: dict[str, Tensor] = field(default_factory=dict)  # diffusion, kl_u, proxy, kl_z


class CausalDiffusionSplit(nn.Module):
    def __init__(self, spatial_dims: int, channels: int, graph: NodeGraph, node_dim: int,
                 schedule: NoiseSchedule, options: SplitOptions) -> None:
        super().__init__()
        num_nodes = len(graph.names)
        self.node_dim = node_dim
        self.schedule = schedule
        self.options = options
        self.shared_parts = ("exogenous", "denoiser") if options.share_exogenous else ("denoiser",)
        self.exogenous = ExogenousEncoder(spatial_dims, channels, num_nodes, node_dim)
        self.scm = (NeuralSCM(graph, node_dim, options.scm_hidden) if options.causal_graph
                    else PlainLatentMap(num_nodes, node_dim, options.scm_hidden))
        self.prior = ProxyPrior(num_nodes, node_dim)
        self.denoiser = (ConditionalDenoiser(spatial_dims, channels, num_nodes * node_dim, options.denoiser_width,
                                             options.denoiser_downsample)
                         if options.diffusion else None)

    def forward(self, x: Tensor, proxies: Tensor | None = None, proxy_mask: Tensor | None = None,
                noise_generator: torch.Generator | None = None) -> SplitResult:
        mu, logvar = self.exogenous(x)
        u = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        z = self.scm(u)
        result = SplitResult(x)
        if self.training and proxies is not None:
            result.losses.update(self._causal_losses(mu, logvar, z, proxies, proxy_mask))
        if self.denoiser is not None:
            result.features = self._denoised(x, z, result.losses, noise_generator)
        return result

    def _causal_losses(self, mu: Tensor, logvar: Tensor, z: Tensor, proxies: Tensor,
                       mask: Tensor) -> dict[str, Tensor]:
        node_means = z.view(z.shape[0], -1, self.node_dim).mean(dim=2)
        squared = torch.where(mask, (node_means - proxies) ** 2, 0.0)
        proxy = squared.sum() / mask.sum().clamp(min=1)
        prior_mu, prior_logvar = self.prior(proxies, mask)
        q_logvar = self.scm.z_logvar.flatten().expand_as(z)
        return {"kl_u": gaussian_kl(mu, logvar), "proxy": proxy,
                "kl_z": gaussian_kl(z, q_logvar, prior_mu, prior_logvar)}

    def _denoised(self, x: Tensor, z: Tensor, losses: dict[str, Tensor],
                  generator: torch.Generator | None) -> Tensor:
        batch = x.shape[0]
        if self.training:
            t = self.schedule.sample_timesteps(batch, x.device)
        else:
            t = self.schedule.eval_timesteps(batch, x.device)
        if self.options.forward_noise:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        else:
            noise = torch.zeros_like(x)
        eps_pred = self.denoiser(self.schedule.add_noise(x.detach(), noise, t), t, z)
        if self.training:
            losses["diffusion"] = nn.functional.mse_loss(eps_pred, noise)
        # (x_t - sqrt(1 - a_bar) eps_pred) / sqrt(a_bar) with x_t built from the live x, written as
        # x + gain (eps - eps_pred): the same value and gradient (identity to x), fewer full-size ops
        gain = self.schedule.noise_gain(t).to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return x + gain * (noise - eps_pred.detach())

    def shared_state(self) -> dict[str, Tensor]:
        """The averaged part (``shared_parts``), keyed by submodule path."""
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] in self.shared_parts}
