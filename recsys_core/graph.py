"""The heterogeneous user-place graph (PyG HeteroData) and its pickle-free file format.

Node order is the order of ids: index i of `user` is the i-th smallest user_id, and
`node_id` on each node store maps index -> id (the id <-> index mapping). Friend labels are
supervision, not message-passing structure, so they travel beside the graph, not in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_core import contracts, features
from recsys_core.vocabulary import BUILTIN, VOCABULARY_FILE, Vocabulary

INTERACTS = ("user", "interacts", "place")
REV_INTERACTS = ("place", "rev_interacts", "user")
SOCIAL = ("user", "social", "user")
EDGE_TYPES = (INTERACTS, REV_INTERACTS, SOCIAL)
DERIVED_FILE = "derived_features.json"

if TYPE_CHECKING:  # PyG is imported where a HeteroData is built: the service never needs it
    from torch_geometric.data import HeteroData


@dataclass
class GraphBundle:
    """The graph plus the friend-label pairs (as node indices) that supervise the friend head."""

    data: HeteroData
    friend_pairs: torch.Tensor  # (2, L) user indices
    friend_compat: torch.Tensor  # (L,) 0/1
    friend_attend: torch.Tensor  # (L,) 0/1
    vocabulary: Vocabulary = BUILTIN  # what the ids in x mean; the feature layouts follow it
    # Feature blocks derived from the interactions ({"user": ("fine_pref", ...), "place": ("popularity",)}):
    # a model that is measured must see them re-derived from its training edges (`rederived`).
    derived: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Per user index, the display name (None: the user has none); None: the world names no one.
    user_names: list[str | None] | None = None

    def rederived(
        self, user_index: np.ndarray, place_index: np.ndarray, attended: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """The node features with the derived blocks computed from these pairs only."""
        x_user, x_place = features.derive_from_history(
            self.data["user"].x.numpy(),
            self.data["place"].x.numpy(),
            user_index,
            place_index,
            attended,
            features.FeatureLayouts.for_vocabulary(self.vocabulary),
            self.derived,
        )
        return {"user": torch.from_numpy(x_user), "place": torch.from_numpy(x_place)}

    def node_counts(self) -> dict[str, int]:
        """`n_users` and `n_places`, as a model config of this graph takes them."""
        return {"n_users": int(self.data["user"].num_nodes), "n_places": int(self.data["place"].num_nodes)}

    def summary(self) -> dict[str, object]:
        d = self.data
        return {
            "users": int(d["user"].num_nodes),
            "places": int(d["place"].num_nodes),
            "user_feature_dim": int(d["user"].x.shape[1]),
            "place_feature_dim": int(d["place"].x.shape[1]),
            "interaction_edges": int(d[INTERACTS].edge_index.shape[1]),
            "interaction_edge_dim": int(d[INTERACTS].edge_attr.shape[1]),
            "social_edges_directed": int(d[SOCIAL].edge_index.shape[1]),
            "social_edge_dim": int(d[SOCIAL].edge_attr.shape[1]),
            "friend_labels": int(self.friend_pairs.shape[1]),
        }


class UnknownIdError(ValueError):
    """A table references an id that is not a node of the graph."""


def _index_of(index: pd.Index, ids: np.ndarray, what: str) -> np.ndarray:
    pos = index.get_indexer(pd.Index(ids))
    if (pos < 0).any():
        missing = np.unique(ids[pos < 0])
        raise UnknownIdError(f"{len(missing)} unknown {what} id(s), e.g. {missing[:10].tolist()}")
    return pos.astype(np.int64)


def build_hetero_graph(
    user_x: pa.Table,
    place_x: pa.Table,
    interactions: pa.Table,
    user_user_edges: pa.Table,
    friend_labels: pa.Table,
    vocabulary: Vocabulary = BUILTIN,
) -> GraphBundle:
    """Assemble the graph from feature tables (id + x, see `features.feature_table`) and edge tables."""
    user_x, place_x = user_x.sort_by("user_id"), place_x.sort_by("place_id")
    user_ids = user_x.column("user_id").to_numpy()
    place_ids = place_x.column("place_id").to_numpy()
    user_pos, place_pos = pd.Index(user_ids), pd.Index(place_ids)

    events = features.aggregate_interactions(
        interactions,
        _index_of(user_pos, interactions.column("user_id").to_numpy(), "user"),
        _index_of(place_pos, interactions.column("place_id").to_numpy(), "place"),
    )
    su = _index_of(user_pos, user_user_edges.column("user_u").to_numpy(), "user")
    sv = _index_of(user_pos, user_user_edges.column("user_v").to_numpy(), "user")
    social_attr = features.social_edge_features(user_user_edges)

    from torch_geometric.data import HeteroData

    derived = {"user": features.blocks_to_derive(user_x), "place": features.blocks_to_derive(place_x)}
    derived = {node: blocks for node, blocks in derived.items() if blocks}
    x = {"user": contracts.list_matrix(user_x, "x"), "place": contracts.list_matrix(place_x, "x")}
    if derived:  # from every interaction: the served features; training re-derives from its own edges
        attended = events.attr[:, features.INTERACTION_EDGE_LAYOUT["attended"]][:, 0]
        layouts = features.FeatureLayouts.for_vocabulary(vocabulary)
        x["user"], x["place"] = features.derive_from_history(
            x["user"], x["place"], events.user_index, events.place_index, attended, layouts, derived
        )
    data = HeteroData()
    for node_type, ids in (("user", user_ids), ("place", place_ids)):
        data[node_type].x = torch.from_numpy(x[node_type])
        data[node_type].node_id = torch.from_numpy(ids.astype(np.int64))
        data[node_type].num_nodes = len(ids)

    edge_index = torch.from_numpy(np.stack([events.user_index, events.place_index]))
    for edge_type, index in ((INTERACTS, edge_index), (REV_INTERACTS, edge_index.flip(0))):
        store = data[edge_type]
        store.edge_index = index.contiguous()
        store.edge_attr = torch.from_numpy(events.attr)
        store.edge_count = torch.from_numpy(events.count)
        store.edge_time = torch.from_numpy(events.last_time)
        store.edge_first_time = torch.from_numpy(events.first_time)
    data[SOCIAL].edge_index = torch.from_numpy(np.stack([np.concatenate([su, sv]), np.concatenate([sv, su])]))
    data[SOCIAL].edge_attr = torch.from_numpy(np.concatenate([social_attr, social_attr]))

    names = user_x.column(contracts.DISPLAY_NAME).to_pylist() if contracts.DISPLAY_NAME in user_x.column_names else None
    lu = _index_of(user_pos, friend_labels.column("user_u").to_numpy(), "user")
    lv = _index_of(user_pos, friend_labels.column("user_v").to_numpy(), "user")
    return GraphBundle(
        data=data,
        friend_pairs=torch.from_numpy(np.stack([lu, lv])),
        friend_compat=torch.from_numpy(friend_labels.column("label_compat").to_numpy().astype(np.int64)),
        friend_attend=torch.from_numpy(friend_labels.column("label_attend").to_numpy().astype(np.int64)),
        vocabulary=vocabulary,
        derived=derived,
        user_names=names,
    )


def build_from_world(world: dict[str, pa.Table], vocabulary: Vocabulary = BUILTIN) -> GraphBundle:
    """Convenience for notebooks, tests and benchmarks: tables straight to the graph."""
    return build_hetero_graph(
        features.user_feature_table(world["users"], vocabulary, world["places"]),
        features.place_feature_table(world["places"]),
        world["interactions"],
        world["user_user_edges"],
        world["friend_labels"],
        vocabulary,
    )


def graph_problems(bundle: GraphBundle) -> list[str]:
    """Structural checks: dimensions, finiteness, index bounds, reverse-edge symmetry."""
    d = bundle.data
    problems = []
    layouts = features.FeatureLayouts.for_vocabulary(bundle.vocabulary)
    expected = {"user": layouts.user.width, "place": layouts.place.width}
    for node, width in expected.items():
        x = d[node].x
        if x.shape != (d[node].num_nodes, width):
            problems.append(f"{node}.x has shape {tuple(x.shape)}, expected ({d[node].num_nodes}, {width})")
        if not torch.isfinite(x).all():
            problems.append(f"{node}.x has {int((~torch.isfinite(x)).any(dim=1).sum())} rows with NaN/inf")
    edge_dims = {
        INTERACTS: features.INTERACTION_EDGE_LAYOUT.width,
        REV_INTERACTS: features.INTERACTION_EDGE_LAYOUT.width,
        SOCIAL: features.SOCIAL_EDGE_LAYOUT.width,
    }
    for edge_type, width in edge_dims.items():
        store = d[edge_type]
        src, _, dst = edge_type
        ei, ea = store.edge_index, store.edge_attr
        if ea.shape != (ei.shape[1], width):
            problems.append(f"{edge_type} edge_attr has shape {tuple(ea.shape)}, expected ({ei.shape[1]}, {width})")
        if not torch.isfinite(ea).all():
            problems.append(f"{edge_type} edge_attr has NaN/inf")
        if ei.numel() and (ei.min() < 0 or ei[0].max() >= d[src].num_nodes or ei[1].max() >= d[dst].num_nodes):
            problems.append(f"{edge_type} edge_index out of node range")
    if not torch.equal(d[INTERACTS].edge_index.flip(0), d[REV_INTERACTS].edge_index):
        problems.append("rev_interacts is not the reverse of interacts")
    social = d[SOCIAL].edge_index
    if social.numel() and (social[0] == social[1]).any():
        problems.append("social edges contain self loops")
    return problems


def save_graph(bundle: GraphBundle, directory: Path) -> Path:
    """Plain tensors in a dict (loadable with weights_only=True) plus readable id maps."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for node_type in bundle.data.node_types:
        for key, value in bundle.data[node_type].items():
            tensors[f"node/{node_type}/{key}"] = torch.as_tensor(value)
    for edge_type in bundle.data.edge_types:
        for key, value in bundle.data[edge_type].items():
            tensors[f"edge/{'__'.join(edge_type)}/{key}"] = value
    for key in ("friend_pairs", "friend_compat", "friend_attend"):
        tensors[f"labels/{key}"] = getattr(bundle, key)
    path = directory / "graph.pt"
    torch.save(tensors, path)
    bundle.vocabulary.save(directory)
    (directory / DERIVED_FILE).write_text(json.dumps(bundle.derived) + "\n")
    for node_type in ("user", "place"):
        columns = {
            f"{node_type}_id": bundle.data[node_type].node_id.numpy(),
            "index": np.arange(bundle.data[node_type].num_nodes),
        }
        if node_type == "user" and bundle.user_names is not None:  # strings: no tensor holds them
            columns[contracts.DISPLAY_NAME] = pd.array(bundle.user_names, dtype="string")
        pd.DataFrame(columns).to_parquet(directory / f"{node_type}_index.parquet", index=False)
    return path


