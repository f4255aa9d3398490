"""Run the audit's attacks on one client of one trained run; each attack's result is stored as soon
as it is done (``results/<run>/<client>/<attack>.json`` plus the images it reconstructed), so an
interrupted audit resumes with the next attack.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from inference.audit.audit_data import ClientAuditData, load_audit_data, load_test_non_members
from inference.audit.image_metrics import summarise
from inference.audit.inversion import (InversionBudget, decode, train_decoder, whitebox_inversion)
from inference.audit.label_inference import label_inference
from inference.audit.membership import (balanced_halves, evaluate_scores, lira_offline_scores, statistics)
from inference.audit.transmissions import averaged_transmissions, transmitted, undefended
from inference.errors import PredictionError
from inference.model import ModelSource, TrainedClientModel, load_client_model
from inference.predictor import PredictionSettings, Predictor
from mucald_unet.defences.distance_correlation import u_distance_correlation_sqr
from mucald_unet.training.checkpoint import FINAL
from mucald_unet.training.losses import segmentation_loss
from mucald_unet.training.trainer import CaseSelection, FederatedTrainer, run_is_finished
from planners.plans import load_plans
from preprocessing.atomic import atomic_output, write_json_atomic

ATTACKS = ("inverse", "whitebox", "mia", "dcor", "labels")
RECONSTRUCTIONS = ("prior", "inverse", "inverse-adaptive", "inverse-averaged", "whitebox")


@dataclass(frozen=True)
class AuditConfig:
    attacks: tuple[str, ...] = ATTACKS
    fold: int = 0
    checkpoint: str = "final"
    private_cases: int = 16  # member cases whose transmissions are attacked
    aux_patches: int = 192  # the attacker's auxiliary images (patches of non-member cases)
    shadows: int = 4  # LiRA shadow models per client (even)
    budget: InversionBudget = field(default_factory=InversionBudget)
    seed: int = 0
    device: str = "cpu"
    raw_root: Path | None = None  # where the clients' labelled imagesTs add non-members to membership inference

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attacks) - set(ATTACKS))
        if unknown:
            raise PredictionError(f"unknown attack(s) {', '.join(unknown)}. Fix: --attacks with any of "
                                  f"{','.join(ATTACKS)}.")
        if "mia" in self.attacks and (self.shadows < 2 or self.shadows % 2):
            raise PredictionError(f"--shadows {self.shadows}: LiRA needs an even number >= 2 (4 or more advised).")


class AuditStore:
    """Where results live: one JSON (and optional npz of images) per run, client and attack."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, run: str, client: str) -> Path:
        return self.root / "results" / run / client

    def has(self, run: str, client: str, attack: str) -> bool:
        return (self.folder(run, client) / f"{attack}.json").is_file()

    def save(self, run: str, client: str, attack: str, result: dict,
             images: dict[str, np.ndarray] | None = None) -> None:
        folder = self.folder(run, client)
        if images:
            with atomic_output(folder / f"{attack}_images.npz") as tmp:
                with open(tmp, "wb") as handle:
                    np.savez_compressed(handle, **images)
        write_json_atomic(folder / f"{attack}.json", result)  # last: its presence marks the attack done

    def load(self, run: str, client: str, attack: str) -> dict:
        return json.loads((self.folder(run, client) / f"{attack}.json").read_text())

    def images(self, run: str, client: str, attack: str) -> dict[str, np.ndarray]:
        path = self.folder(run, client) / f"{attack}_images.npz"
        return dict(np.load(path)) if path.is_file() else {}

    def shadow_folder(self, run: str, client: str, index: int) -> Path:
        return self.root / "shadows" / run / client / f"shadow_{index}"


@dataclass(frozen=True)
class AuditTarget:
    plans_path: Path
    results_root: Path
    run: str
    client: str


def audit_client(target: AuditTarget, config: AuditConfig, store: AuditStore,
                 on_attack: Callable[[str, str, str], None] = lambda run, client, attack: None) -> None:
    """Every requested attack on one client of one run, skipping those already stored."""
    todo = [a for a in config.attacks if not store.has(target.run, target.client, a)]
    if not todo:
        return
    source = ModelSource(target.run, config.fold, config.checkpoint)
    model = load_client_model(target.plans_path, target.client,
                              source.checkpoint_path(target.results_root, target.plans_path), config.device)
    plan = load_plans(target.plans_path).client(target.client)
    data = load_audit_data(target.plans_path, plan, config.fold, config.private_cases, config.aux_patches, config.seed)
    if "mia" in todo and config.raw_root is not None:
        tests = load_test_non_members(config.raw_root, plan, store.root / "test_cases" / target.client)
        data = replace(data, test_non_members=tests)
    for attack in todo:
        on_attack(target.run, target.client, attack)
        torch.manual_seed(config.seed)
        result, images = ATTACK_RUNNERS[attack](model, data, config, target, store)
        store.save(target.run, target.client, attack, {"attack": attack, **result}, images)


