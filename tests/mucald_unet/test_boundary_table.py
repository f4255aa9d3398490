"""What leaves a hospital: the generated tables cover every message kind and plans field, match
real traffic, and are what the README and docs/architecture.md show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucald_unet.federation import boundary_table
from mucald_unet.federation.boundary_table import (MESSAGES, PLAN_FIELDS, BoundaryTableError, boundary_markdown,
                                                   plan_field_paths, table_in)
from mucald_unet.federation.messages import Kind
from mucald_unet.training.trainer import MANIFEST_FILE, FederatedTrainer, run_folder_for
from planners.plans import load_plans, plans_to_dict
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config

REPO = Path(__file__).resolve().parents[2]


def test_every_message_kind_and_plans_field_is_classified() -> None:
    assert {m.kind for m in MESSAGES} == set(Kind)
    assert sorted(plan_field_paths()) == sorted(PLAN_FIELDS)
    assert "`clients.*.normalization` | own client only" in boundary_markdown()


def test_an_unclassified_field_or_kind_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = dict(PLAN_FIELDS)
    del fields["clients.*.causal_graph.zscore_mean"]
    monkeypatch.setattr(boundary_table, "PLAN_FIELDS", fields)
    with pytest.raises(BoundaryTableError, match="clients.*causal_graph.zscore_mean"):
        boundary_markdown()
    monkeypatch.setattr(boundary_table, "PLAN_FIELDS", PLAN_FIELDS)
    monkeypatch.setattr(boundary_table, "MESSAGES", tuple(m for m in MESSAGES if m.kind is not Kind.ACK))
    with pytest.raises(BoundaryTableError, match="kinds without a row \\['ack'\\]"):
        boundary_markdown()


def test_the_plan_walk_sees_every_field_of_a_real_plans_file(tiny_federation: Path) -> None:
    def leaves(value, prefix=""):
        if isinstance(value, dict) and prefix in ("", "federation.", "federation.server_segment.",
                                                  "federation.diffusion.", "federation.causal.",
                                                  "clients.*.", "clients.*.causal_graph."):
            return [p for k, v in value.items() for p in leaves(v, f"{prefix}{k}.")]
        if prefix == "clients.":
            return [p for v in value.values() for p in leaves(v, "clients.*.")]
        return [prefix[:-1]]
    assert set(leaves(plans_to_dict(load_plans(tiny_federation)))) == set(PLAN_FIELDS)


@pytest.mark.parametrize("document", ["README.md", "docs/architecture.md"])
def test_the_documents_hold_the_generated_tables(document: str) -> None:
    text = (REPO / document).read_text(encoding="utf-8")
    assert table_in(text, document) == boundary_markdown(), (
        "stale table: run python -m mucald_unet.federation.boundary_table README.md docs/architecture.md")
    assert "no image, label or\nlabel-derived value leaves" not in text


def _manifest(tiny_federation: Path, tmp_path: Path, **settings) -> list[dict]:
    config = quick_config(rounds=1, iterations=1, **settings)
    folder = run_folder_for(tmp_path, tiny_federation, config)
    FederatedTrainer(tiny_federation, CLIENTS, config, folder).run()
    return [json.loads(line) for line in (folder / MANIFEST_FILE).read_text().splitlines()]


@pytest.mark.parametrize("aggregation,scalars", [("equal", ["num_samples"]),
                                                 ("causal", ["num_samples", "proxy_mse", "val_loss"])])
def test_the_round_report_carries_label_derived_errors_only_for_causal_fusion(
        tiny_federation: Path, tmp_path: Path, aggregation: str, scalars: list[str]) -> None:
    entries = _manifest(tiny_federation, tmp_path, aggregation=aggregation)
    reports = [e for e in entries if e["kind"] == "report" and e["name"] == "round"]
    assert len(reports) == len(CLIENTS) and all(e["scalars"] == scalars for e in reports)
    assert all(e["scalars"] == ["num_samples"] for e in entries if e["kind"] == "report" and e["name"] == "join")
    rows = {(m.kind.value, name.strip(), m.direction.value) for m in MESSAGES for name in m.name.split("/")}
    assert {(e["kind"], e["name"], e["direction"]) for e in entries} <= rows  # the table covers all traffic
    assert {e["kind"] for e in entries} == {k.value for k in Kind} - {Kind.ERROR.value}  # a good run is never refused
    plans = load_plans(tiny_federation)
    for entry in entries:
        if entry["kind"] in ("features", "gradient"):  # (B, split_channels, *patch_size)
            (shape,) = entry["shapes"].values()
            assert shape[1] == plans.federation.split_channels
            assert tuple(shape[2:]) == tuple(plans.client(entry["client"]).patch_size)
        declared = {s.strip() for m in MESSAGES if m.kind.value == entry["kind"] for s in
                    m.scalars.replace("with --aggregation causal also", ",").replace(";", ",").split(",")}
        assert set(entry["scalars"]) <= declared - {""}
