"""A startup kit as the site that holds it: who it is, where its own files are, how FLARE starts it.

On separate machines nothing may name another machine's paths, so a job carries no client path: each
hospital's ``mucald_client`` writes its own settings (its data folders, its results folder, its threads) into
its kit's ``local/`` folder, FLARE's place for site-local configuration, and the client app reads them
there when the job arrives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mucald_unet.errors import TrainingError
from preprocessing.atomic import write_json_atomic

SITE_SETTINGS_FILE = "mucald_site.json"
PROJECT_SITES_FILE = "mucald_sites.json"  # in the server's kit: the sites it was provisioned with
SITES_FOLDER = "sites"  # in a run folder: each side's own records, one folder per site


@dataclass(frozen=True)
class SiteSettings:
    """What a client site decides for itself; the job decides the training."""

    preprocessed: Path  # its preprocessed root: a federation's plans.json and its own cases, per federation
    results: Path  # its results root: a run's records go to <results>/<run path>/sites/<site>
    threads: int = 1  # torch threads of its training process (and processes of its planning)
    raw: Path | None = None  # its raw datasets' root, when the server may plan with it (mucald_server plan)

    def write(self, kit: Path) -> Path:
        path = Path(kit) / "local" / SITE_SETTINGS_FILE
        write_json_atomic(path, {"preprocessed": str(self.preprocessed), "results": str(self.results),
                                 "threads": self.threads, "raw": None if self.raw is None else str(self.raw)})
        return path

    @classmethod
    def read(cls, local_folder: Path) -> SiteSettings:
        """From a kit's ``local/`` folder (FLARE's site config folder in the job's process)."""
        path = Path(local_folder) / SITE_SETTINGS_FILE
        if not path.is_file():
            raise TrainingError(f"{path} is missing: this site was started without mucald's settings. Fix: start "
                                "it with mucald_client --kit KIT (not the kit's start.sh).")
        saved = json.loads(path.read_text())
        if "preprocessed" not in saved:
            raise TrainingError(f"{path} was written by an older mucald. Fix: start the site with mucald_client "
                                "--kit KIT again, which writes it anew.")
        raw = saved.get("raw")
        return cls(Path(saved["preprocessed"]), Path(saved["results"]), int(saved.get("threads", 1)),
                   None if raw is None else Path(raw))


@dataclass(frozen=True)
class Kit:
    """One participant's startup kit, as ``mucald_provision`` issued it."""

    folder: Path

    def __post_init__(self) -> None:
        if not (self.folder / "startup").is_dir():
            raise TrainingError(f"{self.folder} is not a FLARE startup kit (it has no startup/ folder). Fix: give "
                                "the kit folder that mucald_provision issued for this participant (see KITS.md).")

    @property
    def role(self) -> str:
        """"server", "client" or "admin": which configuration file the kit holds."""
        for role, name in (("server", "fed_server.json"), ("client", "fed_client.json"), ("admin", "fed_admin.json")):
            if (self.folder / "startup" / name).is_file():
                return role
        raise TrainingError(f"{self.folder / 'startup'} holds no fed_server.json, fed_client.json or "
                            "fed_admin.json. Fix: copy the whole kit folder again.")

    def expect(self, role: str) -> Kit:
        if self.role != role:
            raise TrainingError(f"{self.folder} is the {self.role}'s kit, not the {role}'s. Fix: give the {role}'s kit "
                                "(KITS.md beside the kits says which folder is whose).")
        return self

    @property
    def site_name(self) -> str:
        """A client's name as its certificate was issued to it: mucald names a site by its dataset."""
        return json.loads((self.folder / "startup" / "fed_client.json").read_text())["client"]["fqsn"]

    @property
    def admin_name(self) -> str:
        """The admin's user name (its e-mail), as its certificate was issued."""
        return json.loads((self.folder / "startup" / "fed_admin.json").read_text())["admin"]["username"]

    def write_sites(self, sites: tuple[str, ...]) -> Path:
        """Record in the server's kit which sites the project has (FLARE's server kit does not say)."""
        path = self.expect("server").folder / "local" / PROJECT_SITES_FILE
        write_json_atomic(path, {"sites": list(sites)})
        return path

    @property
    def project_sites(self) -> tuple[str, ...]:
        """The sites the server's kit was provisioned with, as ``write_sites`` recorded them."""
        path = self.expect("server").folder / "local" / PROJECT_SITES_FILE
        if not path.is_file():
            raise TrainingError(f"{path} is missing: this server kit was issued without mucald's list of sites. "
                                "Fix: issue the kits with mucald_provision, or name the sites in full with -d "
                                "(-d Dataset001_Name ...).")
        return tuple(json.loads(path.read_text())["sites"])

    def start(self, console: Path | None = None) -> subprocess.Popen:
        """FLARE's own start script (``--once``: no restart loop) in a session of its own (so that it can
        be stopped with everything it starts), with this Python first on the PATH, so the site runs the
        interpreter mucald is installed in. Its output goes to ``console``, or to ours."""
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        command = ["bash", str(self.folder / "startup" / "sub_start.sh"), "--once"]
        if console is None:
            return subprocess.Popen(command, env=env, start_new_session=True)
        with open(console, "ab") as output:
            return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
