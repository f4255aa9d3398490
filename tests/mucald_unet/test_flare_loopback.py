"""The deployment on one machine (``mucald_train --engine flare-loopback``): FLARE provisions a
startup kit per site with mutual-TLS certificates, starts the server and every client as its own
process on localhost, and mucald trains to completion with float16 on the wire, surviving the death
of one site's job process after its first round and then of the server's job process: FLARE fails
each of those jobs, the next one resumes every side from its saved state, a site that missed a round
catches up, and only the rounds the crashes hit are trained again. Each side keeps its own records
and both sides' manifests agree entry by entry outside the crashed rounds (only features, gradients,
weights and counts crossed), while in the crashed rounds too each message is on record at its sender; every process it started is gone afterwards, FLARE wrote only under the
run folder, and the run folder's checkpoint (both sides' states joined) loads into the predictor like
an in-process run's."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from inference.model import load_client_model
from mucald_unet.deployment.flare_apps import LOG_FILE, MANIFEST_FILE, SERVER_FOLDER, STATE_FILE
from mucald_unet.deployment.deployed_run import FLARE_FOLDER, SITES_FOLDER, train_on_loopback
from mucald_unet.errors import TrainingError
from mucald_unet.training.checkpoint import FINAL, join_digests, load_plain, plans_digest
from mucald_unet.training.trainer import CONFIG_FILE
from planners.plans import load_plans
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


def within(entries: list[dict], record: list[dict]) -> bool:
    """Whether every entry is in the record, as many times as it occurs."""
    left = [json.dumps(e, sort_keys=True) for e in record]
    for entry in entries:
        key = json.dumps(entry, sort_keys=True)
        if key not in left:
            return False
        left.remove(key)
    return True


ROUNDS, ITERATIONS = 4, 2
VICTIM = CLIENTS[1]


def kill_job_process(site: str) -> list[int]:
    """SIGKILL the FLARE job process of ``site`` ("server" or a client), not the site's parent."""
    job_module = "runner_process" if site == SERVER_FOLDER else "worker_process"
    killed = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        args = process.info["cmdline"] or []
        if any(job_module in a for a in args) and any(a.endswith(f"prod_00/{site}") for a in args):
            process.kill()
            killed.append(process.pid)
    return killed


