"""Forward noising at a split point, as its own object (diffusers' DDPMScheduler underneath).

Besides ``add_noise`` it knows the noise *gain* sqrt((1 - a_bar_t) / a_bar_t): the factor by
which the denoiser's error reaches the segmentation path through x0_hat. The published code drew
t up to T - 1, where the gain is ~8,000; we draw training timesteps only where the gain is bounded.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import Tensor

from mucald_unet.errors import TrainingError
from planners.plans import DiffusionPlan


class NoiseSchedule:
    def __init__(self, plan: DiffusionPlan, max_noise_gain: float | None = None,
                 eval_timestep: int | None = None, train_at_eval: bool = False) -> None:
        self.scheduler = DDPMScheduler(num_train_timesteps=plan.num_train_timesteps,
                                       beta_schedule=plan.beta_schedule, clip_sample=False)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64)
        self.num_timesteps = plan.num_train_timesteps
        gains = self.noise_gain(torch.arange(self.num_timesteps))
        self.eval_timestep = _checked_eval_timestep(plan, eval_timestep, gains, max_noise_gain)
        limit = float(gains[self.eval_timestep]) if max_noise_gain is None else max_noise_gain
        allowed = torch.nonzero(gains <= limit * (1 + 1e-9)).flatten()
        if len(allowed) < 2 or int(allowed.max()) < self.eval_timestep:
            raise ValueError(f"max_noise_gain {limit:.3g} excludes the eval timestep {self.eval_timestep} "
                             f"(gain {float(gains[self.eval_timestep]):.3g}); raise it or lower the eval timestep.")
        self.max_train_timestep = int(allowed.max())
        self.train_at_eval = train_at_eval

    def noise_gain(self, timesteps: Tensor) -> Tensor:
        a_bar = self.alphas_cumprod[timesteps.long().cpu()]
        return torch.sqrt((1 - a_bar) / a_bar)

    def sample_timesteps(self, batch: int, device: torch.device) -> Tensor:
        """t ~ U{1..t_max}, t_max the last timestep whose gain is within the bound; with
        ``train_at_eval`` every step uses the eval timestep, the only noise level prediction uses."""
        if self.train_at_eval:
            return self.eval_timesteps(batch, device)
        return torch.randint(1, self.max_train_timestep + 1, (batch,), device=device)

    def eval_timesteps(self, batch: int, device: torch.device) -> Tensor:
        return torch.full((batch,), self.eval_timestep, device=device, dtype=torch.long)

    def add_noise(self, x: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = sqrt(a_bar_t) x + sqrt(1 - a_bar_t) eps."""
        return self.scheduler.add_noise(x, noise, timesteps)


def _checked_eval_timestep(plan: DiffusionPlan, chosen: int | None, gains: Tensor,
                           max_noise_gain: float | None) -> int:
    """The eval timestep, refused (not clamped) outside 1..T-1: t = 0 adds no noise, T does not exist."""
    t = plan.eval_timestep if chosen is None else chosen
    last = plan.num_train_timesteps - 1
    if 1 <= t <= last:
        return t
    cap = ""
    if max_noise_gain is not None:  # the gain cap bounds it further (checked by the caller)
        allowed = torch.nonzero(gains <= max_noise_gain * (1 + 1e-9)).flatten()
        cap = f"; max_noise_gain {max_noise_gain:.3g} allows at most {int(allowed.max())}"
    where = ("--eval-timestep" if chosen is not None
             else "the plan's federation.diffusion.eval_timestep")
    fix = (f"pass --eval-timestep between 1 and {last} (or leave it out for the plan's {plan.eval_timestep})"
           if chosen is not None else "re-run mucald_plan_and_preprocess, or correct that field of plans.json")
    raise TrainingError(f"{where} is {t}, outside the valid range 1..{last} of the plan's noise schedule "
                        f"(T = {plan.num_train_timesteps} timesteps){cap}. Fix: {fix}.")
