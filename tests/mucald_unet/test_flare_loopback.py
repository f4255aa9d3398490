"""The deployment on one machine (``mucald_train --engine flare-loopback``): FLARE provisions a
startup kit per site with mutual-TLS certificates, starts the server and every client as its own
process on localhost, and the job trains to completion; every process it started is gone afterwards,
FLARE wrote only under the run folder, and the run folder's checkpoint (both sides' states joined)
loads into the predictor like an in-process run's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from inference.model import load_client_model
from mucald_unet.deployment.flare_apps import LOG_FILE, SERVER_FOLDER, STATE_FILE
from mucald_unet.deployment.loopback_run import FLARE_FOLDER, SITES_FOLDER, train_on_loopback
from mucald_unet.training.checkpoint import FINAL, load_plain
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
    settings_before = home_settings()
    summary = train_on_loopback(tiny_federation, CLIENTS, quick_config(method="splitfed", rounds=1, iterations=2),
                                tmp_path)
    results, workspace = tmp_path / SITES_FOLDER, tmp_path / FLARE_FOLDER
    assert summary.rounds_done == 1 and set(summary.final_dice) == set(CLIENTS)

    kits = next((workspace / "poc").glob("*/prod_00"))
    server_kit = kits / "server" / "startup"
    assert {"rootCA.pem", "server.crt", "server.key"} <= {p.name for p in server_kit.iterdir()}
    assert json.loads((server_kit / "fed_server.json").read_text())["servers"][0]["connection_security"] == "mtls"
    for site in CLIENTS:
        kit = kits / site / "startup"
        assert {"rootCA.pem", "client.crt", "client.key"} <= {p.name for p in kit.iterdir()}
        (record,) = [json.loads(line) for line in (results / site / LOG_FILE).read_text().splitlines()]
        assert record["round"] == 0 and 0.0 <= record["mean_val_dice"] <= 1.0 and record["train_wire_bytes"] > 0
    server_state = load_plain(results / SERVER_FOLDER / STATE_FILE)["server"]
    for site in CLIENTS:  # the joined checkpoint carries each side's weights as that side saved them
        model = load_client_model(tiny_federation, site, tmp_path / FINAL)
        deployed = model.server_segment.state_dict()
        assert all(torch.equal(v, deployed[k]) for k, v in server_state["segments"][site].items())
    assert processes_under(workspace) == []
    assert home_settings() == settings_before  # FLARE's ~/.nvflare of the user is not touched
