"""A federation's training as a FLARE job: the recipe, and running it on this machine.

``run_on_loopback``: FLARE's POC mode provisions a project (a startup kit with mutual-TLS
certificates per site), starts the server and each client as its own FLARE process on localhost,
submits the job as the project admin and waits for it, keeping everything FLARE writes under the
given workspace. ``run_from_kits``: the same job on separate machines, from ``mucald_provision``'s
kits: the server runs from its kit here, the hospitals' sites from theirs wherever they are. Either
way a job that ended early because a site was lost is followed by the next one, with ``resume``,
until the rounds are done or a job makes no progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil  # FLARE's own dependency
from nvflare.collab import CollabRecipe
from nvflare.recipe import PocEnv, ProdEnv

from mucald_unet.config import TrainingConfig
from mucald_unet.deployment import INSTALLED_PACKAGES
from mucald_unet.deployment.flare_apps import SERVER_FOLDER, FlareClientApp, FlareServerApp, refusal, saved_rounds
from mucald_unet.deployment.flare_server import run_job, server_from_kit, stop_process_group
from mucald_unet.deployment.provisioning import ProvisionRequest, project_config
from mucald_unet.deployment.site_kits import Kit
from mucald_unet.errors import TrainingError
from preprocessing.atomic import write_json_atomic

JOB_NAME = "mucald"
POC_ADMIN = "admin@nvidia.com"  # the admin FLARE's POC mode submits jobs as


@dataclass(frozen=True)
class FlareJob:
    """What the job trains: which plan and clients, with which settings, recorded where."""

    plans_path: Path
    clients: tuple[str, ...]  # dataset names; each becomes a site of that name
    config: TrainingConfig
    results: Path
    call_timeout: float = 600.0  # seconds a site waits for one call (a step's message, a round phase)
    threads: int = 1  # torch threads per site process
    narrow_wire: bool = False  # float32 tensors cross as float16 (--wire-dtype float16)
    resume: bool = False  # every site starts from its own saved state under ``results``
    min_clients: int = 1  # live sites below which FLARE aborts the job and a round is refused
    sites_from_kits: bool = False  # separate machines: each client site reads its paths from its own kit
    run_path: str = ""  # with sites_from_kits: the run's folder below each site's results root

    @property
    def rounds_done(self) -> int:
        """Rounds that the server and every site have saved: where a resumed job starts for all. On
        separate machines the server's own count (a site never saves a round before the server)."""
        folders = (SERVER_FOLDER,) if self.sites_from_kits else (SERVER_FOLDER, *self.clients)
        return min(saved_rounds(self.results / folder) for folder in folders)


def flare_recipe(job: FlareJob) -> CollabRecipe:
    config = job.config.to_dict()
    server = FlareServerApp(str(job.plans_path), list(job.clients), config, str(job.results),
                            job.call_timeout, job.threads, job.narrow_wire, job.resume, job.min_clients)
    client_paths = (None, None) if job.sites_from_kits else (str(job.plans_path), str(job.results))
    client = FlareClientApp(client_paths[0], config, client_paths[1], job.call_timeout, job.threads,
                            job.narrow_wire, job.resume, job.run_path, federation=job.plans_path.parent.name)
    recipe = CollabRecipe(job_name=JOB_NAME, server=server, client=client, min_clients=job.min_clients,
                          sync_task_timeout=job.call_timeout)
    fed_job = recipe._job  # CollabRecipe exposes its FedJob only as ``_job``
    fed_job.set_app_packages(INSTALLED_PACKAGES)
    # FLARE deploys "@ALL" to the sites online at scheduling time; a site still registering (seen on a
    # loaded machine: one second late) would be left out and our server would fail on the missing site.
    # Mandatory clients make the scheduler hold the job until every site is connected.
    fed_job.job.mandatory_clients = list(job.clients)
    return recipe


