"""The two FLARE site apps: the server site's app and every client site's app.

FLARE starts one process per site and calls into these objects: the server's ``run`` (the round
loop, ``@collab.main``) calls the clients' published phases in parallel, and each client, inside its
``train_round``, calls the server's published ``handle`` once per message. A client site is named
by its dataset (``Dataset002_DemoLungCT``) and reads only its own cases. Each side writes its own
records under ``results``: ``server/`` and ``<site>/`` (log, manifest of what it sent and received,
state after the last finished round).

A site whose call fails or times out mid-round is dropped: the round completes over the clients
that reported (FedAvg over the reporters) and the job ends after it, so that the run's driver
submits the next job with ``resume``: every side starts from its own saved state, and a site that
missed rounds first fetches the latest averages. A site whose job process dies makes FLARE fail the
whole job instead (no setting changes that); the driver resubmits it the same way, and the round
the crash hit is trained again.

Constructor arguments are plain values (paths as text, the training config as a dict): FLARE writes
them into the job's configuration and builds the objects again in each site's process. On separate
machines the job carries no client path: each client site reads its folders and threads from its own
kit (``site_kits.SiteSettings``), and the server refuses at the join a site whose plan is not its own.
"""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import torch
from nvflare.collab import collab

from mucald_unet.config import TrainingConfig
from mucald_unet.deployment.collab_transport import CollabTransport
from mucald_unet.deployment.site_kits import SITES_FOLDER, SiteSettings
from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import Direction, Kind, ManifestEntry, Message
from mucald_unet.federation.transport import append_manifest
from mucald_unet.federation.wire import WireError, decode, encode
from mucald_unet.training.augmentation import seed_augmentation
from mucald_unet.training.checkpoint import join_digests, load_plain, save_plain, site_plans_digest
from mucald_unet.training.run_log import RunLog
from mucald_unet.training.runners import ClientRunner, ServerRunner, load_client_data
from planners.plans import PLANS_FILE, federation_digest, load_plans, load_shared_plan

SERVER_FOLDER = "server"
LOG_FILE = "log.jsonl"
MANIFEST_FILE = "manifest.jsonl"
STATE_FILE = "state.pt"
REFUSED = "refused"  # the server's log event of a refusal that a resubmitted job would meet again


def refusal(server_folder: Path) -> str | None:
    """Why the server refused the run, if its last logged event is such a refusal."""
    records = RunLog(Path(server_folder) / LOG_FILE).records()
    return records[-1]["reason"] if records and records[-1].get("event") == REFUSED else None


def site_seed(seed: int, site: str) -> int:
    """The seed of one site's network initialisation and augmentation: fixed by ``seed`` and the name."""
    return zlib.crc32(f"{seed}:{site}".encode("utf-8"))


def _completed(results, phase: str) -> dict:
    """{site: result} of a group call, or a TrainingError naming every site that failed and why."""
    failures = dict(getattr(results, "failures", {}) or {})
    if failures:
        reasons = "; ".join(f"{site}: {error}" for site, error in sorted(failures.items()))
        raise TrainingError(f"{phase} failed at {len(failures)} site(s): {reasons}")
    return dict(results)


def _outcome(results) -> tuple[dict, dict[str, str]]:
    """A group call's {site: result} of the sites that answered, and {site: why} of those that did not."""
    failures = {site: str(error) for site, error in (getattr(results, "failures", {}) or {}).items()}
    return dict(results), failures


def saved_rounds(folder: Path) -> int:
    """How many rounds a site's saved state has finished (0 when it saved none)."""
    path = Path(folder) / STATE_FILE
    return int(load_plain(path)["rounds_done"]) if path.is_file() else 0


def drop_unsaved_records(folder: Path, next_round: int) -> None:
    """Log records of rounds from ``next_round`` on go: the job resuming there trains them again (a
    crash after a round's records but before its state). The manifest keeps them: it records every
    message as it crossed, so an interrupted attempt's messages stay beside the replay's."""
    RunLog(Path(folder) / LOG_FILE).truncate_after_round(next_round - 1)


