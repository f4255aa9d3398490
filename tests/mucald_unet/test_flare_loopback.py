"""The deployment on one machine: FLARE provisions a startup kit per site with mutual-TLS
certificates, starts the server and every client as its own process on localhost, and the job
trains to completion; every process it started is gone afterwards and FLARE wrote only under the
given workspace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mucald_unet.deployment.flare_apps import LOG_FILE, SERVER_FOLDER
from mucald_unet.deployment.flare_job import FlareJob, run_on_loopback
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


def processes_under(folder: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if str(folder) in line]


def home_settings() -> tuple[str, float] | None:
    """The user's FLARE settings file and its modification time, if there is one."""
    path = Path.home() / ".nvflare" / "config.conf"
    return (str(path), path.stat().st_mtime) if path.exists() else None


def test_sites_as_separate_processes_over_mutual_tls_train_a_round(tiny_federation: Path, tmp_path: Path) -> None:
    results, workspace = tmp_path / "results", tmp_path / "flare"
    settings_before = home_settings()
    job = FlareJob(tiny_federation, tuple(CLIENTS), quick_config(method="splitfed", rounds=1, iterations=2),
                   results, call_timeout=120.0)
    assert "COMPLETED" in run_on_loopback(job, workspace, timeout=600)

    kits = next((workspace / "poc").glob("*/prod_00"))
    server_kit = kits / "server" / "startup"
    assert {"rootCA.pem", "server.crt", "server.key"} <= {p.name for p in server_kit.iterdir()}
    assert json.loads((server_kit / "fed_server.json").read_text())["servers"][0]["connection_security"] == "mtls"
    for site in CLIENTS:
        kit = kits / site / "startup"
        assert {"rootCA.pem", "client.crt", "client.key"} <= {p.name for p in kit.iterdir()}
        (record,) = [json.loads(line) for line in (results / site / LOG_FILE).read_text().splitlines()]
        assert record["round"] == 0 and 0.0 <= record["mean_val_dice"] <= 1.0 and record["train_wire_bytes"] > 0
    assert (results / SERVER_FOLDER / LOG_FILE).is_file()
    assert processes_under(workspace) == []
    assert home_settings() == settings_before  # FLARE's ~/.nvflare of the user is not touched
