"""Causal graph discovery per task: node choice, DAG learning, serialisation, graph distance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planners import causal_graph
from planners.causal_graph import (CausalConfig, CausalGraph, learn_causal_graph, select_nodes,
                                   structural_hamming_distance)

NODES = ("a", "b", "c", "d")
PLANTED = {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}  # a fork into a collider


def planted_table(n: int, seed: int = 0, noise: float = 0.4) -> np.ndarray:
    """Nonlinear additive-noise SEM over PLANTED, on raw (unstandardised) scales."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, n)
    b = np.tanh(2.0 * a) + noise * rng.normal(size=n)
    c = a ** 2 + noise * rng.normal(size=n)
    d = np.sin(1.5 * c) + np.tanh(2.0 * b) + noise * rng.normal(size=n)
    return np.stack([10.0 + 3.0 * a, b, 100.0 * c, d], axis=1)


# --- learning -------------------------------------------------------------------------------

def test_recovers_a_planted_nonlinear_dag() -> None:
    graph = learn_causal_graph(list(NODES), planted_table(500), NODES, seed=0)

    assert structural_hamming_distance(PLANTED, graph.edges, NODES) <= 1
    assert graph.topological_order()[0] == "a"
    assert graph.method.startswith("kpc")
    assert all(0.0 < w <= 1.0 for w in graph.edge_weights.values())
    assert graph.zscore_mean["a"] == pytest.approx(10.0, abs=0.5)
    assert graph.zscore_std["a"] == pytest.approx(3.0, rel=0.1)


def test_recovers_a_chain_into_a_collider() -> None:
    rng = np.random.default_rng(3)
    a, d = rng.normal(size=400), rng.normal(size=400)
    b = np.tanh(2.0 * a) + 0.4 * rng.normal(size=400)
    c = b ** 2 + np.tanh(1.5 * d) + 0.4 * rng.normal(size=400)
    graph = learn_causal_graph(list(NODES), np.stack([a, b, c, d], 1), NODES, seed=0)

    assert structural_hamming_distance({("a", "b"), ("b", "c"), ("d", "c")}, graph.edges, NODES) <= 1


def test_same_seed_gives_the_same_graph_and_missing_rows_are_dropped() -> None:
    values = planted_table(220, seed=1)
    values[::10, 2] = np.nan  # 10 % of the cases miss one proxy
    first = learn_causal_graph(list(NODES), values, NODES, seed=7)
    second = learn_causal_graph(list(NODES), values, NODES, seed=7)

    assert first == second
    assert first.edges
    assert any("dropped 22 of 220 cases" in w for w in first.warnings)


def test_too_few_cases_give_an_empty_graph_with_a_warning() -> None:
    graph = learn_causal_graph(list(NODES), planted_table(5), NODES)

    assert graph.edges == [] and graph.method == "none"
    assert any("min_samples" in w for w in graph.warnings)
    assert set(graph.zscore_std) == set(NODES)


def test_a_failing_learner_gives_an_empty_graph_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("solver diverged")

    monkeypatch.setattr(causal_graph, "_kernel_pc", broken)
    graph = learn_causal_graph(list(NODES), planted_table(50), NODES)

    assert graph.edges == []
    assert any("solver diverged" in w for w in graph.warnings)


def test_many_cases_are_subsampled_and_mostly_missing_rows_are_imputed() -> None:
    values = planted_table(120)
    values[:80, 0] = np.nan
    graph = learn_causal_graph(list(NODES), values, NODES, config=CausalConfig(ci_test="fisherz", max_samples=60))

    assert any("imputed" in w for w in graph.warnings)
    assert any("subsample of 60 of 120" in w for w in graph.warnings)
    assert graph.zscore_mean["a"] == pytest.approx(float(np.mean(values[80:, 0])))


def test_a_node_without_spread_is_left_without_edges() -> None:
    values = planted_table(80)
    values[:, 3] = 2.5
    graph = learn_causal_graph(list(NODES), values, NODES, config=CausalConfig(ci_test="fisherz"))

    assert not [edge for edge in graph.edges if "d" in edge]
    assert graph.zscore_std["d"] == 1.0 and any("d has no spread" in w for w in graph.warnings)


def test_unknown_nodes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not proxy columns"):
        learn_causal_graph(["a"], np.zeros((20, 1)), ["size"])


# --- node selection -------------------------------------------------------------------------

