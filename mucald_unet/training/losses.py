"""Loss pieces of a client step: segmentation (MONAI Dice + CE), deep supervision's coarser
scales, and the weighted auxiliary sum."""

from __future__ import annotations

from collections.abc import Sequence

from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import Tensor


def segmentation_loss(ce_weight: float) -> DiceCELoss:
    """Dice over foreground classes + ce_weight x cross-entropy, on logits and integer labels."""
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, lambda_dice=1.0,
                      lambda_ce=ce_weight, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)


def coarse_scales_loss(seg_loss: DiceCELoss, coarse_logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    """nnU-Net's deep-supervision sum over the coarser scales only: scale k (1/2^k of the resolution)
    weighs 2^-k of the full-resolution loss, against the labels downsampled by nearest neighbour
    (MONAI's DeepSupervisionLoss, which interpolates the labels; hence float labels)."""
    weights = [0.5 ** (k + 1) for k in range(len(coarse_logits))]
    return DeepSupervisionLoss(seg_loss, weights=weights)(list(coarse_logits), labels.float())


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_k weights[k] * terms[k] over the terms present; a term without a weight counts 1."""
    total = None
    for name, value in terms.items():
        part = weights.get(name, 1.0) * value
        total = part if total is None else total + part
    return total
