"""Training through NVIDIA FLARE: the server and each client as FLARE sites in FLARE's simulator
(separate processes, every message through the Collab API as wire bytes, float32 narrowed to
float16), each side with its own
records, and both sides' manifests agreeing that only features, gradients, weights and counts crossed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucald_unet.deployment.flare_apps import LOG_FILE, MANIFEST_FILE, SERVER_FOLDER, STATE_FILE
from mucald_unet.deployment.flare_job import FlareJob, run_in_simulator
from mucald_unet.training.checkpoint import load_plain
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_mucald_round_trains_through_flare_sites(tiny_federation: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # FLARE must write only under the given folders
    (tmp_path / "home").mkdir()
    results = tmp_path / "results"
    job = FlareJob(tiny_federation, tuple(CLIENTS), quick_config(method="mucald", rounds=2, iterations=2), results,
                   call_timeout=120.0, narrow_wire=True)
    run_in_simulator(job, tmp_path / "flare")

    (first, second) = read_lines(results / SERVER_FOLDER / LOG_FILE)
    assert (first["round"], second["round"]) == (0, 1)
    assert second["aggregation_weights"] == pytest.approx(dict.fromkeys(CLIENTS, 1 / 3))
    assert set(second["server_metrics"]) == set(CLIENTS)  # the discriminators trained on every site's steps
    assert load_plain(results / SERVER_FOLDER / STATE_FILE)["rounds_done"] == 2
    server_manifest = read_lines(results / SERVER_FOLDER / MANIFEST_FILE)
    for site in CLIENTS:
        (record, last) = read_lines(results / site / LOG_FILE)
        assert last["round"] == 1 and 0.0 <= last["mean_val_dice"] <= 1.0
        assert second["clients"][site]["mean_val_dice"] == pytest.approx(last["mean_val_dice"])
        assert last["train_bytes_crossed"] > 0 and "seg" in last["losses"]
        state = load_plain(results / site / STATE_FILE)
        assert state["rounds_done"] == 2 and state["last_val_loss"] == pytest.approx(last["val_loss"])
        sent = read_lines(results / site / MANIFEST_FILE)  # what the client recorded sending and receiving
        assert sent == [e for e in server_manifest if e["client"] == site]  # = what the server recorded
        assert {e["kind"] for e in sent} == {"features", "gradient", "weights", "report", "ack"}
        steps = {(e["round"], e["step"]) for e in sent if e["kind"] == "gradient"}
        assert steps == {(r, s) for r in range(2) for s in range(2)}
        as_float32 = sum(e["bytes"] for e in sent if e["round"] == 1)
        assert 0.45 < last["wire_bytes"] / as_float32 < 0.6  # float16 on the wire: about half
    assert not (tmp_path / "home" / ".nvflare").exists()  # FLARE's default, redirected to the workspace
