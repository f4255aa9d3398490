"""Distance correlation (Szekely et al.) between paired samples, in torch so it can be a loss.

``distance_correlation`` is the classic (biased, V-statistic) estimator in [0, 1], differentiable.
``u_distance_correlation_sqr`` is the bias-corrected squared estimator (U-centred distance
matrices, Szekely and Rizzo 2014): its expectation is 0 under independence at any sample size, so
the privacy audit reports it and NoPeek minimises it (clamped at 0 there: a single estimate can be
negative). It equals the ``dcor`` package's ``u_distance_correlation_sqr`` (a test checks this).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _distances(x: Tensor) -> Tensor:
    flat = x.reshape(x.shape[0], -1)
    squared = (flat.unsqueeze(1) - flat.unsqueeze(0)).pow(2).sum(-1)
    return torch.sqrt(squared.clamp_min(1e-12)) * (1 - torch.eye(len(flat), device=x.device, dtype=flat.dtype))


def _double_centred(d: Tensor) -> Tensor:
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def _u_centred(d: Tensor) -> Tensor:
    n = d.shape[0]
    centred = (d - d.sum(0, keepdim=True) / (n - 2) - d.sum(1, keepdim=True) / (n - 2)
               + d.sum() / ((n - 1) * (n - 2)))
    return centred * (1 - torch.eye(n, device=d.device, dtype=d.dtype))


def distance_correlation(x: Tensor, y: Tensor) -> Tensor:
    """dCor(x, y) over the first axis (samples); other axes are flattened. Needs 2+ samples."""
    a, b = _double_centred(_distances(x)), _double_centred(_distances(y))
    dcov_xy, dcov_xx, dcov_yy = (a * b).mean(), (a * a).mean(), (b * b).mean()
    return torch.sqrt((dcov_xy / torch.sqrt(dcov_xx * dcov_yy).clamp_min(1e-12)).clamp_min(0.0))


def u_distance_correlation_sqr(x: Tensor, y: Tensor) -> Tensor:
    """Bias-corrected squared distance correlation; needs 4+ samples, may be slightly negative."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ValueError(f"need the same number (>= 4) of samples in x and y, got {x.shape[0]} and {y.shape[0]}")
    a, b = _u_centred(_distances(x)), _u_centred(_distances(y))
    xy, xx, yy = (a * b).sum(), (a * a).sum(), (b * b).sum()
    return xy / torch.sqrt(xx * yy).clamp_min(1e-30)  # a constant sample gives 0 / tiny = 0, no host sync
