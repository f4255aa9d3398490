"""Checkpoints: everything needed to continue a run exactly, in one atomically replaced file.

``checkpoint_final.pt`` is rewritten after every round (a crash loses at most the round in
progress); ``checkpoint_best.pt`` when the mean validation Dice improves. Each holds the client
states (FE, BE, CRDMs, optimiser, sampler), the server state (SS copies, discriminators,
optimisers, averaged shared weights), the RNG states, the run config and the plan's digest,
which ``--resume`` and the predictor check before trusting the weights.

Every ``.pt`` mucald writes holds plain data only (tensors, dicts, lists, tuples, str, int, float,
bool, None) and is read back through ``load_plain`` with ``weights_only=True``: a file from
another party can then carry weights but never code that runs on loading.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mucald_unet.config import without_execution_settings
from mucald_unet.errors import TrainingError
from mucald_unet.training.augmentation import augmentation_rng_state, restore_augmentation_rng_state
from planners.plans import (SHARED_PLAN_FILE, Plans, document_digest, federation_digest, load_plans, load_shared_plan,
                            plans_to_dict, shared_plan_to_dict)
from preprocessing.atomic import atomic_output

FINAL = "checkpoint_final.pt"
BEST = "checkpoint_best.pt"
FORMAT_VERSION = 2  # 2: plain data only (format 1 stored numpy's RNG state, which needs code to load)
KIND = "checkpoint"  # a client export (inference/model_export.py) says "client-export"
PLAIN_SCALARS = (str, int, float, bool, type(None))  # exact types: np.float64 subclasses float but is not plain
TORCH_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device)  # weights_only reads these too


def plans_digest(plans: Plans) -> str:
    return document_digest(plans_to_dict(plans))


def site_plans_digest(plans: Plans, site: str) -> str:
    """What a site and the server must agree on: the shared federation plan and that site's own plan
    (a site's copy of the other sites' plans does not matter to them)."""
    document = plans_to_dict(plans)
    return document_digest({"federation": document["federation"], "client": document["clients"][site]})


def join_digests(plans: Plans, site: str) -> dict[str, str]:
    """What a site tells the server at the join about the plan it trains: its own and the shared one."""
    return {"plans_digest": site_plans_digest(plans, site),
            "federation_digest": federation_digest(plans.federation)}


def shared_plan_digest(path: Path) -> str:
    """A run's record of its plan: the whole plans.json's digest, or a server's federation.json's."""
    if Path(path).name == SHARED_PLAN_FILE:
        return document_digest(shared_plan_to_dict(load_shared_plan(path)))
    return plans_digest(load_plans(path))




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
        return {"format_version": FORMAT_VERSION, "kind": KIND, **self.__dict__}


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
    save_plain(path, checkpoint.to_dict())


def load_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint. Fix: train first (mucald_train), or drop --resume.")
    return checkpoint_from_dict(load_plain(path, device), path)


def checkpoint_from_dict(data: Any, path: Path) -> Checkpoint:
    """A loaded file's content as a checkpoint, or a TrainingError saying what the file is instead."""
    version = data.get("format_version") if isinstance(data, dict) else None
    kind = data.get("kind", KIND) if isinstance(data, dict) else None
    if isinstance(kind, str) and kind != KIND:
        raise TrainingError(f"{path}: a mucald {kind} file, not a full training checkpoint. Fix: resume from "
                            f"the run's {FINAL}.")
    if isinstance(version, int) and version < FORMAT_VERSION:
        raise TrainingError(f"{path}: a mucald checkpoint of format {version}; this version reads format "
                            f"{FORMAT_VERSION} only. Fix: retrain (mucald_train without --resume).")
    names = [f.name for f in fields(Checkpoint)]
    if version != FORMAT_VERSION or any(name not in data for name in names):
        raise TrainingError(f"{path}: not a mucald checkpoint of format {FORMAT_VERSION}. Fix: train again.")
    return Checkpoint(**{name: data[name] for name in names})


# ---- plain torch files ------------------------------------------------------------------------
def save_plain(path: Path, data: Any) -> None:
    """Write ``data`` atomically as a torch file that ``load_plain`` can read: numpy scalars and
    arrays become Python numbers and lists; any other non-plain object is a bug, named here."""
    plain = plain_data(data)
    with atomic_output(path) as tmp:
        torch.save(plain, tmp)


