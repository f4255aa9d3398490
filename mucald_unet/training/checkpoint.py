"""Checkpoints: everything needed to continue a run exactly, in one atomically replaced file.

``checkpoint_final.pt`` is rewritten after every round (a crash loses at most the round in
progress); ``checkpoint_best.pt`` when the mean validation Dice improves. Each holds the client
states (FE, BE, CRDMs, optimiser, sampler), the server state (SS copies, discriminators,
optimisers, averaged shared weights), the RNG states, the run config and the plan's digest,
which ``--resume`` and the predictor check before trusting the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mucald_unet.errors import TrainingError
from mucald_unet.training.augmentation import augmentation_rng_state, restore_augmentation_rng_state
from planners.plans import Plans, plans_to_dict
from preprocessing.atomic import atomic_output

FINAL = "checkpoint_final.pt"
BEST = "checkpoint_best.pt"
FORMAT_VERSION = 1


def plans_digest(plans: Plans) -> str:
    text = json.dumps(plans_to_dict(plans), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Checkpoint:
    rounds_done: int
    config: dict[str, Any]
    plans_digest: str
    clients: dict[str, dict]
    server: dict
    rng: dict[str, Any]
    best_score: float
    history: list[dict]  # per round: mean validation Dice, for best tracking and summaries

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **self.__dict__}


def capture_rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "augmentation": augmentation_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """RNG states are CPU byte tensors even when the checkpoint was mapped onto a GPU."""
    torch.set_rng_state(state["torch"].cpu())
    restore_augmentation_rng_state(state["augmentation"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    with atomic_output(path) as tmp:
        torch.save(checkpoint.to_dict(), tmp)


def load_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint. Fix: train first (mucald_train), or drop --resume.")
    try:
        data = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which, not where in pickle it broke
        raise TrainingError(f"{path}: not a readable mucald checkpoint ({type(err).__name__}). "
                            "Fix: delete it and train again.") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise TrainingError(f"{path}: not a mucald checkpoint of format {FORMAT_VERSION}. Fix: train again.")
    data.pop("format_version")
    return Checkpoint(**data)


def check_compatible(checkpoint: Checkpoint, path: Path, config: dict[str, Any], digest: str) -> None:
    """Refuse a checkpoint made under another plan or with other settings (rounds may grow)."""
    if checkpoint.plans_digest != digest:
        raise TrainingError(f"{path} was trained under a different plans.json (digest "
                            f"{checkpoint.plans_digest}, now {digest}). Fix: start a new run without --resume "
                            "or restore the plan it was made with.")
    ignore = {"rounds", "device"}
    before = {k: v for k, v in checkpoint.config.items() if k not in ignore}
    now = {k: v for k, v in config.items() if k not in ignore}
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        details = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise TrainingError(f"{path} was made with other settings ({details}). Fix: resume with the same "
                            "settings, or start a new run without --resume.")
