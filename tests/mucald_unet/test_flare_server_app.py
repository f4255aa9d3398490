"""The FLARE server app's round logic without FLARE: its group calls answered by real client runners
in this process. A site that fails in the middle of a round's training is dropped, the round is
averaged over the others and recorded with the reason, and the job ends for the driver to resubmit;
with fewer survivors than ``min_clients`` the run stops naming the lost site; a site whose plan is not
the server's is refused at the join, before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mucald_unet.deployment.flare_apps import LOG_FILE, SERVER_FOLDER, STATE_FILE, FlareServerApp, refusal
from mucald_unet.deployment import flare_job
from mucald_unet.deployment.flare_job import FlareJob
from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import Message
from mucald_unet.federation.transport import InMemoryTransport
from mucald_unet.training.checkpoint import join_digests, load_plain
from mucald_unet.training.run_log import RunLog
from mucald_unet.training.runners import ClientRunner, load_client_data
from planners.plans import PLANS_FILE, SHARED_PLAN_FILE, load_plans, load_shared_plan, save_shared_plan
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config

VICTIM = CLIENTS[1]
ROUNDS, ITERATIONS, FAILING_ROUND = 3, 2, 1


class SiteLost(ConnectionError):
    """What the victim's link raises once it is cut."""


class CutLink:
    """The victim's transport: it carries messages until the failing round's second step."""

    def __init__(self, inner: InMemoryTransport) -> None:
        self.inner = inner

    def request(self, message: Message) -> Message:
        if message.round == FAILING_ROUND and message.step >= 1:
            raise SiteLost(f"link to {message.client} cut at round {message.round}, step {message.step}")
        return self.inner.request(message)


class GroupResults(list):
    """A FLARE group call's answer: (site, result) pairs and the sites that failed, with why."""

    def __init__(self, results: list, failures: dict) -> None:
        super().__init__(results)
        self.failures = failures


class Group:
    """``collab.get_clients(sites)(timeout=...)``: each method is called on every site in turn."""

    def __init__(self, sites: list[str], runners: dict[str, ClientRunner], digests: dict[str, str]) -> None:
        self.sites, self.runners, self.digests = sites, runners, digests

    def _each(self, call) -> GroupResults:
        results, failures = [], {}
        for site in self.sites:
            try:
                results.append((site, call(self.runners[site])))
            except SiteLost as lost:
                failures[site] = lost
        return GroupResults(results, failures)

    def join(self, next_round: int) -> GroupResults:
        return self._each(lambda runner: runner.join() or {"rounds_done": next_round, "caught_up": False,
                                                           **self.digests[runner.name]})

    def fetch_roster(self) -> GroupResults:
        return self._each(lambda runner: runner.fetch_roster())

    def train_round(self, round_index: int) -> GroupResults:
        return self._each(lambda runner: runner.train_round(round_index))

    def finish_round(self, round_index: int) -> GroupResults:
        return self._each(lambda runner: {"mean_val_dice": runner.finish_round(round_index).mean_dice})


def server_app_with_sites(plans_path: Path, results: Path, min_clients: int,
                          victim_plans: Path | None = None, server_plan: Path | None = None) -> FlareServerApp:
    """``victim_plans``: the plans the victim site planned with (default: the server's); ``server_plan``:
    the server's (default: the sites' plans.json)."""
    config = quick_config(method="mucald", rounds=ROUNDS, iterations=ITERATIONS)
    app = FlareServerApp(str(server_plan or plans_path), list(CLIENTS), config.to_dict(), str(results),
                         min_clients=min_clients)
    app.start()
    plans = load_plans(plans_path)
    link = InMemoryTransport(app._runner)
    runners = {name: ClientRunner(name, plans, config, load_client_data(plans_path, plans, name, config),
                                  CutLink(link) if name == VICTIM else link) for name in CLIENTS}
    digests = {name: join_digests(load_plans(victim_plans if name == VICTIM and victim_plans else plans_path), name)
               for name in CLIENTS}
    app._group = lambda sites: Group(sites, runners, digests)  # in place of FLARE's group call
    return app


