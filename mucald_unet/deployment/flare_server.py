"""FLARE's server started from its startup kit, and jobs submitted to it: what both of the server's
commands need (planning and training), without importing either's site apps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

from nvflare.recipe import ProdEnv

from mucald_unet.deployment.site_kits import Kit
from mucald_unet.errors import TrainingError


@contextlib.contextmanager
def server_from_kit(server_kit: Kit, admin_kit: Kit, login_timeout: float = 120.0) -> Iterator[ProdEnv]:
    """FLARE's server started from its kit on this machine, and the admin's session to submit jobs to it;
    the server is stopped with everything it started when the block ends. Its console goes to
    ``server_console.txt`` in its kit (FLARE's own log.txt is beside it)."""
    server = server_kit.expect("server").start(server_kit.folder / "server_console.txt")
    try:
        yield ProdEnv(str(admin_kit.expect("admin").folder), login_timeout=login_timeout,
                      username=admin_kit.admin_name)
    finally:
        stop_process_group(server)


def stop_process_group(process, grace: float = 30.0) -> None:
    """Stop a process started in its own session and everything it started (SIGTERM, then SIGKILL)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_job(recipe: CollabRecipe, env, timeout: float) -> str:
    """Submit, wait, and return FLARE's final status. Through the environment, not ``Run.get_result``,
    which stops the POC services after the job, and the next job needs them."""
    job_id = recipe.run(env).get_job_id()
    if env.get_job_result(job_id, timeout=timeout) is None:  # still running (the caller stops the services)
        raise TrainingError(f"the FLARE job {job_id} did not finish within {timeout:g} s. Fix: give the run more "
                            "time, or read the site logs for a site that stopped answering.")
    return str(env.get_job_status(job_id))
