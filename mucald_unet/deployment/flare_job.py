"""A federation's training as a FLARE job: the recipe, and running it in FLARE's simulator.

The simulator starts the server and every client site as FLARE sites on this machine, with the
same apps and message path a provisioned deployment uses; everything it writes stays under the
given workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvflare.collab import CollabRecipe
from nvflare.recipe import SimEnv

from mucald_unet.config import TrainingConfig
from mucald_unet.deployment.flare_apps import FlareClientApp, FlareServerApp

JOB_NAME = "mucald"
# installed at every site (the same version); FLARE must not copy their files into the job, where a
# partial copy without the packages' __init__ files would shadow the installed packages
INSTALLED_PACKAGES = ["mucald_unet", "planners", "preprocessing", "inference"]


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


def flare_recipe(job: FlareJob) -> CollabRecipe:
    config = job.config.to_dict()
    server = FlareServerApp(str(job.plans_path), list(job.clients), config, str(job.results),
                            job.call_timeout, job.threads, job.narrow_wire)
    client = FlareClientApp(str(job.plans_path), config, str(job.results), job.call_timeout, job.threads,
                            job.narrow_wire)
    recipe = CollabRecipe(job_name=JOB_NAME, server=server, client=client, min_clients=len(job.clients),
                          sync_task_timeout=job.call_timeout)
    recipe._job.set_app_packages(INSTALLED_PACKAGES)  # CollabRecipe exposes its FedJob only as ``_job``
    return recipe


def run_in_simulator(job: FlareJob, workspace: Path) -> Path:
    """Train the job with every site a FLARE simulator site; returns the simulator's job folder."""
    recipe = flare_recipe(job)
    recipe.run(SimEnv(clients=list(job.clients), workspace_root=str(workspace)))
    return Path(workspace) / JOB_NAME
