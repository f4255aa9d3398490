"""A startup kit as the site that holds it: who it is, where its own files are, how FLARE starts it.

On separate machines nothing may name another machine's paths, so a job carries no client path: each
hospital's ``mucald_client`` writes its own settings (its plans, its results folder, its threads) into
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
SITES_FOLDER = "sites"  # in a run folder: each side's own records, one folder per site


@dataclass(frozen=True)
class SiteSettings:
    """What a client site decides for itself; the job decides the training."""

    plans: Path  # this hospital's copy of the federation's plans.json, beside its preprocessed cases
    results: Path  # its results root: a run's records go to <results>/<run path>/sites/<site>
    threads: int = 1  # torch threads of its training process

    def write(self, kit: Path) -> Path:
        path = Path(kit) / "local" / SITE_SETTINGS_FILE
        write_json_atomic(path, {"plans": str(self.plans), "results": str(self.results), "threads": self.threads})
        return path

    @classmethod
    def read(cls, local_folder: Path) -> SiteSettings:
        """From a kit's ``local/`` folder (FLARE's site config folder in the job's process)."""
        path = Path(local_folder) / SITE_SETTINGS_FILE
        if not path.is_file():
            raise TrainingError(f"{path} is missing: this site was started without mucald's settings. Fix: start "
                                "it with mucald_client --kit KIT (not the kit's start.sh).")
        saved = json.loads(path.read_text())
        return cls(Path(saved["plans"]), Path(saved["results"]), int(saved.get("threads", 1)))


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
