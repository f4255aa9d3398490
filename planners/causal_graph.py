"""A task's causal graph over its chosen proxy columns: the DAG that CRDM's neural SCM follows.

Owns ``CausalGraph`` (nodes, parents, edge strengths, z-score statistics; JSON round trip),
``learn_causal_graph`` (kernel PC from causal-learn, then additive-noise orientation) and the
structural Hamming distance used to judge a learned graph against a known one.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from planners.node_selection import select_nodes

__all__ = ["CausalConfig", "CausalGraph", "learn_causal_graph", "select_nodes",
           "structural_hamming_distance"]

EDGE = "->"
NO_METHOD = "none"


@dataclass(frozen=True)
class CausalGraph:
    """A DAG over named nodes; ``parents`` has every node, ``edge_weights`` every edge."""

    nodes: tuple[str, ...]
    parents: dict[str, tuple[str, ...]]
    edge_weights: dict[str, float]  # "parent->child": share of the child's variance only it explains
    zscore_mean: dict[str, float]
    zscore_std: dict[str, float]
    method: str
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.nodes)) != len(self.nodes) or any(EDGE in n for n in self.nodes):
            raise ValueError(f"node names must be unique and must not contain {EDGE!r}: {self.nodes}")
        if set(self.parents) != set(self.nodes):
            raise ValueError(f"parents must list every node exactly: {sorted(self.parents)} vs {self.nodes}")
        for child, parents in self.parents.items():
            if child in parents or not set(parents) <= set(self.nodes):
                raise ValueError(f"parents of {child!r} must be other nodes, got {parents}")
        if set(self.edge_weights) != {f"{p}{EDGE}{c}" for p, c in self.edges}:
            raise ValueError("edge_weights must have exactly one 'parent->child' key per edge")
        self.topological_order()  # raises on a cycle

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(p, c) for c in self.nodes for p in self.parents[c]]

    def topological_order(self) -> list[str]:
        """Parents before children; among nodes that are ready, the order of ``nodes``."""
        order: list[str] = []
        while len(order) < len(self.nodes):
            ready = [n for n in self.nodes if n not in order and all(p in order for p in self.parents[n])]
            if not ready:
                raise ValueError(f"the causal graph has a cycle among {sorted(set(self.nodes) - set(order))}")
            order.append(ready[0])
        return order

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, dicts, str, float); ``from_dict`` inverts it exactly."""
        return {"nodes": list(self.nodes), "parents": {c: list(self.parents[c]) for c in self.nodes},
                "edge_weights": dict(self.edge_weights), "zscore_mean": dict(self.zscore_mean),
                "zscore_std": dict(self.zscore_std), "method": self.method, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CausalGraph:
        return cls(nodes=tuple(data["nodes"]),
                   parents={str(c): tuple(p) for c, p in data["parents"].items()},
                   edge_weights={str(e): float(w) for e, w in data["edge_weights"].items()},
                   zscore_mean={str(n): float(v) for n, v in data["zscore_mean"].items()},
                   zscore_std={str(n): float(v) for n, v in data["zscore_std"].items()},
                   method=str(data["method"]), warnings=tuple(data.get("warnings", ())))

    @classmethod
    def empty(cls, nodes: Iterable[str], zscore_mean: dict[str, float] | None = None,
              zscore_std: dict[str, float] | None = None, method: str = NO_METHOD,
              warnings: Iterable[str] = ()) -> CausalGraph:
        """No edges: every node is exogenous. Missing z-score statistics default to 0 and 1."""
        nodes = tuple(nodes)
        return cls(nodes, {n: () for n in nodes}, {},
                   {n: (zscore_mean or {}).get(n, 0.0) for n in nodes},
                   {n: (zscore_std or {}).get(n, 1.0) for n in nodes}, method, tuple(warnings))


@dataclass(frozen=True)
class CausalConfig:
    """Settings of ``learn_causal_graph``; those that shape the graph are named in its ``method``."""

    alpha: float = 0.01  # significance level of PC's conditional-independence tests
    ci_test: str = "kci"  # "kci": kernel test, nonlinear; "fisherz": partial correlation, linear, fast
    min_samples: int = 10  # fewer usable cases: an empty graph with a warning
    max_samples: int = 500  # KCI and the GP regressions cost O(n^3): a seeded subsample beyond this
    min_complete_fraction: float = 0.5  # complete cases are used if at least this share of rows
    min_edge_weight: float = 0.01  # edges whose parent uniquely explains less variance are dropped
    max_undirected_edges: int = 10  # beyond this, PC's unoriented edges follow node order instead

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.ci_test not in ("kci", "fisherz"):
            raise ValueError(f"ci_test must be 'kci' or 'fisherz', got {self.ci_test!r}")
        if self.min_samples < 3 or self.max_samples < self.min_samples:
            raise ValueError("need 3 <= min_samples <= max_samples")

    def describe(self) -> str:
        from importlib.metadata import version
        return (f"kpc: causal-learn {version('causal-learn')} PC({self.ci_test}, alpha={self.alpha}) + "
                f"ANM orientation (GP regression, HSIC); max_samples={self.max_samples}, "
                f"min_edge_weight={self.min_edge_weight}")


def learn_causal_graph(columns: Sequence[str], values: np.ndarray, nodes: Sequence[str], seed: int = 0,
                       config: CausalConfig = CausalConfig()) -> CausalGraph:
    """Learn a DAG over ``nodes`` (columns of ``values``, NaN = missing); never fails on data.

    Each node is z-scored with the mean and standard deviation of all its present values (stored,
    so the proxy loss can use the same scale). Rows with a NaN are dropped when at least
    ``min_complete_fraction`` of the rows are complete (unbiased when values are missing at
    random); otherwise NaN are imputed with the column median and a warning says so.
    Structure: PC with a kernel conditional-independence test gives the skeleton and the
    v-structures; the edges PC leaves unoriented are oriented by additive-noise models (the
    orientation of the Markov-equivalent DAG whose regression residuals are most independent of
    their inputs), as in kernel PC (Tillman, Gretton & Spirtes 2009). Too few cases, or a failing
    learner, give an empty graph with the reason in ``warnings``.
    """
    columns = [str(c) for c in columns]
    nodes = tuple(str(n) for n in nodes)
    unknown = [n for n in nodes if n not in columns]
    if unknown:
        raise ValueError(f"nodes {unknown} are not proxy columns ({', '.join(columns)})")
    data = np.asarray(values, dtype=np.float64)[:, [columns.index(n) for n in nodes]]
    data = np.where(np.isfinite(data), data, np.nan)
    notes: list[str] = []
    mean, std, varying = {}, {}, []
    for j, node in enumerate(nodes):
        present = data[~np.isnan(data[:, j]), j]
        m, s = (float(present.mean()), float(present.std())) if present.size else (0.0, 0.0)
        if s <= 1e-12 * max(1.0, abs(m)):
            notes.append(f"{node} has no spread: z-scored with std 1 and left without edges")
            s = 1.0
        else:
            varying.append(j)
        mean[node], std[node] = m, s

    def empty(reason: str) -> CausalGraph:
        return CausalGraph.empty(nodes, mean, std, warnings=(*notes, reason))

    if len(varying) < 2:
        return empty("fewer than two nodes that vary: no edges to learn")
    z = ((data - np.array([mean[n] for n in nodes])) / np.array([std[n] for n in nodes]))[:, varying]
    complete = ~np.isnan(z).any(axis=1)
    if complete.sum() >= max(config.min_samples, config.min_complete_fraction * len(z)):
        z = z[complete]
        if not complete.all():
            notes.append(f"dropped {int((~complete).sum())} of {len(complete)} cases with a missing value")
    elif len(z) >= config.min_samples:
        notes.append(f"only {int(complete.sum())} of {len(z)} cases complete; imputed missing values "
                     "with the median")
        z = np.where(np.isnan(z), np.nanmedian(z, axis=0), z)
    if len(z) < config.min_samples:
        return empty(f"only {len(z)} usable cases (< min_samples={config.min_samples}): no edges learned")
    rng = np.random.default_rng(seed)
    if len(z) > config.max_samples:
        notes.append(f"used a seeded subsample of {config.max_samples} of {len(z)} cases")
        z = z[np.sort(rng.choice(len(z), config.max_samples, replace=False))]
    state = np.random.get_state()
    try:
        np.random.seed(seed)  # causal-learn draws from numpy's global generator; restored below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edges, weights, learner_notes = _kernel_pc(z, seed, config)
    except Exception as error:  # noqa: BLE001 - any learner failure degrades to an empty graph
        return empty(f"structure learning failed ({type(error).__name__}: {error}); no edges learned")
    finally:
        np.random.set_state(state)
    notes.extend(learner_notes)
    kept = [(nodes[varying[i]], nodes[varying[j]]) for i, j in edges if weights[(i, j)] >= config.min_edge_weight]
    if len(kept) < len(edges):
        notes.append(f"dropped {len(edges) - len(kept)} edge(s) below min_edge_weight={config.min_edge_weight}")
    strength = {(nodes[varying[i]], nodes[varying[j]]): round(w, 6) for (i, j), w in weights.items()}
    parents = {c: tuple(p for p in nodes if (p, c) in kept) for c in nodes}
    return CausalGraph(nodes, parents, {f"{p}{EDGE}{c}": strength[(p, c)] for p, c in kept},
                       mean, std, config.describe(), tuple(notes))


def _kernel_pc(z: np.ndarray, seed: int, config: CausalConfig
               ) -> tuple[list[tuple[int, int]], dict[tuple[int, int], float], list[str]]:
    """PC for skeleton and v-structures, then ANM scores to choose among Markov-equivalent DAGs."""
    from causallearn.search.ConstraintBased.PC import pc  # heavy import, only when learning

    d = z.shape[1]
    g = pc(z, config.alpha, config.ci_test, stable=True, show_progress=False, verbose=False).G.graph
    directed = {(i, j) for i in range(d) for j in range(d) if g[i, j] == -1 and g[j, i] == 1}
    linked = [(i, j) for i in range(d) for j in range(i + 1, d)
              if g[i, j] != 0 and (i, j) not in directed and (j, i) not in directed]
    notes: list[str] = []
    if not _is_acyclic(directed, d):
        notes.append("PC's orientations formed a cycle; re-oriented every edge")
        linked, directed = sorted(linked + [tuple(sorted(e)) for e in directed]), set()
    scorer = _AdditiveNoiseScorer(z, seed)
    if len(linked) > config.max_undirected_edges:
        notes.append(f"{len(linked)} unoriented edges (> max_undirected_edges): oriented by node order")
        order = _topological(directed, d)
        best = directed | {(i, j) if order.index(i) < order.index(j) else (j, i) for i, j in linked}
    else:
        best = _best_extension(directed, linked, d, scorer)
    edges = sorted(best)
    return edges, {(i, j): scorer.unique_r2(i, j, best) for i, j in edges}, notes


def _best_extension(directed: set[tuple[int, int]], linked: list[tuple[int, int]], d: int,
                    scorer: _AdditiveNoiseScorer) -> set[tuple[int, int]]:
    """The orientation of ``linked`` with the highest ANM score, among those that keep PC's
    v-structures (the Markov equivalence class); if none does (test errors), among acyclic ones."""
    candidates = []
    for flips in itertools.product((False, True), repeat=len(linked)):
        edges = directed | {(j, i) if flip else (i, j) for (i, j), flip in zip(linked, flips)}
        if _is_acyclic(edges, d):
            candidates.append(edges)
    target = _v_structures(directed)
    equivalent = [e for e in candidates if _v_structures(e) == target] or candidates
    return max(equivalent, key=scorer.score)  # max keeps the first of equal scores: deterministic


class _AdditiveNoiseScorer:
    """Gaussian-process regressions of a node on its parents, cached per (node, parents)."""

    def __init__(self, z: np.ndarray, seed: int) -> None:
        self.z, self.seed = z, seed
        self._residuals: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self._log_p: dict[tuple[int, tuple[int, ...]], float] = {}

    def residual(self, node: int, parents: tuple[int, ...]) -> np.ndarray:
        key = (node, parents)
        if key not in self._residuals:
            y = self.z[:, node]
            if parents:
                from sklearn.gaussian_process import GaussianProcessRegressor
                from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
                kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(len(parents)), (1e-2, 1e2))
                          + WhiteKernel(0.1, (1e-5, 1e1)))
                x = self.z[:, list(parents)]
                model = GaussianProcessRegressor(kernel, normalize_y=True, random_state=self.seed).fit(x, y)
                y = y - model.predict(x)
            self._residuals[key] = y
        return self._residuals[key]

    def score(self, edges: set[tuple[int, int]]) -> float:
        """Sum over nodes with parents of log p(residual independent of parents) (HSIC test)."""
        from causallearn.utils.KCI.KCI import KCI_UInd

        total = 0.0
        for node in range(self.z.shape[1]):
            parents = tuple(sorted(i for i, j in edges if j == node))
            if parents and (node, parents) not in self._log_p:
                p, _ = KCI_UInd().compute_pvalue(self.z[:, list(parents)], self.residual(node, parents)[:, None])
                self._log_p[(node, parents)] = float(np.log(max(float(p), 1e-300)))
            total += self._log_p.get((node, parents), 0.0)
        return total

    def unique_r2(self, parent: int, child: int, edges: set[tuple[int, int]]) -> float:
        parents = tuple(sorted(i for i, j in edges if j == child))
        others = tuple(p for p in parents if p != parent)
        variance = float(np.var(self.z[:, child])) or 1.0
        gain = (np.var(self.residual(child, others)) - np.var(self.residual(child, parents))) / variance
        return float(np.clip(gain, 0.0, 1.0))


