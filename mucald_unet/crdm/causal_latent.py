"""The causal half of CRDM: exogenous encoder, neural SCM over the client's DAG, proxy prior.

Node order and parents come from the client's plan (its learned graph); every client has the
federation's K = num_nodes x node_dim latent so the exogenous encoder can be averaged. A client
with fewer planned nodes pads with parentless, unsupervised nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mucald_unet.networks.layers import average_pool, conv, global_average_pool, group_norm

POOLING = 4  # the exogenous encoder sees a 4x average-pooled map
from planners.plans import CausalGraphPlan


@dataclass(frozen=True)
class NodeGraph:
    """Parents of each of the K node slots by index, in a topological order of the slots."""

    names: tuple[str, ...]
    parents: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]

    @classmethod
    def from_plan(cls, graph: CausalGraphPlan, num_nodes: int) -> "NodeGraph":
        names = list(graph.nodes[:num_nodes])
        names += [f"unused_{i}" for i in range(len(names), num_nodes)]
        index = {name: i for i, name in enumerate(names)}
        parents = tuple(tuple(index[p] for p in graph.parents.get(name, ()) if p in index) for name in names)
        return cls(tuple(names), parents, _topological_order(parents))

    @classmethod
    def empty(cls, num_nodes: int) -> "NodeGraph":
        return cls(tuple(f"node_{i}" for i in range(num_nodes)), tuple(() for _ in range(num_nodes)),
                   tuple(range(num_nodes)))


def _topological_order(parents: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    order: list[int] = []
    remaining = set(range(len(parents)))
    while remaining:
        ready = sorted(i for i in remaining if all(p in order for p in parents[i]))
        if not ready:
            raise ValueError(f"the causal graph has a cycle among nodes {sorted(remaining)}")
        order.extend(ready)
        remaining -= set(ready)
    return tuple(order)


class ExogenousEncoder(nn.Module):
    """Features -> per-node (mu, logvar) of the exogenous noise u, pooled over space.

    Two conv-GroupNorm-SiLU layers, then 1x1 heads per node. The heads are globally pooled, so
    the layers run on a 4x average-pooled map: full resolution would cost 16x the time and
    change little (this keeps the step within 1.3x of SplitFed, benchmarks/train_step.py).
    """

    def __init__(self, spatial_dims: int, channels: int, num_nodes: int, node_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(average_pool(spatial_dims, POOLING), conv(spatial_dims, channels, channels),
                                  group_norm(channels), nn.SiLU(),
                                  conv(spatial_dims, channels, channels), group_norm(channels), nn.SiLU())
        self.heads = conv(spatial_dims, channels, 2 * num_nodes * node_dim, kernel_size=1)  # mu and logvar

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = global_average_pool(self.heads(self.body(x))).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_features))


class NodeMLPs(nn.Module):
    """K independent 3-layer MLPs (hidden ReLU layers) evaluated in one batched call each layer.

    One einsum per layer instead of three Linear modules per node: the SCM is a handful of tiny
    matrices, where per-call overhead, not arithmetic, is the cost.
    """

    def __init__(self, count: int, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        shapes = ((in_features, hidden), (hidden, hidden), (hidden, out_features))
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(count, i, o)) for i, o in shapes)
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(count, o)) for _, o in shapes)
        for weight, bias in zip(self.weights, self.biases):  # nn.Linear's default initialisation
            bound = 1.0 / weight.shape[1] ** 0.5
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(B, K, in_features) -> (B, K, out_features), MLP k applied to row k."""
        last = len(self.weights) - 1
        x = x.transpose(0, 1)  # (K, B, in): one batched matmul per layer
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight)
            if layer < last:
                x = torch.relu(x)
        return x.transpose(0, 1)


class NeuralSCM(nn.Module):
    """z_i = MLP_i([u_i, z_parents(i)]); z_causal = concat(z_i).

    Every node's MLP reads [u_i, z_1 .. z_K] with the non-parents masked to zero, so all nodes
    whose parents are known are computed in one batched call: a graph of depth L costs L calls.
    """

    def __init__(self, graph: NodeGraph, node_dim: int, hidden: int) -> None:
        super().__init__()
        num_nodes = len(graph.names)
        self.graph = graph
        self.node_dim = node_dim
        self.mechanisms = NodeMLPs(num_nodes, node_dim * (1 + num_nodes), hidden, node_dim)
        mask = torch.zeros(num_nodes, 1 + num_nodes, node_dim)
        mask[:, 0] = 1.0  # each node's own exogenous noise
        for i, parents in enumerate(graph.parents):
            for p in parents:
                mask[i, 1 + p] = 1.0
        self.register_buffer("input_mask", mask.flatten(1), persistent=False)
        self.levels = _levels(graph.parents)
        # learned per-node log-variance of q(z_i); created with the module, so it is in the optimiser
        self.z_logvar = nn.Parameter(torch.zeros(num_nodes, node_dim))

    def forward(self, u: Tensor) -> Tensor:
        batch, num_nodes, d = u.shape[0], len(self.graph.names), self.node_dim
        own = u.view(batch, num_nodes, d)
        z = torch.zeros_like(own)
        for level in self.levels:
            known = z.reshape(batch, 1, num_nodes * d).expand(batch, num_nodes, num_nodes * d)
            out = self.mechanisms(torch.cat([own, known], dim=2) * self.input_mask)
            z = torch.where(level.view(1, -1, 1).to(u.device), out, z)
        return z.flatten(1)


def _levels(parents: tuple[tuple[int, ...], ...]) -> list[Tensor]:
    """Boolean masks of the nodes computable at each step: level k = longest parent chain k."""
    depth: list[int] = [0] * len(parents)
    for i in _topological_order(parents):
        depth[i] = 1 + max((depth[p] for p in parents[i]), default=-1)
    return [torch.tensor([d == level for d in depth]) for level in range(max(depth, default=0) + 1)]


class PlainLatentMap(NeuralSCM):
    """The no-causal ablation: one MLP over all exogenous nodes at once, no graph structure."""

    def __init__(self, num_nodes: int, node_dim: int, hidden: int) -> None:
        super().__init__(NodeGraph.empty(num_nodes), node_dim, hidden)
        self.mechanisms = mlp(num_nodes * node_dim, hidden, num_nodes * node_dim)

    def forward(self, u: Tensor) -> Tensor:
        return self.mechanisms(u)


class ProxyPrior(nn.Module):
    """Proxy vector (missing entries zeroed, mask appended) -> prior (mu_p, logvar_p) per node."""

    def __init__(self, num_nodes: int, node_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * num_nodes, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * num_nodes * node_dim))

    def forward(self, proxies: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(torch.cat([torch.where(mask, proxies, 0.0), mask.to(proxies.dtype)], dim=1))
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor | None = None,
                logvar_p: Tensor | None = None) -> Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over dims, averaged over the batch."""
    mu_p = torch.zeros_like(mu_q) if mu_p is None else mu_p
    logvar_p = torch.zeros_like(logvar_q) if logvar_p is None else logvar_p
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)
    return kl.flatten(1).sum(dim=1).mean()