def test_select_nodes_drops_duplicates_constants_and_mostly_missing_columns() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = np.tanh(x) + 0.3 * rng.normal(size=200)
    z = x ** 2 + 0.3 * rng.normal(size=200)
    w = y + z + 0.3 * rng.normal(size=200)
    mostly_missing = x + 0.1 * rng.normal(size=200)
    mostly_missing[:150] = np.nan
    columns = ["x", "x_twice", "constant", "sparse", "y", "z", "w"]
    values = np.stack([x, 2 * x + 0.01 * rng.normal(size=200), np.full(200, 3.0), mostly_missing, y, z, w], 1)

    survivors = select_nodes(columns, values, 10)
    chosen = select_nodes(columns, values, 3)

    assert len(survivors) == 4 and {"y", "z", "w"} < set(survivors)
    assert len({"x", "x_twice"} & set(survivors)) == 1
    assert chosen == survivors[:3]
    assert select_nodes(columns, values, 3) == chosen


def test_select_nodes_keeps_the_more_complete_duplicate_and_breaks_ties_by_name() -> None:
    rng = np.random.default_rng(1)
    full = rng.normal(size=100)
    gappy = 3.0 * full
    gappy[:10] = np.nan
    q1 = np.tile([1.0, 2.0, 3.0, 4.0], 25)
    q2 = np.tile([1.0, 3.0, 2.0, 4.0], 25)  # r = 0.8 with q1: related, not a duplicate

    assert select_nodes(["gappy", "full"], np.stack([gappy, full], 1), 2) == ["full"]
    assert select_nodes(["q2", "q1"], np.stack([q2, q1], 1), 2) == ["q1", "q2"]
    assert select_nodes(["q2", "q1"], np.stack([q2, q1], 1), 0) == []


# --- the graph object -----------------------------------------------------------------------

def make_graph() -> CausalGraph:
    return CausalGraph(nodes=("size", "elongation", "contrast"),
                       parents={"size": ("contrast",), "elongation": ("size", "contrast"), "contrast": ()},
                       edge_weights={"contrast->size": 0.25, "size->elongation": 0.1 + 0.2, "contrast->elongation": 0.5},
                       zscore_mean={"size": 812.5, "elongation": 1.75, "contrast": -0.125},
                       zscore_std={"size": 300.1, "elongation": 0.3333333333333333, "contrast": 1e-3},
                       method="kpc", warnings=("one note",))


def test_graph_round_trips_through_json_exactly() -> None:
    graph = make_graph()

    assert CausalGraph.from_dict(json.loads(json.dumps(graph.to_dict()))) == graph
    assert CausalGraph.from_dict(graph.to_dict()) == graph


def test_graph_edges_and_topological_order() -> None:
    graph = make_graph()

    assert set(graph.edges) == {("contrast", "size"), ("size", "elongation"), ("contrast", "elongation")}
    assert graph.topological_order() == ["contrast", "size", "elongation"]
    assert CausalGraph.empty(["a", "b"]).topological_order() == ["a", "b"]


def test_graph_rejects_cycles_and_inconsistent_weights() -> None:
    with pytest.raises(ValueError, match="cycle"):
        CausalGraph(("a", "b"), {"a": ("b",), "b": ("a",)}, {"b->a": 1.0, "a->b": 1.0}, {}, {}, "x")
    with pytest.raises(ValueError, match="edge_weights"):
        CausalGraph(("a", "b"), {"a": (), "b": ("a",)}, {}, {}, {}, "x")


# --- structural Hamming distance ------------------------------------------------------------

@pytest.mark.parametrize("learned, expected", [
    ({("a", "b"), ("b", "c")}, 0),
    ({("b", "a"), ("b", "c")}, 1),  # reversed
    ({("a", "b")}, 1),  # missing
    ({("a", "b"), ("b", "c"), ("a", "c")}, 1),  # extra
    ({("b", "a"), ("c", "b"), ("a", "c")}, 3),
    (set(), 2),
    ({("a", "b"), ("b", "a"), ("b", "c")}, 1),  # both directions is not the true one
])
def test_structural_hamming_distance(learned: set[tuple[str, str]], expected: int) -> None:
    assert structural_hamming_distance({("a", "b"), ("b", "c")}, learned, ["a", "b", "c"]) == expected


def test_structural_hamming_distance_rejects_unknown_nodes() -> None:
    with pytest.raises(ValueError):
        structural_hamming_distance({("a", "x")}, set(), ["a", "b"])
