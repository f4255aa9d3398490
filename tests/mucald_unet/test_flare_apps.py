"""The FLARE apps' pieces that need no running FLARE: a failed group call stops the run naming each
failed site and why, each site's seed is fixed by --seed and its name but differs between sites, the
job waits for every site to be connected, and the driver refuses to go on past a job that has not
finished in its time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucald_unet.deployment.flare_apps import _completed, site_seed
from mucald_unet.config import TrainingConfig
from mucald_unet.deployment.flare_job import JOB_NAME, FlareJob, run_job, flare_recipe
from mucald_unet.errors import TrainingError


class GroupResults(list):
    """What a FLARE group call returns: (site, result) pairs and a mapping of the sites that failed."""

    def __init__(self, results: list[tuple[str, object]], failures: dict[str, Exception]) -> None:
        super().__init__(results)
        self.failures = failures


def test_a_group_call_without_failures_gives_each_sites_result() -> None:
    assert _completed(GroupResults([("A", {"x": 1}), ("B", None)], {}), "training") == {"A": {"x": 1}, "B": None}


def test_a_failed_site_stops_the_run_with_its_name_and_reason() -> None:
    results = GroupResults([("A", 1)], {"C": TimeoutError("no answer in 600 s"), "B": RuntimeError("crashed")})
    with pytest.raises(TrainingError, match=r"training failed at 2 site\(s\): B: crashed; C: no answer in 600 s"):
        _completed(results, "training")


def test_site_seeds_follow_the_run_seed_and_differ_between_sites() -> None:
    assert site_seed(0, "Dataset001_A") == site_seed(0, "Dataset001_A")
    assert len({site_seed(0, "Dataset001_A"), site_seed(0, "Dataset002_B"), site_seed(1, "Dataset001_A")}) == 3
    assert 0 <= site_seed(7, "Dataset001_A") < 2 ** 32  # numpy's and random's seed range


class StillRunning:
    """An execution environment whose job never finishes in the time given."""

    def get_job_result(self, job_id: str, timeout: float) -> None:
        return None  # what FLARE's session manager answers on a timeout

    def get_job_status(self, job_id: str) -> str:
        return "RUNNING"


class Submitted:
    def run(self, env):
        return type("Run", (), {"get_job_id": lambda self: "job-1"})()


def test_a_job_not_finished_in_time_stops_the_driver_instead_of_counting_as_ended() -> None:
    with pytest.raises(TrainingError, match="the FLARE job job-1 did not finish within 5 s"):
        run_job(Submitted(), StillRunning(), timeout=5.0)


def test_the_job_names_every_site_as_mandatory_so_flare_holds_it_until_all_are_connected(tmp_path: Path) -> None:
    """FLARE deploys "@ALL" to the sites online when it schedules; without this a site one second late
    to register was left out of the first job and the server failed on the missing site (seen in CI)."""
    job = FlareJob(tmp_path / "plans.json", ("Dataset001_A", "Dataset002_B"), TrainingConfig(), tmp_path / "results")
    flare_recipe(job).export(str(tmp_path / "exported"))
    meta = json.loads((tmp_path / "exported" / JOB_NAME / "meta.json").read_text())
    assert meta["mandatory_clients"] == ["Dataset001_A", "Dataset002_B"]
    assert meta["deploy_map"] == {"app": ["@ALL"]}
