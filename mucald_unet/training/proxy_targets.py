"""Per-case proxy targets for the causal nodes, read from the client's own proxy table.

Values are z-scored with the statistics in the client's plan; a missing value (NaN, or a node
slot the client's graph does not fill) is masked out of the loss. The table never leaves the
client: only gradients of losses computed from it do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from planners.plans import CausalGraphPlan
from planners.proxies import ProxyTable


@dataclass(frozen=True)
class ProxyTargets:
    values: dict[str, np.ndarray]  # case id -> (num_nodes,) float32, 0 where masked
    masks: dict[str, np.ndarray]  # case id -> (num_nodes,) bool
    num_nodes: int

    @classmethod
    def from_table(cls, table: ProxyTable, graph: CausalGraphPlan, num_nodes: int) -> "ProxyTargets":
        nodes = list(graph.nodes[:num_nodes])
        values, masks = {}, {}
        for row, case_id in enumerate(table.case_ids):
            vector = np.zeros(num_nodes, np.float32)
            mask = np.zeros(num_nodes, bool)
            for i, node in enumerate(nodes):
                if node not in table.columns:
                    continue
                raw = table.values[row, table.columns.index(node)]
                std = graph.zscore_std.get(node, 0.0)
                if np.isfinite(raw) and std > 0:
                    vector[i] = (raw - graph.zscore_mean[node]) / std
                    mask[i] = True
            values[case_id], masks[case_id] = vector, mask
        return cls(values, masks, num_nodes)

    @classmethod
    def load(cls, csv_path: Path, graph: CausalGraphPlan, num_nodes: int) -> "ProxyTargets":
        return cls.from_table(ProxyTable.load_csv(csv_path), graph, num_nodes)

    def batch(self, case_ids: tuple[str, ...] | list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """(B, num_nodes) targets and mask; a case without a row is fully masked."""
        empty_v, empty_m = np.zeros(self.num_nodes, np.float32), np.zeros(self.num_nodes, bool)
        values = np.stack([self.values.get(c, empty_v) for c in case_ids])
        masks = np.stack([self.masks.get(c, empty_m) for c in case_ids])
        return torch.from_numpy(values).to(device), torch.from_numpy(masks).to(device)
