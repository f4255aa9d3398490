"""A deployed run: the federation trained as separate FLARE processes over mutual TLS, its records in
a run folder.

``train_on_loopback`` (``mucald_train --engine flare-loopback``): every site on this machine, ending
in the same run folder an in-process run writes, so that ``mucald_predict --run NAME`` and the audit
read it unchanged. ``train_from_kits`` (``mucald_server``): the server's side of a federation on
separate machines, started from its kit; each hospital's site runs from its own kit
(``mucald_client``) and keeps its records on its own machine.

The sites' own records stay in ``<run folder>/sites/`` (``server/`` and, on loopback, one folder per
client) and, on loopback, FLARE's workspace (startup kits, site logs) in ``<run folder>/flare/``. The
checkpoint of a loopback run joins both sides' states, which only a single machine can do: on
separate machines each side keeps its own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mucald_unet.config import TrainingConfig, without_execution_settings
from mucald_unet.deployment import KITS_ENGINE, LOOPBACK_ENGINE
from mucald_unet.deployment.flare_apps import LOG_FILE, SERVER_FOLDER, STATE_FILE
from mucald_unet.deployment.flare_job import FlareJob, run_from_kits, run_on_loopback
from mucald_unet.deployment.site_kits import SITES_FOLDER, Kit
from mucald_unet.errors import TrainingError
from mucald_unet.training.checkpoint import (FINAL, Checkpoint, capture_rng_state, load_plain, plans_digest,
                                             save_checkpoint, shared_plan_digest)
from mucald_unet.training.trainer import CONFIG_FILE, TrainingSummary
from planners.plans import load_plans
from preprocessing.atomic import write_json_atomic

FLARE_FOLDER = "flare"


@dataclass(frozen=True)
class ServerKits:
    """What the server's machine holds of a provisioning: its own kit, and the admin's, to submit."""

    server: Kit
    admin: Kit


def train_on_loopback(plans_path: Path, clients: Sequence[str], config: TrainingConfig, run_folder: Path,
                      overwrite: bool = False, threads: int = 1, narrow_wire: bool = False,
                      call_timeout: float = 600.0, resume: bool = False) -> TrainingSummary:
    """``call_timeout``: seconds a step's message or a round phase may take; a site silent for longer
    is dropped from that round. ``resume`` continues a run that stopped (every side from its own saved
    state), with the settings it was started with."""
    run_folder = Path(run_folder)
    record = _start_run_folder(plans_path, clients, config, run_folder, LOOPBACK_ENGINE, overwrite, resume)
    shutil.rmtree(run_folder / FLARE_FOLDER, ignore_errors=True)  # FLARE is provisioned afresh for every run
    sites = run_folder / SITES_FOLDER
    job = FlareJob(Path(plans_path), tuple(clients), config, sites, call_timeout, threads, narrow_wire, resume)
    record["flare_jobs"] += run_on_loopback(job, run_folder / FLARE_FOLDER)  # more than one: a crash survived
    checkpoint = joined_checkpoint(plans_path, clients, config, sites)
    write_json_atomic(run_folder / CONFIG_FILE, record)
    save_checkpoint(run_folder / FINAL, checkpoint)
    final = checkpoint.history[-1]
    return TrainingSummary(run_folder, checkpoint.rounds_done, final["per_client"], checkpoint.best_score)


def train_from_kits(plans_path: Path, clients: Sequence[str], config: TrainingConfig, run_folder: Path,
                    kits: ServerKits, run_path: str, overwrite: bool = False, threads: int = 1,
                    narrow_wire: bool = False, call_timeout: float = 600.0, resume: bool = False) -> TrainingSummary:
    """The server's side: its records in ``<run folder>/sites/server``; each client site keeps its own
    under ``<its results>/<run_path>/sites/<site>``. The summary is what the server was told: each
    site's validation Dice per round. ``threads``: the server's torch threads (each site sets its own)."""
    run_folder = Path(run_folder)
    record = _start_run_folder(plans_path, clients, config, run_folder, KITS_ENGINE, overwrite, resume)
    sites = run_folder / SITES_FOLDER
    job = FlareJob(Path(plans_path), tuple(clients), config, sites, call_timeout, threads, narrow_wire, resume,
                   sites_from_kits=True, run_path=run_path)
    record["flare_jobs"] += run_from_kits(job, kits.server, kits.admin)
    write_json_atomic(run_folder / CONFIG_FILE, record)
    return server_summary(run_folder)


def server_summary(run_folder: Path) -> TrainingSummary:
    """Rounds done, the last round's Dice per site and the best round's mean, from the server's log."""
    rounds = [r for r in _read_log(Path(run_folder) / SITES_FOLDER / SERVER_FOLDER / LOG_FILE) if r["event"] == "round"]
    if not rounds:
        raise TrainingError(f"{run_folder}: the server logged no finished round. Fix: read its log.txt.")
    dice = [{site: answer["mean_val_dice"] for site, answer in r["clients"].items()} for r in rounds]
    return TrainingSummary(Path(run_folder), rounds[-1]["round"] + 1, dice[-1],
                           max(float(np.mean(list(d.values()))) for d in dice))