class FlareServerApp:
    """The server site: ``handle`` answers every client's messages one at a time (the server's state is
    shared between clients), ``run`` drives join, roster and rounds."""

    def __init__(self, plans_path: str, clients: list[str], config: dict, results: str,
                 call_timeout: float = 600.0, threads: int = 1, narrow_wire: bool = False,
                 resume: bool = False, min_clients: int = 1) -> None:
        self.plans_path, self.clients, self.config, self.results = plans_path, list(clients), dict(config), results
        self.call_timeout, self.threads, self.narrow_wire = call_timeout, threads, narrow_wire
        self.resume, self.min_clients = resume, min_clients
        self.folder = Path(results) / SERVER_FOLDER
        self._runner: ServerRunner | None = None
        self._lock = threading.Lock()
        self._rounds_done = 0

    @collab.init
    def start(self) -> None:
        torch.set_num_threads(self.threads)
        config = TrainingConfig.from_dict(self.config)
        torch.manual_seed(config.seed)
        self._shared = load_shared_plan(Path(self.plans_path))  # a federation.json, or a whole plans.json
        # with a whole plans.json the server can check each site's own plan too
        self._site_plans = load_plans(Path(self.plans_path)) if Path(self.plans_path).name == PLANS_FILE else None
        self._runner = ServerRunner(self._shared.federation, self.clients, config)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.resume and (self.folder / STATE_FILE).is_file():
            state = load_plain(self.folder / STATE_FILE)
            self._runner.load_state_dict(state["server"])
            self._rounds_done = int(state["rounds_done"])
            drop_unsaved_records(self.folder, self._rounds_done)

    @collab.publish
    def handle(self, blob: bytes) -> bytes:
        """One client message in, the reply out, both as wire bytes; unreadable bytes get an ERROR reply."""
        try:
            message = decode(blob)
        except WireError as refusal:
            return encode(Message(collab.caller, Kind.ERROR, "wire", -1, -1, detail=str(refusal)))
        if message.client != collab.caller:  # a site speaks only for itself
            return encode(Message(message.client, Kind.ERROR, message.name, message.round, message.step,
                                  detail=f"site {collab.caller!r} sent a message as {message.client!r}"))
        with self._lock:
            self._record(ManifestEntry.of(message, Direction.TO_SERVER))  # on disk before it is acted on
            reply = self._runner.handle(message)
            self._record(ManifestEntry.of(reply, Direction.TO_CLIENT))
        return encode(reply, self.narrow_wire)

    def _record(self, entry: ManifestEntry) -> None:
        append_manifest(self.folder / MANIFEST_FILE, [entry])

    def _group(self, sites: list[str]):
        return collab.get_clients(sites)(timeout=self.call_timeout)

    @collab.main
    def run(self) -> list[dict]:
        """Join (a resumed site catches up), roster, then rounds until the last or until a site is lost:
        that round completes over the others and the job ends, for the driver to resubmit."""
        sites = list(self.clients)
        joined = _completed(self._group(sites).join(self._rounds_done), "join")
        RunLog(self.folder / LOG_FILE).append({"event": "join", "resumed_at": self._rounds_done, "sites": joined})
        self._check_site_plans(joined)
        _completed(self._group(sites).fetch_roster(), "roster")
        history = []
        for round_index in range(self._rounds_done, int(self.config["rounds"])):
            started = time.perf_counter()
            trained, lost = _outcome(self._group(sites).train_round(round_index))
            sites = [site for site in sites if site in trained]
            with self._lock:
                self._close_round(round_index, sites, lost)
                save_plain(self.folder / STATE_FILE, {"rounds_done": round_index + 1,
                                                      "server": self._runner.state_dict()})
            finished, lost_late = _outcome(self._group(sites).finish_round(round_index))
            with self._lock:
                for site in lost_late:  # averaged already; it missed the averages and validation only
                    self._runner.server.drop(site)
                weights, metrics = self._runner.end_round()
            dropped = {**lost, **lost_late}
            record = {"event": "round", "round": round_index, "aggregation_weights": weights,
                      "server_metrics": metrics, "clients": {site: {**trained[site], **finished[site]}
                                                             for site in sorted(finished)},
                      "dropped": dropped, "round_seconds": time.perf_counter() - started}
            RunLog(self.folder / LOG_FILE).append(record)
            history.append(record)
            if dropped:
                break  # the job ends here; the next one starts at the next round with every site that is up
        return history

    def _check_site_plans(self, joined: dict[str, dict]) -> None:
        """Every site must train the plan the server trains: the shared plan, and its own where the server
        holds every site's (a federation planned site by site leaves each site's own plan at the site)."""
        shared = federation_digest(self._shared.federation)
        differing = sorted(site for site, answer in joined.items()
                           if answer.get("federation_digest") != shared or (
                               self._site_plans is not None
                               and answer.get("plans_digest") != site_plans_digest(self._site_plans, site)))
        if differing:
            reason = (f"{', '.join(differing)} planned with another plan than the server's {self.plans_path}. "
                      "Fix: plan the federation again (mucald_server plan, or mucald_plan_and_preprocess and the "
                      "same plans.json at every site), and start again.")
            RunLog(self.folder / LOG_FILE).append({"event": REFUSED, "reason": reason})  # no resubmission helps
            raise TrainingError(reason)

    def _close_round(self, round_index: int, survivors: list[str], lost: dict[str, str]) -> None:
        """Drop the sites lost in training; the round must then be aggregated over enough reporters."""
        if len(survivors) < self.min_clients:
            raise TrainingError(f"round {round_index}: only {len(survivors)} site(s) finished training, fewer than "
                                f"the {self.min_clients} required; lost: {lost}")
        for site in lost:
            self._runner.server.drop(site)
        if self._runner.server.rounds_aggregated != round_index + 1:
            raise TrainingError(f"round {round_index} was not aggregated: waiting for the round report of "
                                f"{', '.join(s for s in survivors if s not in self._runner.server.reporters)}")


