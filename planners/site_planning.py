"""One hospital's part of planning a federation site by site, on its own machine.

The single-process pipeline (``plan_and_preprocess``) runs every stage for every client; here a site
runs only its own, in the order the server asks: ``analyse`` (verify, fingerprint, proxies, causal
graph; the server gets the native dimensionality), ``offer`` (the server gets the patch the budget
allows and its spacing), ``finish`` (with the server's shared plan: the site's own plan, its
``plans.json`` holding the shared plan and itself, and its preprocessed cases). Everything derived
from images and labels stays in the site's folder; given the same shared plan, the site's plan is the
one the single-process pipeline makes for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planners.errors import PlanError
from planners.pipeline import PipelineConfig, Reporter, SilentReporter, analyse_client, preprocess_client
from planners.planner import (ClientFacts, PlannerConfig, SiteOffer, SiteProposal, assemble_plans, federation_dims,
                              federation_plan, shared_topology, site_plan, site_proposal, topology_of)
from planners.plans import PLANS_FILE, SCHEMA_VERSION, FederationPlan, SharedPlan, save_plans
from preprocessing.dataset import RawDataset
from preprocessing.integrity import verify_dataset


@dataclass(frozen=True)
class OfferReply:
    """A site's answer to the server's ``offer``: its offer and the planner's warnings about it."""

    offer: SiteOffer
    warnings: tuple[str, ...]


class SitePlanner:
    """The stages of one site, holding its facts between the server's calls."""

    def __init__(self, config: PipelineConfig, federation: str, reporter: Reporter = SilentReporter()) -> None:
        """``config.datasets``: this site's one dataset; ``federation``: the federation's folder name."""
        if len(config.datasets) != 1:
            raise PlanError(f"a site plans one dataset, not {len(config.datasets)}. Fix: give the site's own.")
        self.config, self.reporter = config, reporter
        self.dataset = RawDataset.open(config.raw_root, config.datasets[0])
        self.folder = Path(config.preprocessed_root) / federation
        self._facts: ClientFacts | None = None
        self._proposal: SiteProposal | None = None
        self._num_clients = 0

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def plans_path(self) -> Path:
        return self.folder / PLANS_FILE

    def analyse(self) -> int:
        """Verify the raw data, fingerprint it, derive the proxies and the causal graph; the native
        dimensionality (2 or 3), all the server learns of this stage."""
        if self.config.verify:
            cases = self.dataset.case_ids("Tr") + self.dataset.case_ids("Ts")
            self.reporter.stage(f"verify {self.name}", len(cases))
            verify_dataset(self.dataset.folder, on_case=lambda _c: self.reporter.advance()).raise_if_problems()
        self._facts = analyse_client(self.dataset, self.folder / self.name, self.config, self.reporter)
        return self._facts.native_dims

    def offer(self, dims: int, num_clients: int) -> OfferReply:
        """This site's resolution for the federation's dimensionality, and the patch it offers."""
        self._proposal = site_proposal(self._analysed(), self.config.planner, dims, num_clients)
        self._num_clients = num_clients
        return OfferReply(self._proposal.offer, self._proposal.warnings)

    def finish(self, federation: FederationPlan) -> Path:
        """Plan this site under the server's shared plan, write its ``plans.json`` (the shared plan, this
        site only and its own warnings) and preprocess its cases; the plans file's path."""
        if self._proposal is None:
            raise PlanError(f"{self.name}: the server sent the shared plan before asking for an offer. Fix: run "
                            "the same mucald version at the server and every site.")
        plan = site_plan(self._analysed(), self._proposal, topology_of(federation.server_segment),
                         self.config.planner, self._num_clients)
        plans = assemble_plans({self.name: plan}, federation, self.config.planner, self._proposal.warnings)
        save_plans(plans, self.plans_path)
        preprocess_client(self.dataset, plans, self.plans_path, self.config, self.reporter)
        return self.plans_path

    def _analysed(self) -> ClientFacts:
        if self._facts is None:
            raise PlanError(f"{self.name}: asked for an offer before its analysis. Fix: run the same mucald "
                            "version at the server and every site.")
        return self._facts


def server_dims(native_dims: dict[str, int], config: PlannerConfig) -> int:
    """At the server, from every site's native dimensionality: the federation's (2 or 3)."""
    return federation_dims(list(native_dims.values()), list(native_dims), config.dimensionality)


def server_shared_plan(offers: dict[str, OfferReply], config: PlannerConfig, dims: int) -> SharedPlan:
    """At the server, from every site's offer: the shared plan it sends back and keeps."""
    topology = shared_topology([reply.offer for reply in offers.values()], config, dims)
    return SharedPlan(SCHEMA_VERSION, config.preset.describe(), federation_plan(topology, config, dims),
                      tuple(offers), offers=tuple(reply.offer.to_dict() for reply in offers.values()),
                      warnings=tuple(w for reply in offers.values() for w in reply.warnings))


def plan_site_by_site(sites: list[SitePlanner], config: PlannerConfig) -> SharedPlan:
    """The protocol in one process: what a deployment's server does over the network, site by site."""
    dims = server_dims({site.name: site.analyse() for site in sites}, config)
    shared = server_shared_plan({site.name: site.offer(dims, len(sites)) for site in sites}, config, dims)
    for site in sites:
        site.finish(shared.federation)
    return shared
