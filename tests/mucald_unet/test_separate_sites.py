"""A federation on separate machines, as hospitals run it: ``mucald_provision`` issues the kits, each
hospital holds only its own raw dataset in its own folders and runs ``mucald_client`` from its kit,
and the server, which never holds a case, plans the federation site by site (``mucald_server plan``:
each site gets the plan the single-process pipeline makes) and trains it (``mucald_server``), both
from its kit and submitting with the admin's. Every process talks over mutual TLS on loopback; each
side's files land on its own "machine" only, the two sides' manifests agree entry by entry (only
features, gradients, weights and counts crossed), and every process is stopped by pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mucald_unet.commands.provision import main as provision_main
from mucald_unet.commands.server import main as server_main
from mucald_unet.deployment.flare_apps import LOG_FILE, MANIFEST_FILE, SERVER_FOLDER, STATE_FILE
from mucald_unet.deployment.flare_job import free_ports, stop_processes_under
from mucald_unet.deployment.site_kits import SITE_SETTINGS_FILE, SITES_FOLDER
from mucald_unet.training.checkpoint import load_plain
from mucald_unet.deployment.flare_planning import PLANNING_LOG
from mucald_unet.training.checkpoint import site_plans_digest
from planners.pipeline import CASES_FOLDER
from planners.plans import PLANS_FILE, SHARED_PLAN_FILE, load_plans, load_shared_plan
from tests.conftest import CLIENTS

ROUNDS, ITERATIONS = 2, 2
ADMIN = "admin@hospital.org"
WATCHDOG_SECONDS = 900  # a federation that never forms fails the test instead of holding CI


def _watchdog_fired(signum, frame) -> None:
    raise TimeoutError(f"the federation did not finish within {WATCHDOG_SECONDS} s")


def hospital_with(machine: Path, raw: Path, own_dataset: str) -> None:
    """A hospital's machine: the raw cases of its own dataset only."""
    shutil.copytree(raw / own_dataset, machine / "raw" / own_dataset)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start_hospital(kit: Path, machine: Path) -> subprocess.Popen:
    console = open(machine / "console.txt", "wb")  # noqa: SIM115 - the process owns it until it is stopped
    return subprocess.Popen([sys.executable, "-m", "mucald_unet.commands.client", "--kit", str(kit), "--raw",
                             str(machine / "raw"), "--preprocessed", str(machine / "preprocessed"), "--results",
                             str(machine / "results"), "--threads", "1"], env={**os.environ, "HOME": str(machine)},
                            stdout=console, stderr=subprocess.STDOUT)


