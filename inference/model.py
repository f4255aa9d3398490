"""A trained client's whole network, loaded once for offline prediction from a run's checkpoint
or from a client export (``mucald_export``: that client's weights only).

The hospital's own parts (FE, both CRDMs, BE) and the server segment it trained with (its copy
of SS after the last aggregation) are rebuilt from the plan and the run's settings, then loaded.
Files are read with ``load_plain`` (nothing in them runs); files made under another plan, or for
other clients, are refused with the file named.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from inference.errors import PredictionError
from mucald_unet.config import TrainingConfig
from mucald_unet.devices import compute_context
from mucald_unet.errors import TrainingError
from mucald_unet.federation.client_network import ClientNetwork
from mucald_unet.networks.segments import build_middle
from mucald_unet.training.checkpoint import (BEST, FINAL, FORMAT_VERSION, checkpoint_from_dict, load_plain,
                                             plans_digest)
from mucald_unet.training.trainer import federation_results, run_folder, trained_runs
from planners.plans import ClientPlan, Plans, load_plans

CHECKPOINT_ALIASES = {"best": BEST, "final": FINAL}
EXPORT_KIND = "client-export"


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

    def existing_checkpoint(self, results_root: Path, plans_path: Path) -> Path:
        """``checkpoint_path``, or a PredictionError naming the folder and the runs that do exist."""
        path = self.checkpoint_path(results_root, plans_path)
        if path.is_file():
            return path
        if self.checkpoint not in CHECKPOINT_ALIASES:
            raise PredictionError(f"{path}: no such file. Fix: pass a checkpoint or mucald_export file, "
                                  "or best|final with --run and --fold.")
        runs = trained_runs(federation_results(results_root, plans_path), self.fold, path.name)
        raise PredictionError(f"{path.parent}: no {path.name} for run {self.run!r}, fold {self.fold} (runs with "
                              f"one: {', '.join(runs) or 'none'}). Fix: pass one of them with --run, or train it "
                              "(mucald_train -d ...).")


@dataclass(frozen=True)
class ClientWeights:
    """What prediction needs of one client: its own parts, its server segment, the run's settings.

    As a file (``to_dict``) this is a client export: no optimiser, sampler or RNG state, no
    discriminators, no history and nothing of any other client.
    """

    client: str
    config: dict[str, Any]
    plans_digest: str
    modules: dict[str, dict]  # front_end, back_end and the CRDMs, as ClientNetwork.parts names them
    server_segment: dict

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "kind": EXPORT_KIND, "client": self.client,
                "config": self.config, "plans_digest": self.plans_digest, "modules": self.modules,
                "server_segment": self.server_segment}


def read_client_weights(path: Path, client: str, plans: Plans, plans_path: Path,
                        device: str = "cpu") -> ClientWeights:
    """One client's weights from a full checkpoint or an export, checked against the plan."""
    data = _read_plain(path, device)
    if isinstance(data, dict) and data.get("kind") == EXPORT_KIND:
        weights = _weights_from_export(data, path)
    else:
        try:
            checkpoint = checkpoint_from_dict(data, path)
        except TrainingError as err:
            raise PredictionError(str(err)) from None
        if client not in checkpoint.clients:
            raise PredictionError(f"{path} holds no weights for {client} (clients: "
                                  f"{', '.join(sorted(checkpoint.clients))}). Fix: pick the run that trained it.")
        try:
            weights = ClientWeights(client, checkpoint.config, checkpoint.plans_digest,
                                    checkpoint.clients[client]["modules"], checkpoint.server["segments"][client])
        except (KeyError, TypeError) as err:
            raise PredictionError(f"{path}: no complete model of {client} in it (missing {err}). Fix: use a "
                                  "checkpoint of a finished round of this version (mucald_train).") from None
    _check_matches_plan(weights, path, plans, plans_path, client)
    return weights


class TrainedClientModel(nn.Module):
    """FE -> CRDM1 -> SS -> CRDM2 -> BE of one client, in eval mode; forward gives class logits."""

    def __init__(self, network: ClientNetwork, server_segment: nn.Module, plan: ClientPlan,
                 config: TrainingConfig) -> None:
        super().__init__()
        self.network, self.server_segment = network, server_segment
        self.plan, self.config = plan, config
        self.eval()

    def forward(self, images: Tensor, noise_generator: torch.Generator | None = None) -> Tensor:
        """Float32 logits, computed at the precision the run trained and validated at."""
        with compute_context(self.config.precision, images.device):
            return self.network.segment(images, self.server_segment, noise_generator).float()

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
    """``checkpoint_path`` is a run's checkpoint or a ``mucald_export`` file of this client."""
    plans = load_plans(plans_path)
    plan = plans.client(client)
    weights = read_client_weights(checkpoint_path, plan.dataset_name, plans, plans_path, device)
    config = replace(TrainingConfig.from_dict(weights.config), device=device)
    network = ClientNetwork(plans.federation, plan, config)
    segment = build_middle(plans.federation, config)
    try:
        network.load_parts(weights.modules)
        segment.load_state_dict(weights.server_segment)
    except (KeyError, RuntimeError) as err:
        raise PredictionError(f"{checkpoint_path}: weights do not fit the network this plan builds "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:160]}). "
                              "Fix: use a checkpoint trained under this plan with this version.") from None
    return TrainedClientModel(network, segment, plan, config).to(device)


def _read_plain(path: Path, device: str) -> Any:
    if not Path(path).is_file():
        raise PredictionError(f"{path}: no checkpoint. Fix: train this run first (mucald_train -d ...), or "
                              "pick another with --checkpoint best|final|PATH, --run and --fold.")
    try:
        return load_plain(path, device)
    except TrainingError as err:
        raise PredictionError(str(err)) from None


def _weights_from_export(data: dict[str, Any], path: Path) -> ClientWeights:
    names = ("client", "config", "plans_digest", "modules", "server_segment")
    if data.get("format_version") != FORMAT_VERSION or any(name not in data for name in names):
        raise PredictionError(f"{path}: a mucald client export of format {data.get('format_version')!r}, not "
                              f"{FORMAT_VERSION}. Fix: export the model again with this version (mucald_export).")
    return ClientWeights(**{name: data[name] for name in names})


def _check_matches_plan(weights: ClientWeights, path: Path, plans: Plans, plans_path: Path, client: str) -> None:
    if weights.plans_digest != plans_digest(plans):
        raise PredictionError(f"{path} was trained under a different plan than {plans_path} (digest "
                              f"{weights.plans_digest}, plan now {plans_digest(plans)}). Fix: predict with "
                              "the plans it was trained under, or retrain after re-planning.")
    if weights.client != client:
        raise PredictionError(f"{path} is the model of {weights.client}, not of {client}. Fix: predict "
                              f"with -d {weights.client}, or export {client}'s model (mucald_export -d ...).")
