"""The in-process federation: rounds x local epochs x iterations, validation, aggregation, checkpoints.

One ``ServerRunner`` and a ``ClientRunner`` per client (``training/runners.py``) over the in-memory
transport. Clients take their steps interleaved (step s of every client before step s + 1), as they
would run in parallel, so the server's discriminators learn from all domains in every update. After
a round: round reports and shared weights to the server, aggregation, the averaged weights back,
per-client validation, a log record per client, the curves PNG, and the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from mucald_unet.config import TrainingConfig, compose_run_name
from mucald_unet.errors import TrainingError
from mucald_unet.federation.client import SplitClient
from mucald_unet.federation.server import SplitServer
from mucald_unet.federation.transport import (CaptureRequest, CapturingTransport, InMemoryTransport,
                                              LoopbackTransport, append_manifest)
from mucald_unet.training.augmentation import seed_augmentation
from mucald_unet.training.batch_stream import InterleavedRoundBatches
from mucald_unet.training.checkpoint import (BEST, FINAL, Checkpoint, capture_rng_state, check_compatible,
                                             load_checkpoint, plans_digest, restore_rng_state, save_checkpoint)
from mucald_unet.training.curves import plot_training_curves
from mucald_unet.training.run_log import RunLog
from mucald_unet.training.runners import CaseSelection, ClientRunner, ServerRunner, load_client_data
from planners.locate import dataset_number
from planners.plans import Plans, load_plans, load_shared_plan
from preprocessing.atomic import write_json_atomic

CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
CURVES_FILE = "curves.png"
MANIFEST_FILE = "manifest.jsonl"


class TrainingReporter(Protocol):
    """Live progress: the CLI shows a rich bar, tests pass a silent one."""

    def start(self, total_steps: int, done_steps: int) -> None: ...

    def step(self, round_index: int, client: str, step: int, loss: float) -> None: ...

    def round_done(self, round_index: int, records: list[dict]) -> None: ...


class SilentTrainingReporter:
    def start(self, total_steps: int, done_steps: int) -> None:
        pass

    def step(self, round_index: int, client: str, step: int, loss: float) -> None:
        pass

    def round_done(self, round_index: int, records: list[dict]) -> None:
        pass


@dataclass(frozen=True)
class TrainingSummary:
    run_folder: Path
    rounds_done: int
    final_dice: dict[str, float]  # client -> mean validation Dice after the last round
    best_score: float


CAPTURE_GLOB = "capture_round*.pt"


def capture_file(round_index: int) -> str:
    """``capture_round003.pt`` for the third round (round_index 2), as the log counts rounds."""
    return f"capture_round{round_index + 1:03d}.pt"


def run_name_for(config: TrainingConfig, clients: Sequence[str], planned_clients: Sequence[str],
                 cut_depth: int = 0) -> str:
    """The config's run name, with ``cut-K`` when the plan cuts K stages deep (so runs of plans
    that differ only in their cut never share a folder), plus ``clients-2-3`` when only some of the
    plan's clients train."""
    subset = sorted(set(clients)) != sorted(set(planned_clients))
    numbers = [f"clients-{'-'.join(str(dataset_number(c)) for c in sorted(clients))}"] if subset else []
    cut = [f"cut-{cut_depth}"] if cut_depth else []
    return compose_run_name(config.identity_labels() + cut, config.setting_labels() + numbers)


def run_folder_for(results_root: Path, plans_path: Path, config: TrainingConfig,
                   clients: Sequence[str] | None = None) -> Path:
    """The folder of a run of ``clients`` (default: every planned client) with ``config``."""
    shared = load_shared_plan(plans_path)  # a server planned site by site holds no client plans
    planned = list(shared.clients)
    name = run_name_for(config, planned if clients is None else clients, planned, shared.federation.cut_depth)
    return run_folder(results_root, plans_path, name, config.fold)


def run_folder(results_root: Path, plans_path: Path, run_name: str, fold: int) -> Path:
    """``<results>/<Federation_...>/<run name>/fold_<F>``."""
    return federation_results(results_root, plans_path) / run_name / f"fold_{fold}"


def federation_results(results_root: Path, plans_path: Path) -> Path:
    """``<results>/<Federation_...>``: the parent of every run folder of that plan."""
    return Path(results_root) / Path(plans_path).parent.name


def trained_runs(federation_folder: Path, fold: int, checkpoint: str = FINAL) -> list[str]:
    """Names of the runs under ``federation_folder`` that hold ``checkpoint`` for ``fold``, sorted."""
    return sorted(p.parent.parent.name for p in Path(federation_folder).glob(f"*/fold_{fold}/{checkpoint}"))


def run_is_finished(folder: Path) -> bool:
    """Whether the run in ``folder`` completed every round it was started with (not just saved one)."""
    path = Path(folder) / FINAL
    if not path.is_file():
        return False
    checkpoint = load_checkpoint(path)
    return checkpoint.rounds_done >= int(checkpoint.config["rounds"])


