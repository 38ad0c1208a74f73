"""Heterogeneous message passing over social, interacts and rev_interacts.

Two interchangeable backbones:
- `sage` (default): edge-aware weighted-mean aggregation. Each relation learns a gate that
  turns an edge's features (rating, dwell, attendance, time of day, optional recency) into
  the weight of its message; sparse kernels keep a full-graph pass over ~1M edges cheap.
- `gat`: PyG `GATConv` with edge features; it keeps the attention weights of the last pass
  so explanations can name the interactions that weighed most.
Both use residual connections and layer normalization per node type.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.model.config import ModelConfig
from recsys_core.model.inputs import GraphInputs
from recsys_core.model.sparse import weighted_mean

EdgeType = tuple[str, str, str]


def _key(edge_type: EdgeType) -> str:
    return "__".join(edge_type)


def _module_dict(module: nn.Module) -> nn.ModuleDict:
    """A layer's part as the ModuleDict `HeteroBackbone.__init__` built it."""
    if not isinstance(module, nn.ModuleDict):
        raise TypeError(f"expected a ModuleDict, got a {type(module).__name__}")
    return module


class EdgeAwareConv(nn.Module):
    """mean_j softplus(gate(e_ij)) * W h_j over one relation."""

    def __init__(self, d: int, edge_dim: int):
        super().__init__()
        self.lin = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(edge_dim, 1)
        nn.init.zeros_(self.gate.weight)  # start as a plain mean; learn what matters

    def forward(
        self, h_src: torch.Tensor, inputs: GraphInputs, edge_type: EdgeType
    ) -> tuple[torch.Tensor, torch.Tensor]:
        relation = inputs.relations[edge_type]
        weights = F.softplus(self.gate(relation.edge_attr)).squeeze(-1) + 1e-3
        if inputs.edge_keep is not None and edge_type in inputs.edge_keep:
            weights = weights * inputs.edge_keep[edge_type]  # left-out edges: no message, no weight in the mean
        return weighted_mean(relation, weights, self.lin(h_src)), weights


class GATRelation(nn.Module):
    def __init__(self, d: int, edge_dim: int, heads: int):
        super().__init__()
        from torch_geometric.nn import GATConv  # imported only when a GAT backbone is built

        self.conv = GATConv((d, d), d // heads, heads=heads, edge_dim=edge_dim, add_self_loops=False)

    def forward(
        self, h_src: torch.Tensor, h_dst: torch.Tensor, inputs: GraphInputs, edge_type: EdgeType
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, (_, alpha) = self.conv(
            (h_src, h_dst), inputs.edge_index[edge_type], inputs.edge_attr[edge_type], return_attention_weights=True
        )
        return out, alpha.mean(dim=-1)  # one weight per edge, in edge_index order


class HeteroBackbone(nn.Module):
    def __init__(self, config: ModelConfig, edge_dims: dict[EdgeType, int]):
        super().__init__()
        self.config = config
        self.edge_types = list(edge_dims)
        d = config.d_model
        self.layers = nn.ModuleList()
        for _ in range(config.n_layers):
            convs = nn.ModuleDict(
                {
                    _key(et): EdgeAwareConv(d, dim)
                    if config.backbone == "sage"
                    else GATRelation(d, dim, config.gat_heads)
                    for et, dim in edge_dims.items()
                }
            )
            self_loops = nn.ModuleDict({t: nn.Linear(d, d) for t in ("user", "place")})
            norms = nn.ModuleDict({t: nn.LayerNorm(d) for t in ("user", "place")})
            self.layers.append(nn.ModuleDict({"convs": convs, "self": self_loops, "norm": norms}))
        self.dropout = nn.Dropout(config.dropout)
        # Weight of every edge in the last pass (CSR order for sage, edge_index order for gat).
        self.last_edge_weights: dict[EdgeType, torch.Tensor] = {}

    def forward(self, h: dict[str, torch.Tensor], inputs: GraphInputs) -> dict[str, torch.Tensor]:
        for layer in self.layers:
            parts = _module_dict(layer)
            convs, self_loops, norms = (_module_dict(parts[k]) for k in ("convs", "self", "norm"))
            out = {t: self_loops[t](h[t]) for t in h}
            for et in self.edge_types:
                src, _, dst = et
                conv = convs[_key(et)]
                if self.config.backbone == "sage":
                    message, weights = conv(h[src], inputs, et)
                else:
                    message, weights = conv(h[src], h[dst], inputs, et)
                out[dst] = out[dst] + message
                self.last_edge_weights[et] = weights.detach()
            h = {t: norms[t](h[t] + self.dropout(F.relu(out[t]))) for t in h}
        return h
