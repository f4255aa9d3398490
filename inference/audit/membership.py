"""Membership inference: did a case train the model?

The statistic of a case is its negated cross-entropy under the model (whole case, Gaussian sliding
windows, no TTA: what the deployed model gives); a 3D case under a 2D plan scores the mean of its
slices' statistics. Two attacks:

* loss threshold (Yeom et al.): members have lower loss; the score is the statistic itself;
* offline LiRA (Carlini et al.): shadow models trained like the target on random halves of the
  population (balanced: every case is left out of exactly half of them) give, per case, the mean
  statistic of the models that did not see it; the score is how far the target's statistic lies
  above it, in units of the pooled spread (a global variance, as the paper advises with few shadows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

from inference.audit.image_metrics import Estimate
from mucald_unet.training.data import TrainingCase

CaseLogits = Callable[[np.ndarray], Tensor]  # preprocessed images (C, *spatial) -> logits (K, *spatial)


@dataclass(frozen=True)
class MembershipResult:
    auc: Estimate
    balanced_accuracy: float  # at the best threshold (an upper bound on a calibrated attacker)
    tpr_at_1pct_fpr: float
    members: int
    non_members: int

    def to_dict(self) -> dict:
        return {"auc": self.auc.to_dict(), "balanced_accuracy": self.balanced_accuracy,
                "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr, "members": self.members, "non_members": self.non_members}


def case_statistic(logits: Tensor, label: np.ndarray, slice_axis: int | None) -> float:
    """Negated mean cross-entropy; under a 2D plan a 3D case averages its slices' values."""
    target = torch.from_numpy(label.astype(np.int64)).to(logits.device)
    per_voxel = torch.nn.functional.cross_entropy(logits[None].float(), target[None], reduction="none")[0]
    if slice_axis is None:
        return -float(per_voxel.mean())
    per_slice = per_voxel.movedim(slice_axis, 0).flatten(1).mean(1)
    return -float(per_slice.mean())


def statistics(predict: CaseLogits, cases: Sequence[TrainingCase], slice_axis: int | None) -> np.ndarray:
    with torch.inference_mode():
        return np.array([case_statistic(predict(c.images), c.label, slice_axis) for c in cases])


def evaluate_scores(member_scores: np.ndarray, non_member_scores: np.ndarray, seed: int = 0) -> MembershipResult:
    """AUC (bootstrap over cases, members and non-members resampled apart), balanced accuracy, TPR@1%FPR."""
    truth = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    scores = np.r_[member_scores, non_member_scores]
    fpr, tpr, _ = roc_curve(truth, scores)
    balanced = float(np.max((tpr + 1 - fpr) / 2))
    tpr_low_fpr = float(np.interp(0.01, fpr, tpr))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(1000):
        m = member_scores[rng.integers(0, len(member_scores), len(member_scores))]
        n = non_member_scores[rng.integers(0, len(non_member_scores), len(non_member_scores))]
        draws.append(roc_auc_score(truth, np.r_[m, n]))
    low, high = np.percentile(draws, [2.5, 97.5])
    auc = Estimate(float(roc_auc_score(truth, scores)), float(low), float(high))
    return MembershipResult(auc, balanced, tpr_low_fpr, len(member_scores), len(non_member_scores))


def balanced_halves(num_cases: int, num_shadows: int, seed: int) -> np.ndarray:
    """(shadows, cases) booleans: which cases each shadow trains on; each case in exactly half."""
    if num_shadows < 2 or num_shadows % 2:
        raise ValueError(f"LiRA needs an even number (>= 2) of shadow models, got {num_shadows}")
    rng = np.random.default_rng(seed)
    inside = np.zeros((num_shadows, num_cases), dtype=bool)
    for case in range(num_cases):
        inside[rng.permutation(num_shadows)[: num_shadows // 2], case] = True
    return inside


def lira_offline_scores(target: np.ndarray, shadow: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per case: (target statistic - mean of OUT shadows) / pooled OUT spread."""
    out = np.where(inside, np.nan, shadow)
    mean_out = np.nanmean(out, axis=0)
    spread = np.nanstd(out - mean_out[None, :])
    return (target - mean_out) / max(float(spread), 1e-8)
