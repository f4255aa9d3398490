"""The planted causal graphs of the demo federation: a small structural causal model (SCM).

Each demo dataset draws four shape/appearance factors per case from a known DAG, so a later
structure-learning stage has a true graph to recover from measured label properties.

Mechanism: nodes are visited in topological order; a root is N(0, 1); a child is
``sum over parents of w * g(parent) + noise * N(0, 1)`` with ``g(x) = tanh(1.5 x) + 0.3 x``
(nonlinear, monotone increasing), ``w = 1`` and ``noise = 0.45``; every node is then
standardised over the cases. Renderers map standardised values monotonically to physical
parameters (``lo + (hi - lo) * sigmoid(z)``), so measured proxies keep the dependence structure.

Graphs (``a -> b``: a causes b):

- Dataset001_DemoPolyp: size -> elongation, size -> asymmetry, contrast -> asymmetry.
- Dataset002_DemoLungCT: size -> contrast, size -> elongation, elongation -> asymmetry.
- Dataset003_DemoFetalUS: size -> inner_size, size -> elongation, inner_size -> contrast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

MECHANISM = ("root ~ N(0,1); child = sum_parents w * g(parent) + noise * N(0,1) with "
             "g(x) = tanh(1.5x) + 0.3x, w = {weight:g}, noise = {noise:g}; every node is "
             "standardised over the cases and rendered through a monotone map "
             "lo + (hi - lo) * sigmoid(z).")

AREA_2D = "foreground area of labels {labels} (mm^2)"
VOLUME_3D = "foreground volume of label 1 (mm^3)"
AXIS_RATIO = ("principal axis length ratio of {labels}, longest over second-longest (major/minor "
              "in 2D): sqrt of the eigenvalue ratio of the covariance of physical coordinates")
ASYMMETRY = ("asymmetry of label 1: 1 - |A ∩ rot180(A)| / |A|, where rot180 is the point "
             "reflection of A about its centroid (0 for ellipses and ellipsoids)")
RING_CONTRAST = ("mean image intensity inside label 1 minus the mean in a ring around it "
                 "(the label dilated by {ring} minus the label){channels}")


@dataclass(frozen=True)
class CausalGraphSpec:
    """A DAG over named case factors, with how each factor is measured from label and image."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    measured_by: Mapping[str, str] = field(compare=False)
    weight: float = 1.0
    noise_scale: float = 0.45

    def __post_init__(self) -> None:
        unknown = {n for edge in self.edges for n in edge} - set(self.nodes)
        if unknown:
            raise ValueError(f"edges name unknown nodes {sorted(unknown)}")
        missing = set(self.nodes) - set(self.measured_by)
        if missing:
            raise ValueError(f"nodes {sorted(missing)} have no measured_by description")
        self.topological_order()  # raises on a cycle

    def parents(self, node: str) -> tuple[str, ...]:
        return tuple(a for a, b in self.edges if b == node)

    def topological_order(self) -> tuple[str, ...]:
        """Nodes with every parent before its children; ties keep the declared order."""
        order: list[str] = []
        remaining = list(self.nodes)
        while remaining:
            ready = [n for n in remaining if all(p in order for p in self.parents(n))]
            if not ready:
                raise ValueError(f"the graph has a cycle among {remaining}")
            order.append(ready[0])
            remaining.remove(ready[0])
        return tuple(order)

    @property
    def mechanism(self) -> str:
        return MECHANISM.format(weight=self.weight, noise=self.noise_scale)

    def summary(self) -> str:
        """One line for dataset.json's description."""
        return "planted causal graph: " + ", ".join(f"{a} -> {b}" for a, b in self.edges)

    def to_json(self, seed: int) -> dict:
        """The ground truth written as causal_graph.json next to dataset.json."""
        return {
            "nodes": [{"name": n, "measured_by": self.measured_by[n]} for n in self.nodes],
            "edges": [[a, b] for a, b in self.edges],
            "mechanism": self.mechanism,
            "seed": int(seed),
        }


def link(x: np.ndarray) -> np.ndarray:
    """The monotone nonlinearity g of every edge."""
    return np.tanh(1.5 * x) + 0.3 * x


def sample_nodes(spec: CausalGraphSpec, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n`` cases from the SCM; returns standardised values per node (declared order)."""
    values: dict[str, np.ndarray] = {}
    for node in spec.topological_order():
        noise = rng.standard_normal(n)
        parents = spec.parents(node)
        if parents:
            raw = sum(spec.weight * link(values[p]) for p in parents) + spec.noise_scale * noise
        else:
            raw = noise
        values[node] = _standardise(np.asarray(raw, dtype=float))
    return {node: values[node] for node in spec.nodes}


def scaled(z: float, lo: float, hi: float) -> float:
    """Map a standardised node value monotonically into (lo, hi)."""
    return lo + (hi - lo) / (1.0 + float(np.exp(-z)))


def _standardise(x: np.ndarray) -> np.ndarray:
    std = float(x.std())
    return (x - x.mean()) / std if x.size > 1 and std > 0 else x - x.mean()


POLYP_GRAPH = CausalGraphSpec(
    nodes=("size", "elongation", "asymmetry", "contrast"),
    edges=(("size", "elongation"), ("size", "asymmetry"), ("contrast", "asymmetry")),
    measured_by={
        "size": AREA_2D.format(labels="1") + "; pixels count 1 x 1 (PNG has no spacing)",
        "elongation": AXIS_RATIO.format(labels="label 1"),
        "asymmetry": ASYMMETRY,
        "contrast": RING_CONTRAST.format(ring="5 pixels",
                                         channels=", on the mean of the R, G, B channels"),
    },
)

LUNG_CT_GRAPH = CausalGraphSpec(
    nodes=("size", "elongation", "asymmetry", "contrast"),
    edges=(("size", "contrast"), ("size", "elongation"), ("elongation", "asymmetry")),
    measured_by={
        "size": VOLUME_3D,
        "elongation": AXIS_RATIO.format(labels="label 1"),
        "asymmetry": ASYMMETRY,
        "contrast": RING_CONTRAST.format(ring="1 slice and 3 voxels (2.4 mm) in-plane",
                                         channels=", in HU"),
    },
)

FETAL_US_GRAPH = CausalGraphSpec(
    nodes=("size", "elongation", "inner_size", "contrast"),
    edges=(("size", "inner_size"), ("size", "elongation"), ("inner_size", "contrast")),
    measured_by={
        "size": AREA_2D.format(labels="1 and 2 (the head)"),
        "elongation": AXIS_RATIO.format(labels="labels 1 and 2 (the head)"),
        "inner_size": AREA_2D.format(labels="2 (the brain structure)"),
        "contrast": ("mean image intensity inside labels 1 and 2 minus the mean of the imaged "
                     "background (pixels > 0 outside the head dilated by a quarter of its "
                     "equivalent radius, which excludes the bright skull)"),
    },
)
