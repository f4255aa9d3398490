"""How close reconstructions are to the private images: SSIM, PSNR, MSE (MONAI, data range 1 in a
fixed intensity window), top-1 re-identification, and bootstrap intervals over cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import MSEMetric, PSNRMetric, SSIMMetric


@dataclass(frozen=True)
class Estimate:
    """A mean over cases with its bootstrap 95 % interval."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean, samples: int = 1000,
              seed: int = 0) -> Estimate:
    """Percentile bootstrap over the first axis (cases)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(samples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(float(statistic(values)), float(low), float(high))


def per_image_scores(reconstructions: np.ndarray, originals: np.ndarray) -> dict[str, np.ndarray]:
    """SSIM, PSNR and MSE per image; both arrays (N, C, *spatial) already in [0, 1]."""
    recon, real = torch.from_numpy(reconstructions).float(), torch.from_numpy(originals).float()
    dims = real.ndim - 2
    ssim = SSIMMetric(spatial_dims=dims, data_range=1.0, win_size=7)(recon, real)
    psnr = PSNRMetric(max_val=1.0)(recon, real)
    mse = MSEMetric()(recon, real)
    return {name: values.reshape(len(real), -1).mean(1).numpy().astype(np.float64)
            for name, values in (("ssim", ssim), ("psnr", psnr), ("mse", mse))}


def reidentified(reconstructions: np.ndarray, originals: np.ndarray,
                 distractors: np.ndarray | None = None) -> np.ndarray:
    """Per reconstruction: whether its nearest image (MSE) is its own original, among the originals
    and, if given, a gallery of other patients' images (ties count as misses)."""
    recon = reconstructions.reshape(len(reconstructions), -1)
    real = originals.reshape(len(originals), -1)
    distances = ((recon[:, None, :] - real[None, :, :]) ** 2).mean(-1)
    own = np.diag(distances)
    others = (distances + np.diag(np.full(len(real), np.inf))).min(axis=1)
    if distractors is not None and len(distractors):
        gallery = distractors.reshape(len(distractors), -1)
        others = np.minimum(others, ((recon[:, None, :] - gallery[None, :, :]) ** 2).mean(-1).min(axis=1))
    return own < others


def summarise(reconstructions: np.ndarray, originals: np.ndarray, seed: int = 0,
              gallery: np.ndarray | None = None) -> dict[str, Estimate]:
    """SSIM, PSNR, MSE and re-identification among the attacked originals (``reid``, chance
    1 / originals), and with ``gallery`` also among the originals plus those images (``reid_gallery``,
    chance 1 / (originals + gallery)): a few distinct patients are told apart even by poor
    reconstructions, so the smaller set saturates."""
    scores = per_image_scores(reconstructions, originals)
    scores["reid"] = reidentified(reconstructions, originals).astype(np.float64)
    if gallery is not None:
        scores["reid_gallery"] = reidentified(reconstructions, originals, gallery).astype(np.float64)
    return {name: bootstrap(values, seed=seed) for name, values in scores.items()}