@contextlib.contextmanager
def flare_home(workspace: Path) -> Iterator[Path]:
    """FLARE's POC mode keeps its settings in ~/.nvflare and its sites under NVFLARE_POC_WORKSPACE
    (default /tmp/nvflare); both point into ``workspace`` while the block runs (the POC processes it
    starts inherit them), and are restored afterwards."""
    workspace = Path(workspace).resolve()
    redirected = {"HOME": str(workspace / "home"), "NVFLARE_POC_WORKSPACE": str(workspace / "poc")}
    Path(redirected["HOME"]).mkdir(parents=True, exist_ok=True)
    saved = {key: os.environ.get(key) for key in redirected}
    os.environ.update(redirected)
    try:
        yield workspace
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_on_loopback(job: FlareJob, workspace: Path, timeout: float = 3600.0,
                    retries_without_progress: int = 1) -> list[str]:
    """Train the job with the server and every client as separate FLARE processes over mutual TLS on
    localhost (FLARE's POC mode, on two free ports); FLARE's status of each job submitted.

    The first job starts the sites. A job that ends with rounds left (a site was dropped, or FLARE
    failed the job because a site's process died) is followed by one with ``resume`` on the running
    sites, which starts at the last round every party saved; a crash costs the round it hit. The run
    stops with an error after ``retries_without_progress`` + 1 jobs in a row that saved no round."""
    with flare_home(workspace) as root:
        env = PocEnv(project_conf_path=str(loopback_project(job.clients, root)), username=POC_ADMIN)
        try:
            return _jobs_until_done(job, env, lambda: ProdEnv(str(poc_admin_kit(root)), login_timeout=30.0,
                                                              username=POC_ADMIN),
                                    timeout, retries_without_progress, Path(workspace) / "poc")
        finally:
            env.stop(clean_up=False)
            stop_processes_under(Path(workspace).resolve())


def run_from_kits(job: FlareJob, server_kit: Kit, admin_kit: Kit, timeout: float = 24 * 3600.0,
                  retries_without_progress: int = 1, login_timeout: float = 120.0) -> list[str]:
    """Start the FLARE server from its kit on this machine, submit the job as the admin once the
    server answers (FLARE holds it until every site has connected from its own kit), follow it with
    resumed jobs as ``run_on_loopback`` does, and stop the server; FLARE's status of each job."""
    with server_from_kit(server_kit, admin_kit, login_timeout) as env:
        return _jobs_until_done(job, env, lambda: env, timeout, retries_without_progress, server_kit.folder)


def _jobs_until_done(job: FlareJob, first_env, next_env, timeout: float, retries_without_progress: int,
                     logs: Path) -> list[str]:
    """Submit the job, then resumed ones, until every round is saved; an error after too many in a row
    that saved nothing (``logs``: where the error sends the user)."""
    rounds, statuses, stalled = job.config.rounds, [], 0
    submit_to = first_env
    while True:
        before = job.rounds_done
        statuses.append(run_job(flare_recipe(job), submit_to, timeout))
        if job.rounds_done >= rounds:
            return statuses
        if (reason := refusal(job.results / SERVER_FOLDER)) is not None:
            raise TrainingError(f"the server refused the run: {reason}")
        stalled = 0 if job.rounds_done > before else stalled + 1
        if stalled > retries_without_progress:
            raise TrainingError(f"{stalled} FLARE job(s) in a row saved no round past {before} (statuses: "
                                f"{', '.join(statuses)}). Fix: read the site logs under {logs}.")
        job = dataclasses.replace(job, resume=True)
        submit_to = next_env()


def poc_admin_kit(workspace: Path) -> Path:
    """The admin's startup kit that FLARE's POC mode provisioned for the project ``loopback_project`` wrote."""
    return Path(workspace) / "poc" / JOB_NAME / "prod_00" / POC_ADMIN


def loopback_project(sites: tuple[str, ...], workspace: Path) -> Path:
    """FLARE's project file for a POC run: the server, the sites, the admin, on ports free now (so
    that two deployments on one machine, or another service on FLARE's default 8002/8003, do not
    collide)."""
    fed_port, admin_port = free_ports(2)
    request = ProvisionRequest(JOB_NAME, "server", tuple(sites), POC_ADMIN, fed_port=fed_port, admin_port=admin_port)
    path = Path(workspace) / "project.yml"
    write_json_atomic(path, project_config(request))  # JSON is YAML
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on localhost that nothing listens on at the moment of asking (all
    probes are held open together, so the system cannot hand out one port twice)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("localhost", 0))
        return [probe.getsockname()[1] for probe in probes]


def stop_processes_under(workspace: Path, grace: float = 30.0) -> list[int]:
    """Wait up to ``grace`` seconds for every process started from ``workspace`` (the POC sites and
    their shell wrappers) to exit after FLARE's stop, then terminate the rest by pid; their pids."""
    def started_here() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            if any(str(workspace) in part for part in (process.info["cmdline"] or [])):
                found.append(process)
        return found

    deadline = time.monotonic() + grace
    while (left := started_here()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(left, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    return [process.pid for process in left]
