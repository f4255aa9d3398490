"""A trained client's whole network, loaded once from a run's checkpoint for offline prediction.

The hospital's own parts (FE, both CRDMs, BE) and the server segment it trained with (its copy
of SS after the last aggregation) are rebuilt from the plan and the run's settings, then loaded.
Checkpoints made under another plan, or for other clients, are refused with the file named.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from inference.errors import PredictionError
from mucald_unet.config import TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.federation.client_network import ClientNetwork
from mucald_unet.networks.segments import build_server_segment
from mucald_unet.training.checkpoint import BEST, FINAL, Checkpoint, load_checkpoint, plans_digest
from mucald_unet.training.trainer import run_folder
from planners.plans import ClientPlan, Plans, load_plans

CHECKPOINT_ALIASES = {"best": BEST, "final": FINAL}


@dataclass(frozen=True)
class ModelSource:
    """Which trained weights to use: the run (method[__ablations]), fold, and checkpoint."""

    run: str = "mucald"
    fold: int = 0
    checkpoint: str = "best"  # "best", "final", or a path to a checkpoint file

    def checkpoint_path(self, results_root: Path, plans_path: Path) -> Path:
        if self.checkpoint in CHECKPOINT_ALIASES:
            return run_folder(results_root, plans_path, self.run, self.fold) / CHECKPOINT_ALIASES[self.checkpoint]
        return Path(self.checkpoint)


class TrainedClientModel(nn.Module):
    """FE -> CRDM1 -> SS -> CRDM2 -> BE of one client, in eval mode; forward gives class logits."""

    def __init__(self, network: ClientNetwork, server_segment: nn.Module, plan: ClientPlan,
                 config: TrainingConfig) -> None:
        super().__init__()
        self.network, self.server_segment = network, server_segment
        self.plan, self.config = plan, config
        self.eval()

    def forward(self, images: Tensor, noise_generator: torch.Generator | None = None) -> Tensor:
        return self.network.segment(images, self.server_segment, noise_generator)

    @property
    def adds_noise(self) -> bool:
        """Whether evaluation draws forward noise at a split point (so draws differ)."""
        return any(split.denoiser is not None and split.options.forward_noise
                   for split in self.network.splits.values())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def load_client_model(plans_path: Path, client: str, checkpoint_path: Path,
                      device: str = "cpu") -> TrainedClientModel:
    plans = load_plans(plans_path)
    plan = plans.client(client)
    checkpoint = _read_checkpoint(checkpoint_path, device)
    _check_matches_plan(checkpoint, checkpoint_path, plans, plans_path, plan.dataset_name)
    config = replace(TrainingConfig.from_dict(checkpoint.config), device=device)
    network = ClientNetwork(plans.federation, plan, config)
    segment = build_server_segment(plans.federation)
    try:
        network.load_parts(checkpoint.clients[plan.dataset_name]["modules"])
        segment.load_state_dict(checkpoint.server["segments"][plan.dataset_name])
    except (KeyError, RuntimeError) as err:
        raise PredictionError(f"{checkpoint_path}: weights do not fit the network this plan builds "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:160]}). "
                              "Fix: use a checkpoint trained under this plan with this version.") from None
    return TrainedClientModel(network, segment, plan, config).to(device)


def _read_checkpoint(path: Path, device: str) -> Checkpoint:
    if not Path(path).is_file():
        raise PredictionError(f"{path}: no checkpoint. Fix: train this run first (mucald_train -d ...), or "
                              "pick another with --checkpoint best|final|PATH, --run and --fold.")
    try:
        return load_checkpoint(path, device)
    except TrainingError as err:
        raise PredictionError(str(err)) from None


def _check_matches_plan(checkpoint: Checkpoint, path: Path, plans: Plans, plans_path: Path, client: str) -> None:
    if checkpoint.plans_digest != plans_digest(plans):
        raise PredictionError(f"{path} was trained under a different plan than {plans_path} (digest "
                              f"{checkpoint.plans_digest}, plan now {plans_digest(plans)}). Fix: predict with "
                              "the plans it was trained under, or retrain after re-planning.")
    if client not in checkpoint.clients:
        raise PredictionError(f"{path} holds no weights for {client} (clients: "
                              f"{', '.join(sorted(checkpoint.clients))}). Fix: pick the run that trained it.")