def wait_for(condition, seconds: float = 600.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def crash_a_site_then_the_server(run_folder: Path, killed: list[int]) -> None:
    """The victim's job process once it has saved round 0; then, in the next job, the server's job
    process right after it saved a training phase (the sites are validating: they will catch up)."""
    sites = run_folder / SITES_FOLDER
    wait_for((sites / VICTIM / STATE_FILE).is_file)
    killed += kill_job_process(VICTIM)
    server_log, server_state = sites / SERVER_FOLDER / LOG_FILE, sites / SERVER_FOLDER / STATE_FILE
    wait_for(lambda: server_log.is_file() and server_log.read_text().count('{"event":"join"') == 2)
    saved_before = server_state.stat().st_mtime_ns
    wait_for(lambda: server_state.stat().st_mtime_ns != saved_before)
    killed += kill_job_process(SERVER_FOLDER)


def test_sites_as_separate_processes_over_mutual_tls_train_mucald_through_crashes(tiny_federation: Path,
                                                                                  tmp_path: Path) -> None:
    settings_before = home_settings()
    killed: list[int] = []
    killer = threading.Thread(target=crash_a_site_then_the_server, args=(tmp_path, killed), daemon=True)
    killer.start()
    summary = train_on_loopback(tiny_federation, CLIENTS, quick_config(method="mucald", rounds=ROUNDS,
                                                                        iterations=ITERATIONS),
                                tmp_path, narrow_wire=True)
    killer.join(timeout=5)
    results, workspace = tmp_path / SITES_FOLDER, tmp_path / FLARE_FOLDER
    assert len(killed) == 2 and summary.rounds_done == ROUNDS and set(summary.final_dice) == set(CLIENTS)
    jobs = json.loads((tmp_path / CONFIG_FILE).read_text())["flare_jobs"]
    assert len(jobs) == 3 and "COMPLETED" in jobs[-1]

    kits = next((workspace / "poc").glob("*/prod_00"))
    server_kit = kits / "server" / "startup"
    assert {"rootCA.pem", "server.crt", "server.key"} <= {p.name for p in server_kit.iterdir()}
    assert json.loads((server_kit / "fed_server.json").read_text())["servers"][0]["connection_security"] == "mtls"
    server_log = read_lines(results / SERVER_FOLDER / LOG_FILE)
    joins = [r for r in server_log if r["event"] == "join"]
    assert joins[0] == {"event": "join", "resumed_at": 0,
                        "sites": {site: {"rounds_done": 0, "caught_up": False,
                                         **join_digests(load_plans(tiny_federation), site)}
                                  for site in CLIENTS}}
    # the site's crash: round 1 again, or 2 where our server closed round 1 without the site
    (_, after_site, after_server) = (join["resumed_at"] for join in joins)
    assert after_site in (1, 2) and after_site < after_server < ROUNDS
    for join in joins:  # a site never runs ahead of the server; one behind takes the last averages
        for site, joined in join["sites"].items():
            assert joined["rounds_done"] <= join["resumed_at"]
            assert joined["caught_up"] == (joined["rounds_done"] < join["resumed_at"])
    assert any(joined["caught_up"] for joined in joins[-1]["sites"].values())  # the server died mid-validation
    rounds = [r for r in server_log if r["event"] == "round"]
    assert [r["round"] for r in rounds][-(ROUNDS - after_server):] == list(range(after_server, ROUNDS))
    assert all(set(r["dropped"]) <= {VICTIM} for r in rounds)
    last_round = rounds[-1]
    assert last_round["aggregation_weights"] == pytest.approx(dict.fromkeys(CLIENTS, 1 / 3))
    assert set(last_round["server_metrics"]) == set(CLIENTS)  # the discriminators trained on every site's steps
    server_manifest = read_lines(results / SERVER_FOLDER / MANIFEST_FILE)
    compared = set(range(ROUNDS)) - {1, after_server - 1}  # crashed rounds: an attempt and its replay
    for site in CLIENTS:
        kit = kits / site / "startup"
        assert {"rootCA.pem", "client.crt", "client.key"} <= {p.name for p in kit.iterdir()}
        logged = [r["round"] for r in read_lines(results / site / LOG_FILE)]
        assert logged == sorted(set(logged)) and logged[0] == 0  # a round trained again is logged once
        last = read_lines(results / site / LOG_FILE)[-1]
        assert last["round"] == ROUNDS - 1 and 0.0 <= last["mean_val_dice"] <= 1.0 and "seg" in last["losses"]
        assert last_round["clients"][site]["mean_val_dice"] == pytest.approx(last["mean_val_dice"])
        state = load_plain(results / site / STATE_FILE)
        assert state["rounds_done"] == ROUNDS and state["last_val_loss"] == pytest.approx(last["val_loss"])
        sent = [e for e in read_lines(results / site / MANIFEST_FILE) if e["round"] in compared]
        assert sent == [e for e in server_manifest if e["client"] == site and e["round"] in compared]
        # nothing crossed unrecorded, crashed rounds included: a sender records a message before sending it
        everything, theirs = read_lines(results / site / MANIFEST_FILE), [e for e in server_manifest
                                                                          if e["client"] == site]
        assert within([e for e in theirs if e["direction"] == "client->server"], everything)
        assert within([e for e in everything if e["direction"] == "server->client"], theirs)
        assert {e["kind"] for e in sent} == {"features", "gradient", "weights", "report", "ack"}
        gradients = [(e["round"], e["step"]) for e in sent if e["kind"] == "gradient"]
        # each step's two gradients (split 2 up, split 1 down) crossed once: no step was replayed
        assert sorted(gradients) == sorted(2 * [(r, s) for r in compared for s in range(ITERATIONS)])
        as_float32 = sum(e["bytes"] for e in sent if e["round"] == ROUNDS - 1)
        assert 0.45 < last["wire_bytes"] / as_float32 < 0.6  # float16 on the wire: about half
    server_state = load_plain(results / SERVER_FOLDER / STATE_FILE)["server"]
    for site in CLIENTS:  # the joined checkpoint carries each side's weights as that side saved them
        model = load_client_model(tiny_federation, site, tmp_path / FINAL)
        deployed = model.server_segment.state_dict()
        assert all(torch.equal(v, deployed[k]) for k, v in server_state["segments"][site].items())
    assert processes_under(workspace) == []
    assert home_settings() == settings_before  # FLARE's ~/.nvflare of the user is not touched


def test_resuming_a_deployed_run_needs_that_run_and_its_settings(tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="mucald", rounds=2, iterations=2)
    with pytest.raises(TrainingError, match="no deployed run to resume"):
        train_on_loopback(tiny_federation, CLIENTS, config, tmp_path, resume=True)
    with pytest.raises(TrainingError, match="contradict"):
        train_on_loopback(tiny_federation, CLIENTS, config, tmp_path, resume=True, overwrite=True)
    (tmp_path / SITES_FOLDER / SERVER_FOLDER).mkdir(parents=True)
    (tmp_path / SITES_FOLDER / SERVER_FOLDER / STATE_FILE).write_bytes(b"saved")  # only its presence is read
    started = {"training": quick_config(method="mucald", rounds=3, iterations=2).to_dict(),
               "plans_digest": plans_digest(load_plans(tiny_federation)), "clients": list(CLIENTS)}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(started))
    with pytest.raises(TrainingError, match=r"config.json: the run was started with other training settings"):
        train_on_loopback(tiny_federation, CLIENTS, config, tmp_path, resume=True)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**started, "training": config.to_dict(), "clients": CLIENTS[:2]}))
    with pytest.raises(TrainingError, match="other clients than"):
        train_on_loopback(tiny_federation, CLIENTS, config, tmp_path, resume=True)
    with pytest.raises(TrainingError, match="already holds a run. Fix: add --resume"):  # a stopped run is kept
        train_on_loopback(tiny_federation, CLIENTS, config, tmp_path)
    assert not (tmp_path / FLARE_FOLDER).exists()  # refused before anything was provisioned
