"""What the model consumes: node features and per-relation structure, prepared once per graph."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from recsys_core.graph import INTERACTS, REV_INTERACTS, SOCIAL
from recsys_core.model.sparse import Relation

if TYPE_CHECKING:
    from torch_geometric.data import HeteroData

MICROS_PER_DAY = 86_400 * 1_000_000
DECAY_DAYS = 30.0


@dataclass
class GraphInputs:
    x: dict[str, torch.Tensor]
    num_nodes: dict[str, int]
    edge_index: dict[tuple[str, str, str], torch.Tensor]
    edge_attr: dict[tuple[str, str, str], torch.Tensor]  # in edge_index order
    relations: dict[tuple[str, str, str], Relation]
    city: dict[str, torch.Tensor]  # per node; all 0 for data without cities
    # Per relation, a 0/1 weight per edge in CSR order: the edges a training step leaves out of
    # message passing (the pairs it is supervised on), None: every edge passes messages.
    edge_keep: dict[tuple[str, str, str], torch.Tensor] | None = None

    def without_interactions(self, edges: torch.Tensor, places: torch.Tensor | None = None) -> GraphInputs:
        """These inputs with interaction edges `edges` (positions in edge_index order), and every
        interaction edge of `places`, passing no messages either way: a step supervised on them
        cannot read the answer off the graph, and isolated places look like ones that just opened."""
        keep: dict[tuple[str, str, str], torch.Tensor] = {}
        dropped = torch.ones(self.edge_index[INTERACTS].shape[1]) if INTERACTS in self.relations else None
        if dropped is not None:
            dropped[edges] = 0.0
            if places is not None and len(places):
                isolated = torch.zeros(self.num_nodes["place"], dtype=torch.bool)
                isolated[places] = True
                dropped[isolated[self.edge_index[INTERACTS][1]]] = 0.0
        for et in (INTERACTS, REV_INTERACTS):
            if et in self.relations and dropped is not None:
                keep[et] = dropped[self.relations[et].order]
        return dataclasses.replace(self, edge_keep=keep)

    @classmethod
    def from_hetero(cls, data: HeteroData, use_social: bool = True, time_decay: bool = False) -> GraphInputs:
        edge_types = [INTERACTS, REV_INTERACTS] + ([SOCIAL] if use_social and SOCIAL in data.edge_types else [])
        num_nodes = {t: int(data[t].num_nodes) for t in ("user", "place")}
        edge_index, edge_attr, relations = {}, {}, {}
        reference = data[INTERACTS].edge_time.max() if time_decay and data[INTERACTS].num_edges else None
        for et in edge_types:
            store = data[et]
            attr = store.edge_attr if "edge_attr" in store else torch.ones(store.edge_index.shape[1], 1)
            if time_decay and "edge_time" in store:
                days = (reference - store.edge_time).float() / MICROS_PER_DAY
                attr = torch.cat([attr, torch.exp(-days / DECAY_DAYS).unsqueeze(-1)], dim=-1)
            edge_index[et] = store.edge_index
            edge_attr[et] = attr.float()
            relations[et] = Relation(store.edge_index, num_nodes[et[0]], num_nodes[et[2]], edge_attr[et])
        x = {t: data[t].x if "x" in data[t] else torch.zeros(num_nodes[t], 0) for t in ("user", "place")}
        city = {t: x[t][:, 0].long() if x[t].shape[1] else torch.zeros(num_nodes[t], dtype=torch.long) for t in x}
        return cls(x=x, num_nodes=num_nodes, edge_index=edge_index, edge_attr=edge_attr, relations=relations, city=city)

    def edge_dims(self) -> dict[tuple[str, str, str], int]:
        return {et: int(a.shape[1]) for et, a in self.edge_attr.items()}