def plain_data(value: Any, where: str = "") -> Any:
    """``value`` with numpy numbers and arrays as Python ones; containers without any come back as
    they are (a state dict keeps its OrderedDict type and version metadata)."""
    if type(value) in PLAIN_SCALARS or isinstance(value, TORCH_LEAVES):
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if type(value) in (dict, OrderedDict):
        items = {k: plain_data(v, f"{where}.{k}") for k, v in value.items()}
        if all(items[k] is v for k, v in value.items()):
            return value
        copy = type(value)(items)
        if hasattr(value, "_metadata"):
            copy._metadata = value._metadata
        return copy
    if type(value) in (list, tuple):
        items = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    raise TypeError(f"{where or 'the data'}: a {type(value).__qualname__} cannot go into a plain torch file "
                    "(weights_only loading would refuse it). Store it as tensors, dicts, lists and numbers.")


def load_plain(path: Path, device: str = "cpu") -> Any:
    """The one way mucald reads a ``.pt``: ``weights_only=True``, so that nothing in it is executed.
    A file that would need code to load is refused with a TrainingError that says so."""
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_objects(path, str(err))
        if not refused:  # garbage (an opcode it does not know), not an object it would have to run
            raise TrainingError(f"{path}: {_UNREADABLE} (UnpicklingError). {_UNREADABLE_FIX}") from None
        raise TrainingError(_refusal(path, refused)) from None
    except Exception as err:  # a truncated or foreign file: say which, not where in pickle it broke
        raise TrainingError(f"{path}: {_UNREADABLE} ({type(err).__name__}). {_UNREADABLE_FIX}") from None


_UNREADABLE = "not a readable mucald checkpoint, export or capture"
_UNREADABLE_FIX = "Fix: delete it and write it again (mucald_train, mucald_export)."


def _refused_objects(path: Path, message: str) -> list[str]:
    """What the file asks to run: from its pickle's opcodes (read, never run), else torch's message."""
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - e.g. the legacy non-zip format, which it cannot scan
        names = []
    return names or re.findall(r"Unsupported global: GLOBAL (\S+)", message)[:1]


def _refusal(path: Path, refused: list[str]) -> str:
    shown = ", ".join(refused[:4]) + (", ..." if len(refused) > 4 else "")
    older = (f"; checkpoints of format 1 held such numpy objects, so it may just be older than format "
             f"{FORMAT_VERSION}" if all(name.startswith("numpy.") for name in refused) else "")
    return (f"{path}: not a plain-weights mucald checkpoint (loading it would run {shown}): it may contain "
            f"code, and it was not executed{older}. Fix: obtain the model as a mucald_export file, or retrain "
            "(mucald_train).")


def check_compatible(checkpoint: Checkpoint, path: Path, config: dict[str, Any], digest: str) -> None:
    """Refuse a checkpoint made under another plan or with other settings, the length included.

    Only where and in what precision it computes may change (``EXECUTION_SETTINGS``): the
    auxiliary warm-up, ramp and adversarial weight are defined over the run's whole length, so a
    resumed run with other ``rounds`` would not equal any uninterrupted run.
    """
    if checkpoint.plans_digest != digest:
        raise TrainingError(f"{path} was trained under a different plans.json (digest "
                            f"{checkpoint.plans_digest}, now {digest}). Fix: start a new run without --resume "
                            "or restore the plan it was made with.")
    before, now = without_execution_settings(checkpoint.config), without_execution_settings(config)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if "rounds" in changed:
        raise TrainingError(f"{path} is a run of {before.get('rounds')} rounds; --rounds {now.get('rounds')} would "
                            "shift its auxiliary warm-up, ramp and adversarial weight, which span the whole run. "
                            f"Fix: resume with --rounds {before.get('rounds')}, or start a new run of "
                            f"{now.get('rounds')} rounds without --resume.")
    if changed:
        details = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise TrainingError(f"{path} was made with other settings ({details}). Fix: resume with the same "
                            "settings, or start a new run without --resume.")