def test_hospitals_and_the_server_plan_and_train_from_their_own_kits_and_folders(tiny_federation: Path,
                                                                                  tmp_path: Path) -> None:
    user_settings = Path.home() / ".nvflare"
    had_settings = user_settings.exists()
    fed_port, admin_port = free_ports(2)
    assert provision_main(["-o", str(tmp_path / "kits"), "--server", "localhost", "--sites", *CLIENTS, "--admin",
                           ADMIN, "--fed-port", str(fed_port), "--admin-port", str(admin_port)]) == 0
    prod = next((tmp_path / "kits" / "workspace" / "mucald").glob("prod_*"))
    server_machine = tmp_path / "server"
    server_preprocessed = server_machine / "preprocessed"
    kits = ["--kit", str(prod / "localhost"), "--admin-kit", str(prod / ADMIN)]
    hospitals = {}
    previous = signal.signal(signal.SIGALRM, _watchdog_fired)
    signal.alarm(WATCHDOG_SECONDS)
    try:
        for site in CLIENTS:
            hospital_with(tmp_path / site, tiny_federation.parent.parent.parent / "raw", site)
            hospitals[site] = start_hospital(prod / site, tmp_path / site)
        # the tiny_federation fixture's planner settings
        planned = server_main(["plan", "-d", "1", "2", "3", "--preprocessed", str(server_preprocessed), *kits,
                               "--target", "cpu", "--config", "2d", "--split-width", "16"])
        code = planned or server_main(["-d", "1", "2", "3", "--preprocessed", str(server_preprocessed), "--results",
                                       str(server_machine / "results"), *kits, "--rounds", str(ROUNDS), "--iters",
                                       str(ITERATIONS), "--wire-dtype", "float16"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        for process in hospitals.values():
            process.send_signal(signal.SIGTERM)  # mucald_client stops its FLARE client with everything it started
        exit_codes = [process.wait(timeout=60) for process in hospitals.values()]
        leftovers = stop_processes_under(tmp_path.resolve(), grace=10)
    consoles = {site: (tmp_path / site / "console.txt").read_text(errors="replace")[-1500:] for site in CLIENTS}
    assert code == 0, consoles
    assert leftovers == [] and all(c is not None for c in exit_codes)
    assert user_settings.exists() == had_settings  # FLARE's settings in the user's home are not touched

    (run_folder,) = (server_machine / "results").glob("*/*__flare__wire-float16/fold_0")
    assert sorted(p.name for p in (run_folder / SITES_FOLDER).iterdir()) == [SERVER_FOLDER]  # no site's records
    server_records = run_folder / SITES_FOLDER / SERVER_FOLDER
    rounds = [r for r in read_lines(server_records / LOG_FILE) if r["event"] == "round"]
    assert [r["round"] for r in rounds] == list(range(ROUNDS)) and all(not r["dropped"] for r in rounds)
    assert rounds[-1]["aggregation_weights"] == pytest.approx(dict.fromkeys(CLIENTS, 1 / 3))
    assert load_plain(server_records / STATE_FILE)["rounds_done"] == ROUNDS
    server_manifest = read_lines(server_records / MANIFEST_FILE)
    run_path = run_folder.relative_to(server_machine / "results")
    for site in CLIENTS:
        machine = tmp_path / site
        settings = json.loads((prod / site / "local" / SITE_SETTINGS_FILE).read_text())
        assert Path(settings["results"]) == (machine / "results").resolve() and settings["threads"] == 1
        records = machine / "results" / run_path / SITES_FOLDER / site
        assert sorted(p.name for p in records.parent.iterdir()) == [site]
        logged = read_lines(records / LOG_FILE)
        assert [r["round"] for r in logged] == list(range(ROUNDS))
        assert rounds[-1]["clients"][site]["mean_val_dice"] == pytest.approx(logged[-1]["mean_val_dice"])
        assert load_plain(records / STATE_FILE)["rounds_done"] == ROUNDS
        sent = read_lines(records / MANIFEST_FILE)
        assert sent == [entry for entry in server_manifest if entry["client"] == site]
        assert {entry["kind"] for entry in sent} == {"features", "gradient", "weights", "report", "ack"}
        assert 0.45 < logged[-1]["wire_bytes"] / sum(e["bytes"] for e in sent if e["round"] == ROUNDS - 1) < 0.6
    single = load_plans(tiny_federation)  # the single-process pipeline's plan of the same datasets
    shared = load_shared_plan(server_preprocessed / tiny_federation.parent.name / SHARED_PLAN_FILE)
    assert shared.federation == single.federation and shared.clients == tuple(CLIENTS)
    for site in CLIENTS:  # a hospital holds its own plan and cases only, equal to the single process's
        folder = tmp_path / site / "preprocessed" / tiny_federation.parent.name
        assert {p.name for p in folder.iterdir()} == {PLANS_FILE, site}
        own = load_plans(folder / PLANS_FILE)
        assert list(own.clients) == [site] and site_plans_digest(own, site) == site_plans_digest(single, site)
        assert sorted(p.name for p in (folder / site / CASES_FOLDER).iterdir()) == \
            sorted(p.name for p in (tiny_federation.parent / site / CASES_FOLDER).iterdir())
    held = {p.name for p in (server_preprocessed / tiny_federation.parent.name).iterdir()}
    assert held == {SHARED_PLAN_FILE, PLANNING_LOG}  # the server: the shared plan and what the sites sent
    sent = read_lines(server_preprocessed / tiny_federation.parent.name / PLANNING_LOG)
    assert [r["event"] for r in sent] == ["analyse", "offer", "finish"]
    assert set(sent[1]["offers"][CLIENTS[0]]) == {"offer", "warnings"}
    assert set(sent[1]["offers"][CLIENTS[0]]["offer"]) == {"dataset_name", "patch_spacing", "patch"}
