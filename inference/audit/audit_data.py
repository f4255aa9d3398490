"""What the audit attacks and what the attacker may use, for one client of a trained run.

Members are the client's training cases of the run's fold, non-members its held-out fold; the
attacked private images are one foreground-centred patch per member case (a slice under a 2D plan),
in the network's input space; the attacker's auxiliary images are patches of the held-out cases
(same distribution, disjoint from what is attacked). Intensities are scored in a fixed window
(the auxiliary images' 0.5 and 99.5 percentiles mapped to 0..1), the same for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mucald_unet.training.data import (PatchBatch, PatchSampler, TrainingCase, fold_split, list_case_ids,
                                      load_training_cases)
from planners.pipeline import client_cases_folder, expected_cases
from planners.plans import ClientPlan, load_plans
from preprocessing.dataset import RawDataset
from preprocessing.runner import preprocess_dataset


@dataclass(frozen=True)
class IntensityWindow:
    low: float
    high: float

    def to_unit(self, images: np.ndarray) -> np.ndarray:
        return np.clip((images - self.low) / max(self.high - self.low, 1e-8), 0.0, 1.0).astype(np.float32)

    @classmethod
    def of(cls, images: np.ndarray) -> "IntensityWindow":
        low, high = np.percentile(images, [0.5, 99.5])
        return cls(float(low), float(high))


@dataclass(frozen=True, eq=False)
class ClientAuditData:
    plan: ClientPlan
    members: list[TrainingCase]
    non_members: list[TrainingCase]
    private: np.ndarray  # (N, C, *patch): one patch per attacked member case
    private_ids: list[str]
    auxiliary: np.ndarray  # (M, C, *patch): the attacker's images, from non-member cases
    window: IntensityWindow
    private_labels: np.ndarray  # (N, 1, *patch): what label inference tries to recover
    auxiliary_labels: np.ndarray  # (M, 1, *patch): labelled auxiliary data (model completion)
    test_non_members: list[TrainingCase] = field(default_factory=list)  # labelled imagesTs: more non-members


def load_test_non_members(raw_root: Path, plan: ClientPlan, folder: Path) -> list[TrainingCase]:
    """The client's labelled test cases (imagesTs with labelsTs), preprocessed with its plan into
    ``folder`` (resumable): non-members that no fold ever trained on. None without labelsTs."""
    dataset = RawDataset.open(raw_root, plan.dataset_name)
    labelled = [c for c in dataset.case_ids("Ts") if dataset.label_file(c, "Ts").is_file()]
    if not labelled:
        return []
    preprocess_dataset(dataset, plan.case_preprocessing(), folder, "Ts")
    return load_training_cases(folder, labelled)


def load_audit_data(plans_path: Path, plan: ClientPlan, fold: int, max_private: int, aux_patches: int,
                    seed: int) -> ClientAuditData:
    folder = client_cases_folder(plans_path, plan)
    expected = expected_cases(plans_path, load_plans(plans_path), plan.dataset_name)
    train_ids, held_out_ids = fold_split(list_case_ids(folder, expected), fold, source=folder)
    members = load_training_cases(folder, train_ids, expected)
    non_members = load_training_cases(folder, held_out_ids, expected)
    rng = np.random.default_rng(seed)
    attacked = [members[i] for i in sorted(rng.choice(len(members), min(max_private, len(members)), replace=False))]
    patches = [_patch(case, plan, rng, foreground=True) for case in attacked]
    private, private_labels = np.concatenate([p.images for p in patches]), np.concatenate([p.labels for p in patches])
    sampler = PatchSampler(non_members, plan.patch_size, aux_patches, 0.5, plan.slice_axis, rng)
    auxiliary = sampler.sample_batch()
    return ClientAuditData(plan, members, non_members, private, [c.case_id for c in attacked], auxiliary.images,
                           IntensityWindow.of(auxiliary.images), private_labels, auxiliary.labels)


def _patch(case: TrainingCase, plan: ClientPlan, rng: np.random.Generator, foreground: bool) -> PatchBatch:
    sampler = PatchSampler([case], plan.patch_size, 1, 1.0 if foreground else 0.0, plan.slice_axis, rng)
    return sampler.sample_batch()
