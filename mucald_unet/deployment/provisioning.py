"""Startup kits for a federation on separate machines, through FLARE's own provisioning.

``provision`` writes FLARE's project file (the server's host name and ports, one client site per
hospital, the project admin) and runs ``nvflare provision`` on it: FLARE issues the project's root
CA and a certificate and key per participant, so every connection is mutual TLS and a kit from
another provisioning (another root CA) is not accepted. ``KITS.md`` beside the kits says which
folder goes to which machine and how each one starts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mucald_unet.deployment.site_kits import Kit
from mucald_unet.errors import TrainingError
from planners.errors import PlanError
from planners.locate import dataset_number
from preprocessing.atomic import write_text_atomic

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class ProvisionRequest:
    """Who takes part, and where the server listens."""

    project: str
    server_host: str  # the name the hospitals reach the server by (its certificate is issued to it)
    sites: tuple[str, ...]  # one per hospital; mucald names a site by its dataset (Dataset002_LungCT)
    admin: str  # the project admin's e-mail: the one who submits jobs
    org: str = "mucald"
    fed_port: int = 8002
    admin_port: int = 8003

    def __post_init__(self) -> None:
        bad = [name for name in (self.project, self.server_host, *self.sites) if not SITE_NAME.match(name)]
        if bad:
            raise TrainingError(f"{bad[0]!r} cannot name a project, host or site. Fix: use letters, digits, "
                                "'_', '-' and '.' only.")
        if len(set(self.sites)) != len(self.sites) or not self.sites:
            raise TrainingError("each site must be named once, and at least one is needed. Fix: list every "
                                "hospital's site once with --sites.")
        if not EMAIL.match(self.admin):
            raise TrainingError(f"--admin {self.admin!r} is not an e-mail address. Fix: e.g. --admin "
                                "admin@hospital.org (FLARE names its admins by e-mail).")
        if self.fed_port == self.admin_port:
            raise TrainingError(f"--fed-port and --admin-port are both {self.fed_port}. Fix: give two ports.")


def project_config(request: ProvisionRequest) -> dict:
    """FLARE's project file (API version 3) for the request, with FLARE's standard builders."""
    participants = [{"name": request.server_host, "type": "server", "org": request.org,
                     "fed_learn_port": request.fed_port, "admin_port": request.admin_port}]
    participants += [{"name": site, "type": "client", "org": request.org} for site in request.sites]
    participants.append({"name": request.admin, "type": "admin", "org": request.org, "role": "project_admin"})
    builders = [{"path": "nvflare.lighter.impl.workspace.WorkspaceBuilder",
                 "args": {"template_file": ["master_template.yml"]}},
                {"path": "nvflare.lighter.impl.static_file.StaticFileBuilder", "args": {"config_folder": "config"}},
                {"path": "nvflare.lighter.impl.cert.CertBuilder"},
                {"path": "nvflare.lighter.impl.signature.SignatureBuilder"}]
    return {"api_version": 3, "name": request.project, "description": "mucald split-federated training",
            "participants": participants, "builders": builders}


@dataclass(frozen=True)
class Kits:
    """Where provisioning put each participant's startup kit."""

    server: Path
    sites: dict[str, Path]
    admin: Path
    guide: Path  # KITS.md


def provision(request: ProvisionRequest, out: Path, overwrite: bool = False) -> Kits:
    """Issue the kits into ``out``. FLARE provisions into a staging folder that is renamed into place,
    so ``out/workspace`` is complete or absent; ``overwrite`` replaces only what this wrote before."""
    out = Path(out)
    ours = [out / name for name in ("project.yml", "workspace", "KITS.md")]
    if any(path.exists() for path in ours) and not overwrite:
        raise TrainingError(f"{out} already holds kits. Fix: choose another folder, or add --overwrite to issue "
                            "new kits there (kits issued before stop working: a new root CA is made).")
    out.mkdir(parents=True, exist_ok=True)
    project_file = out / "project.yml"
    write_text_atomic(project_file, _yaml(project_config(request)))
    staging = out / ".workspace.partial"
    shutil.rmtree(staging, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "nvflare.cli", "provision", "-p", str(project_file),
                           "-w", str(staging), "--force"], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise TrainingError(f"FLARE's provisioning failed (exit {done.returncode}): "
                            f"{(done.stderr or done.stdout).strip()[-800:]}. Fix: check {project_file}.")
    workspace = out / "workspace"
    shutil.rmtree(workspace, ignore_errors=True)
    staging.rename(workspace)
    prod = sorted((workspace / request.project).glob("prod_*"))[-1]
    kits = Kits(prod / request.server_host, {site: prod / site for site in request.sites}, prod / request.admin,
                out / "KITS.md")
    write_text_atomic(kits.guide, kits_guide(request, kits))
    Kit(kits.server).write_sites(request.sites)  # so that the server can plan with -d ids
    return kits


def kits_guide(request: ProvisionRequest, kits: Kits) -> str:
    ids = " ".join(_dataset_reference(site) for site in kits.sites)
    lines = [f"# Startup kits of {request.project}", "",
             f"Issued by one provisioning: every kit trusts the same root CA (`startup/rootCA.pem`), and each "
             f"holds its own certificate and key, so connections are mutual TLS. Copy each folder, whole and "
             f"only, to its machine; the `.key` files are secrets.", "",
             "| kit | copy to | start with |", "|---|---|---|",
             f"| `{kits.server}` | the server, reachable as `{request.server_host}` on ports {request.fed_port} "
             f"(sites) and {request.admin_port} (admin) | `mucald_server plan -d {ids} --kit KIT --admin-kit ADMIN_KIT "
             f"--preprocessed DIR`, then `mucald_server -d {ids} --kit KIT --admin-kit ADMIN_KIT --preprocessed DIR "
             "--results DIR` |"]
    lines += [f"| `{path}` | hospital `{site}` | `mucald_client --kit KIT --raw DIR --preprocessed DIR --results DIR` |"
              for site, path in kits.sites.items()]
    lines += [f"| `{kits.admin}` | the project admin ({request.admin}), who submits jobs: beside the server's "
              "kit, for `mucald_server --admin-kit` | - |", "",
              "FLARE's own `startup/start.sh` starts a participant without mucald's settings; use the commands "
              "above (docs/deployment.md).", ""]
    return "\n".join(lines)


def _dataset_reference(site: str) -> str:
    """What ``-d`` takes for a site: its dataset id (``Dataset002_B`` -> 2), else its whole name."""
    try:
        return str(dataset_number(site))
    except PlanError:
        return site


def _yaml(data) -> str:
    """FLARE reads YAML; JSON is YAML, so no YAML writer is needed."""
    return json.dumps(data, indent=2) + "\n"