class FederatedTrainer:
    """The in-process simulation: one ``ServerRunner`` and a ``ClientRunner`` per client over the
    in-memory transport, driven step by step, with the run folder's log, curves and checkpoints."""

    def __init__(self, plans_path: Path, client_names: list[str], config: TrainingConfig, run_folder: Path,
                 reporter: TrainingReporter | None = None,
                 case_selection: Mapping[str, CaseSelection] | None = None,
                 capture: CaptureRequest | None = None, narrow_wire: bool = False) -> None:
        """``narrow_wire``: every message through the wire codec with float32 as float16, as a
        deployment with ``--wire-dtype float16`` sends them (to measure what that costs in Dice)."""
        self.plans_path = Path(plans_path)
        self.plans: Plans = load_plans(self.plans_path)
        self.client_names = [self.plans.client(name).dataset_name for name in client_names]
        self.config = config
        self.run_folder = Path(run_folder)
        self.reporter = reporter or SilentTrainingReporter()
        self.digest = plans_digest(self.plans)
        selection = dict(case_selection or {})
        torch.manual_seed(config.seed)
        seed_augmentation(config.seed)
        data = {name: load_client_data(self.plans_path, self.plans, name, config, selection.get(name))
                for name in self.client_names}
        self.server_runner = ServerRunner(self.plans.federation, self.client_names, config)
        device = torch.device(config.device)
        split = config.method_spec.split
        self.transport = (InMemoryTransport(self.server_runner, device, device, wire=narrow_wire, narrow=narrow_wire)
                          if split else LoopbackTransport(self.server_runner, device))
        self.capture = capture
        if capture is not None:
            if not split:
                raise TrainingError(f"--method {config.method} has no client/server boundary to capture. "
                                    "Fix: capture a splitfed or mucald run.")
            self.transport = CapturingTransport(self.transport, capture)
        self.client_runners = [ClientRunner(name, self.plans, config, data[name], self.transport)
                               for name in self.client_names]
        for runner in self.client_runners:
            runner.join()
        for runner in self.client_runners:
            runner.fetch_roster()
        self.log = RunLog(self.run_folder / LOG_FILE)

    @property
    def server(self) -> SplitServer:
        return self.server_runner.server

    @property
    def clients(self) -> list[SplitClient]:
        return [runner.client for runner in self.client_runners]

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, resume: bool = False, overwrite: bool = False) -> TrainingSummary:
        """Train to ``config.rounds``; ``resume`` continues the folder's run, ``overwrite`` discards it."""
        if resume and overwrite:
            raise TrainingError("--resume and --overwrite contradict each other. Fix: give one of them.")
        self.run_folder.mkdir(parents=True, exist_ok=True)
        state = self._resume() if resume else self._fresh_start(overwrite)
        steps = self.config.iterations_per_round
        self.reporter.start(self.config.rounds * steps * len(self.clients),
                            state.rounds_done * steps * len(self.clients))
        final_dice: dict[str, float] = {}
        for round_index in range(state.rounds_done, self.config.rounds):
            started = time.perf_counter()
            sources = [runner.batch_source for runner in self.client_runners]
            with InterleavedRoundBatches(sources, steps) as stream:  # cut and augmented while the network trains
                for step, batches in enumerate(stream):
                    for runner, batch in zip(self.client_runners, batches):
                        loss = runner.step(round_index, step, batch)
                        self.reporter.step(round_index, runner.name, step, loss)
            records = self._finish_round(round_index, time.perf_counter() - started)
            final_dice = {r["client"]: r["mean_val_dice"] for r in records}
            score = float(np.nanmean(list(final_dice.values())))
            val_loss = {runner.name: runner.last_val_loss for runner in self.client_runners}
            state.history.append({"round": round_index, "mean_val_dice": score, "val_loss": val_loss})
            state.rounds_done = round_index + 1
            improved = not np.isnan(score) and score > state.best_score
            if improved:
                state.best_score = score
            checkpoint = self._checkpoint(state)
            save_checkpoint(self.run_folder / FINAL, checkpoint)
            if improved:
                save_checkpoint(self.run_folder / BEST, checkpoint)
            self.reporter.round_done(round_index, records)
        return TrainingSummary(self.run_folder, state.rounds_done, final_dice, state.best_score)

    def _finish_round(self, round_index: int, train_seconds: float) -> list[dict]:
        factor = self.config.schedule.factor(self.config.progress(round_index, self.config.iterations_per_round))
        # every client reports before any fetches: the server averages once all reports are in
        terms = {runner.name: runner.report_round(round_index) for runner in self.client_runners}
        results = {runner.name: (terms[runner.name], runner.finish_round(round_index))
                   for runner in self.client_runners}
        weights, server_metrics = self.server_runner.end_round()
        manifest = self.transport.drain_manifest()
        if self.capture is not None and round_index == self.capture.round:
            self.transport.save(self.run_folder / capture_file(round_index))
        if manifest:
            append_manifest(self.run_folder / MANIFEST_FILE, manifest)
        bytes_sent = {c.name: sum(e.num_bytes for e in manifest if e.client == c.name and e.step >= 0)
                      for c in self.clients}
        records = []
        for client in self.clients:
            terms, validation = results[client.name]
            record = {"event": "round", "round": round_index, "client": client.name,
                      "val_dice": validation.dice, "mean_val_dice": validation.mean_dice,
                      "val_loss": validation.loss, "losses": {**terms, **server_metrics.get(client.name, {})},
                      "aggregation_weight": weights.get(client.name), "aux_factor": factor,
                      "train_bytes_crossed": bytes_sent[client.name], "train_seconds": train_seconds}
            self.log.append(record)
            records.append(record)
        plot_training_curves(self.log.records(), self.run_folder / CURVES_FILE)
        return records

    # ---- state ------------------------------------------------------------------------------
    def _fresh_start(self, overwrite: bool) -> Checkpoint:
        """Start at round 0; a folder holding another run's checkpoint is refused unless ``overwrite``."""
        if not overwrite and any((self.run_folder / name).is_file() for name in (FINAL, BEST)):
            raise TrainingError(f"{self.run_folder} already holds a run ({self._describe_existing()}). Fix: "
                                "add --resume to continue it, or --overwrite to discard it and start again.")
        stale = [self.run_folder / name for name in (FINAL, BEST, LOG_FILE, MANIFEST_FILE, CURVES_FILE)]
        for path in stale + sorted(self.run_folder.glob(CAPTURE_GLOB)):
            path.unlink(missing_ok=True)
        write_json_atomic(self.run_folder / CONFIG_FILE, {"run_name": self.run_folder.parent.name,
                                                          "training": self.config.to_dict(),
                                                          "plans": str(self.plans_path),
                                                          "plans_digest": self.digest,
                                                          "clients": self.client_names})
        return Checkpoint(0, self.config.to_dict(), self.digest, {}, {}, {}, float("-inf"), [])

    def _describe_existing(self) -> str:
        """``4/10 rounds done`` of the run already in the folder, or why that cannot be read."""
        try:
            checkpoint = load_checkpoint(self.run_folder / (FINAL if (self.run_folder / FINAL).is_file() else BEST))
        except TrainingError as err:
            return f"unreadable checkpoint: {err}"
        return f"{checkpoint.rounds_done}/{checkpoint.config.get('rounds')} rounds done"

    def _resume(self) -> Checkpoint:
        path = self.run_folder / FINAL
        if not path.is_file():
            others = [name for name in trained_runs(self.run_folder.parent.parent, self.config.fold)
                      if name != self.run_folder.parent.name]
            found = f"runs of this federation with a checkpoint: {', '.join(others)}" if others else "no other runs"
            raise TrainingError(f"{self.run_folder}: no checkpoint to resume ({found}). --resume continues a run "
                                "with exactly the flags it was started with, since they name its folder; a run "
                                "cannot be lengthened, as its warm-up and ramp span its whole length. Fix: repeat "
                                "the original flags with --resume, or drop --resume to start this run.")
        checkpoint = load_checkpoint(path, self.config.device)
        # settings added since the run started (e.g. ``strategy``) compare at their defaults
        saved = replace(checkpoint, config=TrainingConfig.from_dict(checkpoint.config).to_dict())
        check_compatible(saved, path, self.config.to_dict(), self.digest)
        if sorted(checkpoint.clients) != sorted(self.client_names):
            raise TrainingError(f"{path} holds clients {', '.join(sorted(checkpoint.clients))}; this run has "
                                f"{', '.join(self.client_names)}. Fix: resume with the same -d list.")
        self.server_runner.load_state_dict(checkpoint.server)
        val_loss = checkpoint.history[-1]["val_loss"] if checkpoint.history else {}
        for runner in self.client_runners:
            runner.load_state_dict(checkpoint.clients[runner.name], val_loss.get(runner.name))
        restore_rng_state(checkpoint.rng)
        for record_file in (LOG_FILE, MANIFEST_FILE):  # drop what a crashed round left behind
            RunLog(self.run_folder / record_file).truncate_after_round(checkpoint.rounds_done - 1)
        return checkpoint

    def _checkpoint(self, state: Checkpoint) -> Checkpoint:
        return Checkpoint(state.rounds_done, self.config.to_dict(), self.digest,
                          {r.name: r.state_dict() for r in self.client_runners}, self.server_runner.state_dict(),
                          capture_rng_state(), state.best_score, list(state.history))

