"""The planning job's server app without FLARE: its group calls answered by stand-ins, to show what it
refuses. (The whole job over FLARE, with real sites, is test_separate_sites.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucald_unet.deployment.flare_planning import PLANNING_LOG, FlarePlanningServerApp
from mucald_unet.errors import TrainingError
from planners.budget import Preset
from planners.planner import PlannerConfig
from planners.plans import SHARED_PLAN_FILE
from tests.conftest import CLIENTS
from tests.mucald_unet.test_flare_server_app import GroupResults

PLANNER = PlannerConfig(preset=Preset("cpu"), dimensionality="2d", split_channels=16)


class CannedSites:
    """A group call whose every site answers each stage as given (or fails, with the given reason)."""

    def __init__(self, answers: dict[str, dict[str, object]]) -> None:
        self.answers = answers

    def _stage(self, stage: str) -> GroupResults:
        answered = {site: by_stage[stage] for site, by_stage in self.answers.items()}
        failed = {site: answer for site, answer in answered.items() if isinstance(answer, Exception)}
        return GroupResults([(s, a) for s, a in answered.items() if s not in failed], failed)

    def analyse(self) -> GroupResults:
        return self._stage("analyse")

    def offer(self, dims: int, num_clients: int) -> GroupResults:
        return self._stage("offer")

    def finish(self, federation: dict) -> GroupResults:
        return self._stage("finish")


def offer(site: str) -> dict:
    return {"offer": {"dataset_name": site, "patch_spacing": [1.0, 1.0], "patch": [64, 64]}, "warnings": []}


def server(tmp_path: Path, answers: dict) -> FlarePlanningServerApp:
    app = FlarePlanningServerApp(list(CLIENTS), PLANNER.to_dict(), str(tmp_path / SHARED_PLAN_FILE), 60.0)
    app._group = lambda: CannedSites(answers)  # in place of FLARE's group call
    return app


def test_a_site_that_cannot_plan_is_named_with_its_reason_and_no_shared_plan_is_written(tmp_path: Path) -> None:
    answers = {site: {"analyse": 2} for site in CLIENTS}
    answers[CLIENTS[1]]["analyse"] = TrainingError(f"{CLIENTS[1]} has no raw data to plan with")
    with pytest.raises(TrainingError, match=rf"stage 'analyse' failed at 1 site\(s\): {CLIENTS[1]}: .*no raw data"):
        server(tmp_path, answers).run()
    assert not (tmp_path / SHARED_PLAN_FILE).exists()


def test_an_offer_for_another_site_and_a_shared_plan_written_otherwise_are_refused(tmp_path: Path) -> None:
    answers = {site: {"analyse": 2, "offer": offer(site), "finish": "?"} for site in CLIENTS}
    answers[CLIENTS[2]]["offer"] = offer(CLIENTS[0])
    with pytest.raises(TrainingError, match=rf"site {CLIENTS[2]} sent an offer for {CLIENTS[0]}"):
        server(tmp_path, answers).run()
    answers[CLIENTS[2]]["offer"] = offer(CLIENTS[2])
    with pytest.raises(TrainingError, match="wrote another shared plan than the server sent"):
        server(tmp_path, answers).run()
    assert not (tmp_path / SHARED_PLAN_FILE).exists()
    logged = [json.loads(line) for line in (tmp_path / PLANNING_LOG).read_text().splitlines()]
    assert [r["event"] for r in logged][-3:] == ["analyse", "offer", "finish"]
    assert logged[-2]["dims"] == 2 and logged[-2]["offers"][CLIENTS[0]] == offer(CLIENTS[0])
