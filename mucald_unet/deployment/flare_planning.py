"""Planning a federation site by site as a FLARE job: each hospital's stages at its own site, the
server's two decisions at the server.

The server asks every site three things in turn (one group call each): ``analyse`` (the site
verifies, fingerprints, derives its proxies and causal graph; its native dimensionality comes back),
``offer`` (given the federation's dimensionality and size; the patch its budget allows, that patch's
spacing and the planner's warnings come back) and ``finish`` (given the shared plan; the site plans
itself, writes its ``plans.json`` and preprocesses its cases; the digest of the shared plan it
wrote comes back). The server writes the shared plan as ``federation.json`` once every site has
written its own. No image, label, proxy or intensity statistic crosses. Each site reads its folders
from its kit (``site_kits.SiteSettings``); the job carries only the planner's settings. The job's
processes import this module for its apps, so it imports nothing of training (no torch): a
hospital's planning process starts in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvflare.collab import CollabRecipe, collab

from mucald_unet.deployment import INSTALLED_PACKAGES
from mucald_unet.deployment.flare_server import run_job, server_from_kit
from mucald_unet.deployment.site_kits import Kit, SiteSettings
from mucald_unet.errors import TrainingError
from mucald_unet.training.run_log import RunLog
from planners.pipeline import PipelineConfig
from planners.planner import PlannerConfig, SiteOffer
from planners.plans import (SharedPlan, federation_digest, federation_from_dict, federation_to_dict, load_shared_plan,
                            save_shared_plan)
from planners.site_planning import OfferReply, SitePlanner, server_dims, server_shared_plan

PLANNING_JOB_NAME = "mucald_plan"
PLANNING_LOG = "planning_log.jsonl"  # beside the server's federation.json: what each site sent


@dataclass(frozen=True)
class PlanningJob:
    """What the planning job plans: which sites, with which planner settings, kept where at the server."""

    clients: tuple[str, ...]  # dataset names; each is a site of that name
    planner: PlannerConfig
    shared_plan: Path  # the server's <preprocessed>/<Federation_...>/federation.json
    seed: int = 0
    verify: bool = True
    call_timeout: float = 3600.0  # seconds for one stage at every site (fingerprinting a large dataset)


class FlarePlanningServerApp:
    """The server site: the three stages, then the shared plan on disk."""

    def __init__(self, clients: list[str], planner: dict, shared_plan: str, call_timeout: float) -> None:
        self.clients, self.planner, self.shared_plan = list(clients), dict(planner), shared_plan
        self.call_timeout = call_timeout

    def _group(self):
        return collab.get_clients(self.clients)(timeout=self.call_timeout)

    @collab.main
    def run(self) -> dict:
        config = PlannerConfig.from_dict(self.planner)
        log = RunLog(Path(self.shared_plan).parent / PLANNING_LOG)
        native = _answers(self._group().analyse(), "analyse", self.clients)
        log.append({"event": "analyse", "native_dims": native})
        dims = server_dims({site: int(native[site]) for site in self.clients}, config)
        answers = _answers(self._group().offer(dims, len(self.clients)), "offer", self.clients)
        log.append({"event": "offer", "dims": dims, "offers": answers})
        offers = {site: _offer_of(site, answers[site]) for site in self.clients}
        shared = server_shared_plan(offers, config, dims)
        written = _answers(self._group().finish(federation_to_dict(shared.federation)), "finish", self.clients)
        log.append({"event": "finish", "federation_digests": written})
        expected = federation_digest(shared.federation)
        if differing := sorted(site for site, digest in written.items() if digest != expected):
            raise TrainingError(f"{', '.join(differing)} wrote another shared plan than the server sent. Fix: run "
                                "the same mucald version at the server and every site, and plan again.")
        save_shared_plan(shared, Path(self.shared_plan))
        return {"federation_digest": expected, "sites": list(self.clients)}


class FlarePlanningClientApp:
    """A client site: its ``SitePlanner`` over its own raw data, in the folders its kit names."""

    def __init__(self, federation: str, planner: dict, seed: int, verify: bool) -> None:
        self.federation, self.planner, self.seed, self.verify = federation, dict(planner), seed, verify
        self._site: SitePlanner | None = None

    @collab.publish
    def analyse(self) -> int:
        settings = SiteSettings.read(Path(collab.workspace.get_site_config_dir()))
        if settings.raw is None:
            raise TrainingError(f"{collab.site_name} has no raw data to plan with. Fix: start it with "
                                "mucald_client --kit KIT --raw RAW (the folder holding its dataset).")
        config = PipelineConfig(raw_root=settings.raw, preprocessed_root=settings.preprocessed,
                                datasets=(collab.site_name,), planner=PlannerConfig.from_dict(self.planner),
                                num_processes=settings.threads, verify=self.verify, seed=self.seed)
        self._site = SitePlanner(config, self.federation)
        return self._site.analyse()

    @collab.publish
    def offer(self, dims: int, num_clients: int) -> dict:
        reply = self._planner().offer(int(dims), int(num_clients))
        return {"offer": reply.offer.to_dict(), "warnings": list(reply.warnings)}

    @collab.publish
    def finish(self, federation: dict) -> str:
        shared = federation_from_dict(federation, "the server")
        self._planner().finish(shared)
        return federation_digest(shared)

    def _planner(self) -> SitePlanner:
        if self._site is None:
            raise TrainingError(f"{collab.site_name}: asked for a stage before its analysis. Fix: run the same "
                                "mucald version at the server and every site.")
        return self._site


def _answers(results, stage: str, sites: list[str]) -> dict:
    """{site: answer} of a stage every site must answer, or a TrainingError naming each that did not."""
    failures = dict(getattr(results, "failures", {}) or {})
    answered = dict(results)
    missing = [site for site in sites if site not in answered and site not in failures]
    if failures or missing:
        reasons = "; ".join([f"{site}: {error}" for site, error in sorted(failures.items())] +
                            [f"{site}: no answer" for site in missing])
        raise TrainingError(f"planning stage {stage!r} failed at {len(failures) + len(missing)} site(s): {reasons}")
    return answered


def _offer_of(site: str, answer: dict) -> OfferReply:
    offer = SiteOffer.from_dict(answer.get("offer", {}))
    if offer.dataset_name != site:  # a site offers only for itself
        raise TrainingError(f"site {site} sent an offer for {offer.dataset_name}. Fix: give each hospital the kit "
                            "issued for its own dataset.")
    return OfferReply(offer, tuple(str(w) for w in answer.get("warnings", ())))


def planning_recipe(job: PlanningJob) -> CollabRecipe:
    planner = job.planner.to_dict()
    server = FlarePlanningServerApp(list(job.clients), planner, str(job.shared_plan), job.call_timeout)
    client = FlarePlanningClientApp(job.shared_plan.parent.name, planner, job.seed, job.verify)
    recipe = CollabRecipe(job_name=PLANNING_JOB_NAME, server=server, client=client, min_clients=len(job.clients),
                          sync_task_timeout=job.call_timeout)
    recipe._job.set_app_packages(INSTALLED_PACKAGES)  # CollabRecipe exposes its FedJob only as ``_job``
    recipe._job.job.mandatory_clients = list(job.clients)  # held until every site is connected
    return recipe


def plan_from_kits(job: PlanningJob, server_kit: Kit, admin_kit: Kit, timeout: float = 24 * 3600.0,
                   login_timeout: float = 120.0) -> SharedPlan:
    """Start the FLARE server from its kit, submit the planning job as the admin (FLARE holds it until
    every site has connected from its own kit), wait for it, stop the server; the shared plan it wrote."""
    job.shared_plan.parent.mkdir(parents=True, exist_ok=True)
    job.shared_plan.unlink(missing_ok=True)  # only this job's plan counts as done
    with server_from_kit(server_kit, admin_kit, login_timeout) as env:
        status = run_job(planning_recipe(job), env, timeout)
    if not job.shared_plan.is_file():
        raise TrainingError(f"the planning job ended ({status}) without a shared plan. Fix: read why in "
                            f"{job.shared_plan.parent / PLANNING_LOG}, the server's log under {server_kit.folder} "
                            "and each hospital's mucald_client output.")
    return load_shared_plan(job.shared_plan)