def _load_user_names(directory: Path) -> list[str | None] | None:
    """The display names `save_graph` wrote beside the user id map; None for a graph without any."""
    path = Path(directory) / "user_index.parquet"
    if not path.exists() or contracts.DISPLAY_NAME not in pq.read_schema(path).names:
        return None
    table = pq.read_table(path, columns=["index", contracts.DISPLAY_NAME]).sort_by("index")
    names: list[str | None] = table.column(contracts.DISPLAY_NAME).to_pylist()
    return names


def load_graph_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """The saved graph as its flat tensor dict ("node/user/x", "edge/user__interacts__place/edge_index", ...)."""
    tensors: dict[str, torch.Tensor] = torch.load(Path(directory) / "graph.pt", weights_only=True)
    return tensors


def load_graph(directory: Path) -> GraphBundle:
    from torch_geometric.data import HeteroData

    tensors = load_graph_tensors(directory)
    data = HeteroData()
    labels = {}
    for name, value in tensors.items():
        kind, _, rest = name.partition("/")
        if kind == "labels":
            labels[rest] = value
            continue
        owner, key = rest.split("/")
        if kind == "node":
            data[owner][key] = int(value) if key == "num_nodes" else value
        else:
            data[tuple(owner.split("__"))][key] = value
    # Graphs saved before vocabularies were data are of the built-in vocabulary.
    vocabulary = Vocabulary.load(directory) if (Path(directory) / VOCABULARY_FILE).exists() else BUILTIN
    derived_file = Path(directory) / DERIVED_FILE
    derived = json.loads(derived_file.read_text()) if derived_file.exists() else {}
    return GraphBundle(
        data=data,
        vocabulary=vocabulary,
        derived={k: tuple(v) for k, v in derived.items()},
        user_names=_load_user_names(directory),
        **labels,
    )