def test_a_site_lost_mid_round_is_dropped_and_the_round_averaged_over_the_others(tiny_federation: Path,
                                                                                tmp_path: Path) -> None:
    torch.manual_seed(0)
    app = server_app_with_sites(tiny_federation, tmp_path, min_clients=2)
    history = app.run()

    assert [r["round"] for r in history] == [0, FAILING_ROUND]  # the job ends after the round with a drop
    survivors = [c for c in CLIENTS if c != VICTIM]
    lost = history[-1]
    assert list(lost["dropped"]) == [VICTIM] and "cut at round 1, step 1" in lost["dropped"][VICTIM]
    assert lost["aggregation_weights"] == pytest.approx(dict.fromkeys(survivors, 0.5))
    assert sorted(lost["clients"]) == survivors and history[0]["dropped"] == {}
    assert load_plain(tmp_path / SERVER_FOLDER / STATE_FILE)["rounds_done"] == FAILING_ROUND + 1
    logged = [json.loads(line) for line in (tmp_path / SERVER_FOLDER / LOG_FILE).read_text().splitlines()]
    assert [r.get("round") for r in logged] == [None, 0, FAILING_ROUND]  # the join, then both rounds
    assert refusal(tmp_path / SERVER_FOLDER) is None  # a lost site is no refusal: the driver resubmits
    server = app._runner.server
    assert server.dropped == {VICTIM} and server._pending == {} and server._backward_done == {}


def test_fewer_survivors_than_min_clients_stop_the_run_naming_the_lost_site(tiny_federation: Path,
                                                                            tmp_path: Path) -> None:
    torch.manual_seed(0)
    app = server_app_with_sites(tiny_federation, tmp_path, min_clients=len(CLIENTS))
    with pytest.raises(TrainingError, match=rf"round 1: only 2 site\(s\) finished training, fewer than the 3 "
                                            rf"required; lost: .*{VICTIM}"):
        app.run()
    assert load_plain(tmp_path / SERVER_FOLDER / STATE_FILE)["rounds_done"] == 1  # round 0 stays saved


def test_a_site_planned_with_another_plan_is_refused_at_the_join(tiny_federation: Path, tmp_path: Path) -> None:
    document = json.loads(tiny_federation.read_text())
    document["clients"][VICTIM]["batch_size"] += 1  # the site's own plan differs from the server's copy
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / PLANS_FILE).write_text(json.dumps(document))
    torch.manual_seed(0)
    app = server_app_with_sites(tiny_federation, tmp_path, min_clients=1, victim_plans=tmp_path / "site" / PLANS_FILE)
    with pytest.raises(TrainingError, match=rf"^{VICTIM} planned with another plan than the server's .*Fix: "
                                            "plan the federation again"):
        app.run()
    assert not (tmp_path / SERVER_FOLDER / STATE_FILE).exists()  # refused before any round
    assert refusal(tmp_path / SERVER_FOLDER).startswith(f"{VICTIM} planned with another plan")  # for the driver


def test_a_server_planned_site_by_site_trains_from_the_shared_plan_and_checks_only_that(tiny_federation: Path,
                                                                                        tmp_path: Path) -> None:
    """Its federation.json holds no site's own plan: a site's own plan is the site's, the shared one is not."""
    shared = tmp_path / "server" / SHARED_PLAN_FILE
    save_shared_plan(load_shared_plan(tiny_federation), shared)
    document = json.loads(tiny_federation.read_text())
    document["clients"][VICTIM]["batch_size"] += 1
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / PLANS_FILE).write_text(json.dumps(document))
    torch.manual_seed(0)
    history = server_app_with_sites(tiny_federation, tmp_path / "a", 2, tmp_path / "own" / PLANS_FILE, shared).run()
    assert history[0]["round"] == 0 and sorted(history[0]["clients"]) == CLIENTS  # trained with every site

    document["federation"]["diffusion"]["eval_timestep"] += 1  # now the shared plan differs too
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / PLANS_FILE).write_text(json.dumps(document))
    app = server_app_with_sites(tiny_federation, tmp_path / "b", 2, tmp_path / "other" / PLANS_FILE, shared)
    with pytest.raises(TrainingError, match=rf"^{VICTIM} planned with another plan than the server's .*{SHARED_PLAN_FILE}"):
        app.run()


def test_the_job_driver_resubmits_a_job_that_saved_nothing_but_not_one_the_server_refused(
        tiny_federation: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = FlareJob(tiny_federation, tuple(CLIENTS), quick_config(rounds=2), tmp_path)
    submitted = []

    def refused_the_second_time(recipe, env, timeout: float) -> str:
        submitted.append(env)
        if len(submitted) == 2:
            RunLog(tmp_path / SERVER_FOLDER / LOG_FILE).append({"event": "refused", "reason": "X planned otherwise"})
        return "FINISHED:COMPLETED"

    monkeypatch.setattr(flare_job, "run_job", refused_the_second_time)
    with pytest.raises(TrainingError, match="^the server refused the run: X planned otherwise$"):
        flare_job._jobs_until_done(job, "first", lambda: "next", 10.0, 5, tmp_path)
    assert submitted == ["first", "next"]
