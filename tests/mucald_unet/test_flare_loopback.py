"""The deployment on one machine (``mucald_train --engine flare-loopback``): FLARE provisions a
startup kit per site with mutual-TLS certificates, starts the server and every client as its own
process on localhost, and mucald trains to completion with float16 on the wire; each side keeps its
own records and both sides' manifests agree entry by entry (only features, gradients, weights and
counts crossed); every process it started is gone afterwards, FLARE wrote only under the run folder,
and the run folder's checkpoint (both sides' states joined) loads into the predictor like an
in-process run's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from inference.model import load_client_model
from mucald_unet.deployment.flare_apps import LOG_FILE, MANIFEST_FILE, SERVER_FOLDER, STATE_FILE
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


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sites_as_separate_processes_over_mutual_tls_train_mucald(tiny_federation: Path, tmp_path: Path) -> None:
    settings_before = home_settings()
    summary = train_on_loopback(tiny_federation, CLIENTS, quick_config(method="mucald", rounds=2, iterations=2),
                                tmp_path, narrow_wire=True)
    results, workspace = tmp_path / SITES_FOLDER, tmp_path / FLARE_FOLDER
    assert summary.rounds_done == 2 and set(summary.final_dice) == set(CLIENTS)

    kits = next((workspace / "poc").glob("*/prod_00"))
    server_kit = kits / "server" / "startup"
    assert {"rootCA.pem", "server.crt", "server.key"} <= {p.name for p in server_kit.iterdir()}
    assert json.loads((server_kit / "fed_server.json").read_text())["servers"][0]["connection_security"] == "mtls"
    (join, first, second) = read_lines(results / SERVER_FOLDER / LOG_FILE)
    assert (join["event"], join["resumed_at"]) == ("join", 0)
    assert join["sites"] == {site: {"rounds_done": 0, "caught_up": False} for site in CLIENTS}
    assert (first["round"], second["round"]) == (0, 1) and first["dropped"] == second["dropped"] == {}
    assert second["aggregation_weights"] == pytest.approx(dict.fromkeys(CLIENTS, 1 / 3))
    assert set(second["server_metrics"]) == set(CLIENTS)  # the discriminators trained on every site's steps
    server_manifest = read_lines(results / SERVER_FOLDER / MANIFEST_FILE)
    for site in CLIENTS:
        kit = kits / site / "startup"
        assert {"rootCA.pem", "client.crt", "client.key"} <= {p.name for p in kit.iterdir()}
        (_, last) = read_lines(results / site / LOG_FILE)
        assert last["round"] == 1 and 0.0 <= last["mean_val_dice"] <= 1.0 and "seg" in last["losses"]
        assert second["clients"][site]["mean_val_dice"] == pytest.approx(last["mean_val_dice"])
        state = load_plain(results / site / STATE_FILE)
        assert state["rounds_done"] == 2 and state["last_val_loss"] == pytest.approx(last["val_loss"])
        sent = read_lines(results / site / MANIFEST_FILE)  # what the client recorded sending and receiving
        assert sent == [e for e in server_manifest if e["client"] == site]  # = what the server recorded
        assert {e["kind"] for e in sent} == {"features", "gradient", "weights", "report", "ack"}
        assert {(e["round"], e["step"]) for e in sent if e["kind"] == "gradient"} == {(0, 0), (0, 1), (1, 0), (1, 1)}
        as_float32 = sum(e["bytes"] for e in sent if e["round"] == 1)
        assert 0.45 < last["wire_bytes"] / as_float32 < 0.6  # float16 on the wire: about half
    server_state = load_plain(results / SERVER_FOLDER / STATE_FILE)["server"]
    for site in CLIENTS:  # the joined checkpoint carries each side's weights as that side saved them
        model = load_client_model(tiny_federation, site, tmp_path / FINAL)
        deployed = model.server_segment.state_dict()
        assert all(torch.equal(v, deployed[k]) for k, v in server_state["segments"][site].items())
    assert processes_under(workspace) == []
    assert home_settings() == settings_before  # FLARE's ~/.nvflare of the user is not touched
