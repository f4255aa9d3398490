"""Loss pieces of a client step: segmentation (MONAI Dice + CE) and the weighted auxiliary sum."""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import Tensor


def segmentation_loss(ce_weight: float) -> DiceCELoss:
    """Dice over foreground classes + ce_weight x cross-entropy, on logits and integer labels."""
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, lambda_dice=1.0,
                      lambda_ce=ce_weight, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_k weights[k] * terms[k] over the terms present; a term without a weight counts 1."""
    total = None
    for name, value in terms.items():
        part = weights.get(name, 1.0) * value
        total = part if total is None else total + part
    return total
