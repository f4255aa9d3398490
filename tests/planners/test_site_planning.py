"""Planning site by site: each site with only its own raw data and folders, the server with only what
the sites offer, and the result the single-process pipeline's for every site."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mucald_unet.training.checkpoint import site_plans_digest
from planners.budget import Preset
from planners.errors import PlanError
from planners.pipeline import CASES_FOLDER, PROXIES_FILE, PipelineConfig
from planners.planner import PlannerConfig, SiteOffer
from planners.plans import load_plans, load_shared_plan, save_shared_plan
from planners.site_planning import SitePlanner, plan_site_by_site
from tests.conftest import CLIENTS

# the tiny_federation fixture's planner settings
PLANNER = PlannerConfig(preset=Preset("cpu"), dimensionality="2d", split_channels=16)


def site_planner(raw: Path, machine: Path, site: str, federation: str) -> SitePlanner:
    config = PipelineConfig(raw_root=raw, preprocessed_root=machine / "preprocessed", datasets=(site,),
                            planner=PLANNER)
    return SitePlanner(config, federation)


def test_each_site_planned_on_its_own_gets_the_single_process_plan_and_cases(tiny_federation: Path,
                                                                             tmp_path: Path) -> None:
    raw = tiny_federation.parent.parent.parent / "raw"
    federation = tiny_federation.parent.name
    sites = [site_planner(raw, tmp_path / site, site, federation) for site in CLIENTS]
    shared = plan_site_by_site(sites, PLANNER)

    single = load_plans(tiny_federation)
    assert shared.federation == single.federation and shared.clients == tuple(CLIENTS)
    assert [SiteOffer.from_dict(offer).dataset_name for offer in shared.offers] == CLIENTS
    for site in sites:
        own = load_plans(site.plans_path)
        assert list(own.clients) == [site.name]  # a site's plan holds no other site
        assert site_plans_digest(own, site.name) == site_plans_digest(single, site.name)
        here, there = site.folder / site.name, tiny_federation.parent / site.name
        assert (here / PROXIES_FILE).read_text() == (there / PROXIES_FILE).read_text()
        cases = sorted(p.name for p in (here / CASES_FOLDER).iterdir())
        assert cases == sorted(p.name for p in (there / CASES_FOLDER).iterdir()) and cases
        for array in (p.name for p in (here / CASES_FOLDER).iterdir() if p.suffix == ".npy"):
            np.testing.assert_array_equal(np.load(here / CASES_FOLDER / array), np.load(there / CASES_FOLDER / array))

    save_shared_plan(shared, tmp_path / "server" / "federation.json")
    assert load_shared_plan(tmp_path / "server" / "federation.json") == shared
    assert load_shared_plan(tiny_federation).federation == shared.federation


def test_a_site_asked_out_of_order_and_a_malformed_offer_are_named(tiny_federation: Path, tmp_path: Path) -> None:
    raw = tiny_federation.parent.parent.parent / "raw"
    site = site_planner(raw, tmp_path, CLIENTS[0], tiny_federation.parent.name)
    with pytest.raises(PlanError, match="before its analysis"):
        site.offer(2, 3)
    with pytest.raises(PlanError, match="before asking for an offer"):
        site.finish(load_plans(tiny_federation).federation)
    with pytest.raises(PlanError, match="offer is malformed"):
        SiteOffer.from_dict({"dataset_name": "Dataset009_X", "patch": [64, 64]})
    with pytest.raises(PlanError, match="one dataset"):
        SitePlanner(PipelineConfig(raw, tmp_path, ("1", "2"), PLANNER), "Federation_001_002")
