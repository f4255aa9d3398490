"""The two roles of a federation as runners that talk only through a ``Transport``.

A ``ClientRunner`` is one hospital: its cases, its network parts (FE, CRDMs, BE), its steps and
round end, and its part of a checkpoint. A ``ServerRunner`` is the server: the server segments,
discriminators and aggregation behind the endpoint a transport calls, and its part of a checkpoint.
Neither holds a reference to the other or reads another client's data: what one client needs to
know of the others (the largest training set) comes from the server as the roster. The in-process
simulation (``trainer.FederatedTrainer``) is N ClientRunners and one ServerRunner over the
in-memory transport; a deployment runs each where its data or hardware is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mucald_unet.config import TrainingConfig
from mucald_unet.federation.client import ClientData, ClientValidation, SplitClient
from mucald_unet.federation.messages import Message
from mucald_unet.federation.server import SplitServer
from mucald_unet.federation.transport import Transport, answer
from mucald_unet.training.batch_stream import InterleavedRoundBatches, RoundBatch
from mucald_unet.training.data import fold_split, list_case_ids, load_training_cases, scarce_subset
from mucald_unet.training.proxy_targets import ProxyTargets
from planners.pipeline import PROXIES_FILE, client_cases_folder, expected_cases
from planners.plans import FederationPlan, Plans


@dataclass(frozen=True)
class CaseSelection:
    """Explicit training and validation cases of a client instead of its fold split (shadow models)."""

    train: tuple[str, ...]
    validation: tuple[str, ...]


def load_client_data(plans_path: Path, plans: Plans, name: str, config: TrainingConfig,
                     selection: CaseSelection | None = None) -> ClientData:
    """One client's preprocessed cases (its fold split, or ``selection``) and proxy targets."""
    plan = plans.client(name)
    folder = client_cases_folder(plans_path, plan)
    expected = expected_cases(plans_path, plans, name)  # stale or orphaned cases stop here
    if selection is not None:
        train_ids, val_ids = selection.train, selection.validation
    else:
        train_ids, val_ids = fold_split(list_case_ids(folder, expected), config.fold, source=folder)
        train_ids = scarce_subset(train_ids, config.max_train_cases)
    proxies = ProxyTargets.load(folder.parent / PROXIES_FILE, plan.causal_graph, plans.federation.causal.num_nodes)
    return ClientData(load_training_cases(folder, train_ids, expected),
                      load_training_cases(folder, val_ids, expected), proxies)


@dataclass(frozen=True)
class ClientRound:
    """A client's side of a finished round: its mean loss terms and its validation."""

    terms: dict[str, float]
    validation: ClientValidation


class ServerRunner:
    """The server's role; ``handle`` is the endpoint a transport calls (a refusal becomes an ERROR reply)."""

    def __init__(self, federation: FederationPlan, client_names: Sequence[str], config: TrainingConfig) -> None:
        """The shared plan only: the server never holds a client's own plan."""
        self.server = SplitServer(federation, list(client_names), config)

    def handle(self, message: Message) -> Message:
        return answer(self.server, message)

    def end_round(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The last aggregation's weights and the round's per-client server metrics (discriminators,
        strategy terms), which the server alone sees; the metrics start again from empty."""
        return dict(self.server.last_weights), self.server.pop_round_metrics()

    def state_dict(self) -> dict:
        return self.server.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.server.load_state_dict(state)


class ClientRunner:
    """One client's role: it joins, takes steps, reports, fetches the averages and validates.

    ``step`` and ``finish_round`` let a simulator interleave several clients step by step (as
    clients running in parallel would reach the server); ``run_round`` is the whole round of a
    client that runs alone in its process.
    """

    def __init__(self, name: str, plans: Plans, config: TrainingConfig, data: ClientData,
                 transport: Transport) -> None:
        self.config = config
        self.client = SplitClient(name, plans.federation, plans.client(name), config, data, transport)
        self.last_val_loss: float | None = None  # the previous round's, for causal-invariant fusion

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def batch_source(self):
        """What ``InterleavedRoundBatches`` cuts this client's patches with: (sampler, augmentation)."""
        return self.client.sampler, self.client.augment

    def join(self) -> None:
        self.client.join()

    def fetch_roster(self) -> None:
        """After every client joined (the server refuses the roster before)."""
        self.client.fetch_roster()

    def step(self, round_index: int, step: int, batch: RoundBatch | None = None) -> float:
        return self.client.train_step(round_index, step, batch)

    def report_round(self, round_index: int) -> dict[str, float]:
        """Close the round's loss terms and send the shared weights and round report; the terms."""
        terms = self.client.pop_round_terms()
        self.client.send_round_report(round_index, terms, self.last_val_loss)
        return terms

    def finish_round(self, round_index: int) -> ClientValidation:
        """Fetch the round's averages (once every client reported) and validate what was averaged."""
        self.client.fetch_shared_weights(round_index)
        validation = self.client.validate(round_index)
        self.last_val_loss = validation.loss
        return validation

    def catch_up(self, next_round: int) -> None:
        """A client that missed rounds takes the averages of the round before ``next_round``."""
        if next_round > 0:
            self.client.fetch_shared_weights(next_round - 1)

    def train_round(self, round_index: int, on_step=None) -> dict[str, float]:
        """The steps of a client alone in its process (its own batch stream), then its round report;
        the round's mean loss terms. ``on_step(step, loss)`` sees every step."""
        with InterleavedRoundBatches([self.batch_source], self.config.iterations_per_round) as stream:
            for step, (batch,) in enumerate(stream):
                loss = self.step(round_index, step, batch)
                if on_step is not None:
                    on_step(step, loss)
        return self.report_round(round_index)

    def run_round(self, round_index: int, on_step=None) -> ClientRound:
        """A whole round of a client alone in its federation: steps, report, averages, validation."""
        terms = self.train_round(round_index, on_step)
        return ClientRound(terms, self.finish_round(round_index))

    def state_dict(self) -> dict:
        return self.client.state_dict()

    def load_state_dict(self, state: dict, last_val_loss: float | None) -> None:
        self.client.load_state_dict(state)
        self.last_val_loss = last_val_loss