# ---- the attacks ----------------------------------------------------------------------------
def _reconstruction_result(reconstructions: dict[str, torch.Tensor], data: ClientAuditData,
                           seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    originals, gallery = data.window.to_unit(data.private), data.window.to_unit(data.auxiliary)
    scored = {name: summarise(data.window.to_unit(images.numpy()), originals, seed, gallery)
              for name, images in reconstructions.items()}
    result = {"private_cases": data.private_ids, "gallery_size": len(originals) + len(gallery),
              "scores": {name: {metric: est.to_dict() for metric, est in metrics.items()}
                         for name, metrics in scored.items()}}
    images = {"original": originals, **{name: data.window.to_unit(r.numpy()) for name, r in reconstructions.items()}}
    return result, images


def _prior(data: ClientAuditData) -> torch.Tensor:
    """The prior-only attacker's answer: the auxiliary mean image, for every private image."""
    return torch.from_numpy(data.auxiliary).mean(0, keepdim=True).expand(len(data.private), -1, -1, -1).clone()


def run_inverse(model: TrainedClientModel, data: ClientAuditData, config: AuditConfig, target: AuditTarget,
                store: AuditStore) -> tuple[dict, dict]:
    budget = config.budget
    aux, private = torch.from_numpy(data.auxiliary), torch.from_numpy(data.private)
    observed = transmitted(model, private)
    plain = train_decoder(undefended(model, aux), aux, budget, config.seed)
    draws = torch.cat([transmitted(model, aux) for _ in range(budget.adaptive_draws)])
    adaptive = train_decoder(draws, aux.repeat(budget.adaptive_draws, *([1] * (aux.ndim - 1))), budget, config.seed)
    reconstructions = {"prior": _prior(data), "inverse": decode(plain, observed),
                       "inverse-adaptive": decode(adaptive, observed),
                       "inverse-averaged": decode(adaptive, averaged_transmissions(model, private,
                                                                                   budget.averaging_draws))}
    return _reconstruction_result(reconstructions, data, config.seed)


def run_whitebox(model: TrainedClientModel, data: ClientAuditData, config: AuditConfig, target: AuditTarget,
                 store: AuditStore) -> tuple[dict, dict]:
    aux, private = torch.from_numpy(data.auxiliary), torch.from_numpy(data.private)
    found = whitebox_inversion(model, transmitted(model, private), _prior(data), config.budget, config.seed, aux)
    return _reconstruction_result({"prior": _prior(data), "whitebox": found}, data, config.seed)


def run_dcor(model: TrainedClientModel, data: ClientAuditData, config: AuditConfig, target: AuditTarget,
             store: AuditStore) -> tuple[dict, dict]:
    private = torch.from_numpy(data.private).double()
    return {"transmitted": float(u_distance_correlation_sqr(private, transmitted(model, private.float()).double())),
            "undefended": float(u_distance_correlation_sqr(private, undefended(model, private.float()).double())),
            "samples": len(private)}, {}


def run_membership(model: TrainedClientModel, data: ClientAuditData, config: AuditConfig, target: AuditTarget,
                   store: AuditStore) -> tuple[dict, dict]:
    """Shadows train on halves of the fold's cases; the test cases (never trained on by anyone) are
    scored as non-members under the target and as OUT cases under every shadow."""
    slice_axis = data.plan.slice_axis
    predictor = Predictor(model, PredictionSettings(mirror=False, device=config.device))
    population = data.members + data.non_members
    scored = population + data.test_non_members
    members = statistics(predictor.predict_logits, data.members, slice_axis)
    non_members = statistics(predictor.predict_logits, data.non_members + data.test_non_members, slice_axis)
    inside = balanced_halves(len(population), config.shadows, config.seed)
    shadow = np.stack([_shadow_statistics(model, population, scored, inside[s], s, config, target, store)
                       for s in range(config.shadows)])
    inside_scored = np.c_[inside, np.zeros((config.shadows, len(data.test_non_members)), dtype=bool)]
    lira = lira_offline_scores(np.r_[members, non_members], shadow, inside_scored)
    return {"loss_threshold": evaluate_scores(members, non_members, config.seed).to_dict(),
            "lira_offline": evaluate_scores(lira[: len(members)], lira[len(members):], config.seed).to_dict(),
            "shadows": config.shadows, "members": len(members), "held_out_non_members": len(data.non_members),
            "test_non_members": len(data.test_non_members)}, {}


def _shadow_statistics(model: TrainedClientModel, population: list, scored: list, inside: np.ndarray, index: int,
                       config: AuditConfig, target: AuditTarget, store: AuditStore) -> np.ndarray:
    """Train (or reuse) one shadow model like the target, on its half of the population; score ``scored``."""
    folder = store.shadow_folder(target.run, target.client, index)
    train = tuple(c.case_id for c, keep in zip(population, inside) if keep)
    held_out = tuple(c.case_id for c, keep in zip(population, inside) if not keep)[:2]
    shadow_config = replace(model.config, seed=config.seed + 1 + index, device=config.device)
    if not run_is_finished(folder):  # a shadow killed mid-run has a checkpoint but is no shadow yet
        FederatedTrainer(target.plans_path, [target.client], shadow_config, folder,
                         case_selection={target.client: CaseSelection(train, held_out)}
                         ).run(resume=(folder / FINAL).is_file())
    shadow = load_client_model(target.plans_path, target.client, folder / FINAL, config.device)
    predictor = Predictor(shadow, PredictionSettings(mirror=False, device=config.device))
    return statistics(predictor.predict_logits, scored, model.plan.slice_axis)


def run_labels(model: TrainedClientModel, data: ClientAuditData, config: AuditConfig, target: AuditTarget,
               store: AuditStore) -> tuple[dict, dict]:
    private = (torch.from_numpy(data.private), torch.from_numpy(data.private_labels.astype(np.int64)))
    auxiliary = (torch.from_numpy(data.auxiliary), torch.from_numpy(data.auxiliary_labels.astype(np.int64)))
    loss = segmentation_loss(model.config.losses.ce_in_seg)
    return label_inference(model, private, auxiliary, loss, config.seed), {}


ATTACK_RUNNERS = {"inverse": run_inverse, "whitebox": run_whitebox, "mia": run_membership, "dcor": run_dcor,
                  "labels": run_labels}