class FlareClientApp:
    """A client site: builds its ``ClientRunner`` from its own cases and answers the server's phases."""

    def __init__(self, plans_path: str | None, config: dict, results: str | None, call_timeout: float = 600.0,
                 threads: int = 1, narrow_wire: bool = False, resume: bool = False, run_path: str = "",
                 federation: str = "") -> None:
        """``plans_path`` and ``results`` None: each site reads its own folders from its kit (separate
        machines), trains with ``<its preprocessed>/<federation>/plans.json`` and keeps its records
        under ``<its results>/<run_path>/sites/<site>``."""
        self.plans_path, self.config, self.results, self.run_path = plans_path, dict(config), results, run_path
        self.federation = federation
        self.call_timeout, self.threads, self.narrow_wire, self.resume = call_timeout, threads, narrow_wire, resume
        self._rounds_done = 0
        self.folder = Path(results or ".")  # <results>/<site> once the site knows its name (``start``)
        self._digests: dict[str, str] = {}
        self._runner: ClientRunner | None = None
        self._transport: CollabTransport | None = None
        self._terms: dict[str, float] = {}
        self._train_seconds = 0.0

    @collab.init
    def start(self) -> None:
        plans_path, results, threads = self._site_paths()
        torch.set_num_threads(threads)
        config = TrainingConfig.from_dict(self.config)
        plans = load_plans(plans_path)
        name = plans.client(collab.site_name).dataset_name  # a site is named by its dataset
        self._digests = join_digests(plans, name)
        self.folder = results / name
        self.folder.mkdir(parents=True, exist_ok=True)
        state = load_plain(self.folder / STATE_FILE) if self.resume and (self.folder / STATE_FILE).is_file() else None
        self._rounds_done = int(state["rounds_done"]) if state else 0
        # --seed decides the run; sites draw different streams, and a resumed site a fresh one
        seed = site_seed(config.seed, name if state is None else f"{name}@{self._rounds_done}")
        torch.manual_seed(seed)
        seed_augmentation(seed)
        self._transport = CollabTransport(self.call_timeout, self.narrow_wire, self.folder / MANIFEST_FILE)
        self._runner = ClientRunner(name, plans, config, load_client_data(plans_path, plans, name, config),
                                    self._transport)
        if state is not None:
            self._runner.load_state_dict(state["client"], state["last_val_loss"])

    def _site_paths(self) -> tuple[Path, Path, int]:
        """The plans, the records' folder and the threads: the job's on one machine, else the site's own."""
        if self.plans_path is not None:
            return Path(self.plans_path), Path(self.results), self.threads
        settings = SiteSettings.read(Path(collab.workspace.get_site_config_dir()))
        plans = settings.preprocessed / self.federation / PLANS_FILE
        if not plans.is_file():
            raise TrainingError(f"{plans} is missing: this site has not planned {self.federation}. Fix: plan it "
                                "(mucald_server plan, with this site's mucald_client given --raw), or copy the "
                                "federation's plans.json and preprocess here.")
        return plans, settings.results / self.run_path / SITES_FOLDER, settings.threads

    @collab.publish
    def join(self, next_round: int) -> dict:
        """Join; a site whose saved state is behind the server's (it missed rounds) fetches the last
        averages first, so it rejoins at ``next_round`` from what the others reached."""
        self._runner.join()
        behind = self._rounds_done < next_round
        if behind:  # saved at once: a job with no rounds left ends with every site at the last round
            self._runner.catch_up(next_round)
            self._save_state(next_round)
        drop_unsaved_records(self.folder, next_round)  # records of a round it missed stay: it took part
        return {"rounds_done": self._rounds_done, "caught_up": behind, **self._digests}

    @collab.publish
    def fetch_roster(self) -> float:
        self._runner.fetch_roster()
        return self._runner.client.seg_weight

    @collab.publish
    def train_round(self, round_index: int) -> dict:
        started = time.perf_counter()
        self._terms = self._runner.train_round(round_index)
        self._train_seconds = time.perf_counter() - started
        return {"train_seconds": self._train_seconds}

    @collab.publish
    def finish_round(self, round_index: int) -> dict:
        validation = self._runner.finish_round(round_index)
        manifest, wire_bytes = self._transport.drain_manifest()
        record = {"event": "round", "round": round_index, "client": self._runner.name, "val_dice": validation.dice,
                  "mean_val_dice": validation.mean_dice, "val_loss": validation.loss, "losses": self._terms,
                  "train_bytes_crossed": sum(e.num_bytes for e in manifest if e.step >= 0),
                  "train_wire_bytes": wire_bytes["train"], "wire_bytes": sum(wire_bytes.values()),
                  "train_seconds": self._train_seconds}
        RunLog(self.folder / LOG_FILE).append(record)
        self._save_state(round_index + 1)
        return {"mean_val_dice": validation.mean_dice, "val_dice": validation.dice}

    def _save_state(self, rounds_done: int) -> None:
        save_plain(self.folder / STATE_FILE, {"rounds_done": rounds_done, "client": self._runner.state_dict(),
                                              "last_val_loss": self._runner.last_val_loss})