def _start_run_folder(plans_path: Path, clients: Sequence[str], config: TrainingConfig, run_folder: Path,
                      engine: str, overwrite: bool, resume: bool) -> dict:
    """The run's record, written before training (so a crashed run can be resumed), after the checks
    that ``resume`` and ``overwrite`` ask for."""
    if resume and overwrite:
        raise TrainingError("--resume and --overwrite contradict each other. Fix: give one of them.")
    digest = shared_plan_digest(Path(plans_path))
    record = {"run_name": run_folder.parent.name, "training": config.to_dict(), "plans": str(plans_path),
              "plans_digest": digest, "clients": list(clients), "engine": engine, "flare_jobs": []}
    if resume:
        record["flare_jobs"] = _resumable(run_folder, record)
    elif _holds_a_run(run_folder) and not overwrite:
        raise TrainingError(f"{run_folder} already holds a run. Fix: add --resume to continue it (a stopped run), "
                            "or --overwrite to discard it and train again.")
    else:
        shutil.rmtree(run_folder / SITES_FOLDER, ignore_errors=True)
    run_folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_folder / CONFIG_FILE, record)
    return record


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _holds_a_run(run_folder: Path) -> bool:
    """A finished run, or one that stopped after saving a round."""
    return (run_folder / FINAL).is_file() or (run_folder / SITES_FOLDER / SERVER_FOLDER / STATE_FILE).is_file()


def _resumable(run_folder: Path, record: dict) -> list[str]:
    """The FLARE job statuses of the run to resume, or a TrainingError saying why it cannot be."""
    config_path = run_folder / CONFIG_FILE
    if not _holds_a_run(run_folder) or not config_path.is_file():
        raise TrainingError(f"{run_folder}: no deployed run to resume (no saved server state). Fix: drop --resume "
                            "to start this run, or repeat the flags of the run you meant.")
    saved = json.loads(config_path.read_text())
    saved_training = TrainingConfig.from_dict(saved["training"]).to_dict()  # settings added since: defaults
    differing = [what for what, before, now in (("training settings", without_execution_settings(saved_training),
                                                 without_execution_settings(record["training"])),
                                                ("plans.json", saved.get("plans_digest"), record["plans_digest"]),
                                                ("clients", saved.get("clients"), record["clients"]))
                 if before != now]
    if differing:
        raise TrainingError(f"{config_path}: the run was started with other {' and '.join(differing)} than this "
                            "command gives. Fix: resume with exactly the flags (-d list, plan) it was started with.")
    return list(saved.get("flare_jobs", []))


def joined_checkpoint(plans_path: Path, clients: Sequence[str], config: TrainingConfig, sites: Path) -> Checkpoint:
    """One checkpoint from the server's and every client's last saved state and their logs."""
    server = load_plain(sites / SERVER_FOLDER / STATE_FILE)
    states = {name: load_plain(sites / name / STATE_FILE) for name in clients}
    done = {name: state["rounds_done"] for name, state in states.items()} | {"server": server["rounds_done"]}
    if len(set(done.values())) != 1:
        raise TrainingError(f"the sites stopped at different rounds ({done}); the run did not finish. Fix: train "
                            "again with --overwrite.")
    logs = {name: _read_log(sites / name / LOG_FILE) for name in clients}
    history = []
    for round_index in range(server["rounds_done"]):
        # a site lost in a round has no record of it (NaN); one re-run after a restart keeps the last
        records = {name: {r["round"]: r for r in logs[name]}.get(round_index, {}) for name in clients}
        per_client = {name: r.get("mean_val_dice", float("nan")) for name, r in records.items()}
        logged = [dice for dice in per_client.values() if not np.isnan(dice)]  # none: a crashed round
        history.append({"round": round_index, "mean_val_dice": float(np.mean(logged)) if logged else float("nan"),
                        "val_loss": {name: r.get("val_loss", float("nan")) for name, r in records.items()},
                        "per_client": per_client})
    return Checkpoint(server["rounds_done"], config.to_dict(), plans_digest(load_plans(Path(plans_path))),
                      {name: state["client"] for name, state in states.items()}, server["server"],
                      capture_rng_state(), history[-1]["mean_val_dice"], history)
