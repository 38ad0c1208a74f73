"""Heterogeneous message passing over social, interacts and rev_interacts.

Two interchangeable backbones:
- `sage` (default): edge-aware weighted-mean aggregation. Each relation learns a gate that
  turns an edge's features (rating, dwell, attendance, time of day, optional recency) into
  the weight of its message; sparse kernels keep a full-graph pass over ~1M edges cheap.
- `gat`: PyG `GATConv` with edge features; it keeps the attention weights of the last pass
  so explanations can name the interactions and friends that weighed most. Edges a training
  step leaves out (`GraphInputs.edge_keep`) are dropped before the attention, as `sage` weighs them 0.
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
    """PyG `GATConv` over one relation; its attention per edge is what explanations read."""

    def __init__(self, d: int, edge_dim: int, heads: int):
        super().__init__()
        from torch_geometric.nn import GATConv  # imported only when a GAT backbone is built

        self.conv = GATConv((d, d), d // heads, heads=heads, edge_dim=edge_dim, add_self_loops=False)

    def forward(
        self, h_src: torch.Tensor, h_dst: torch.Tensor, inputs: GraphInputs, edge_type: EdgeType
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages into every destination and one attention weight per edge, in edge_index order.

        Edges `inputs.edge_keep` leaves out (a training step's supervision pairs) are dropped before
        the convolution, so they pass no message and take no share of the softmax; their weight is 0."""
        edge_index, edge_attr = inputs.edge_index[edge_type], inputs.edge_attr[edge_type]
        kept = _kept_edges(inputs, edge_type)
        if kept is not None:
            edge_index, edge_attr = edge_index[:, kept], edge_attr[kept]
        out, (_, alpha) = self.conv((h_src, h_dst), edge_index, edge_attr, return_attention_weights=True)
        weights = alpha.mean(dim=-1)
        if kept is not None:
            weights = torch.zeros(kept.shape[0], dtype=weights.dtype).masked_scatter(kept, weights)
        return out, weights


def _kept_edges(inputs: GraphInputs, edge_type: EdgeType) -> torch.Tensor | None:
    """Which edges pass messages, as a mask in edge_index order (None: all of them). `edge_keep`
    is in the relation's CSR order, and CSR edge i is edge `order[i]` of edge_index."""
    if inputs.edge_keep is None or edge_type not in inputs.edge_keep:
        return None
    order = inputs.relations[edge_type].order
    kept = torch.zeros(order.shape[0], dtype=torch.bool)
    kept[order] = inputs.edge_keep[edge_type] > 0
    return kept


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