def _is_acyclic(edges: Iterable[tuple[int, int]], d: int) -> bool:
    try:
        _topological(set(edges), d)
    except ValueError:
        return False
    return True


def _topological(edges: set[tuple[int, int]], d: int) -> list[int]:
    order: list[int] = []
    while len(order) < d:
        ready = [n for n in range(d) if n not in order and all(i in order for i, j in edges if j == n)]
        if not ready:
            raise ValueError("cycle")
        order.append(ready[0])
    return order


def _v_structures(edges: set[tuple[int, int]]) -> set[tuple[int, int, int]]:
    adjacent = edges | {(j, i) for i, j in edges}
    return {(min(a, b), max(a, b), c) for a, c in edges for b, c2 in edges
            if c2 == c and a != b and (a, b) not in adjacent}


def structural_hamming_distance(true_edges: Iterable[tuple[str, str]], learned_edges: Iterable[tuple[str, str]],
                                nodes: Sequence[str]) -> int:
    """Node pairs whose connection differs: a missing, extra or reversed edge each count 1."""
    nodes = list(nodes)

    def states(edges: Iterable[tuple[str, str]]) -> dict[frozenset[str], set[tuple[str, str]]]:
        out: dict[frozenset[str], set[tuple[str, str]]] = {}
        for parent, child in edges:
            if parent not in nodes or child not in nodes or parent == child:
                raise ValueError(f"edge {parent}->{child} is not between two distinct nodes of {nodes}")
            out.setdefault(frozenset((parent, child)), set()).add((parent, child))
        return out

    true, learned = states(true_edges), states(learned_edges)
    return sum(true.get(pair) != learned.get(pair) for pair in set(true) | set(learned))
