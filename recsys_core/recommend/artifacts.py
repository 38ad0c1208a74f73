"""Everything the service scores with, loaded once from a serving manifest into memory.

After `load` returns, no request touches the disk: embeddings, features, the per-city
indices, who-has-been-where and the model heads all live in this object. A new manifest
gives a new object; the old one keeps serving the requests that already hold it.

The world's vocabulary (the names behind city, neighbourhood, category, tag, vibe and time-slot
ids) comes with the model: `vocabulary.json` in the model's artifact directory, or the built-in
vocabulary for a model saved before there was one. The feature layouts follow from it, and must
be the layouts the model was trained on (its config); requests are parsed and explained in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, SupportsInt, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from recsys_core.explain import place_name
from recsys_core.features import FeatureLayouts, Layout
from recsys_core.graph import INTERACTS, SOCIAL, load_graph_tensors
from recsys_core.manifest import ArtifactRef, ManifestError, ServingManifest
from recsys_core.model import checkpoint
from recsys_core.model.checkpoint import load_checkpoint
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.ranking.blend import PlaceBlend
from recsys_core.ranking.parts import Moments
from recsys_core.ranking.people import PeopleModel
from recsys_core.recommend.fast_head import FastFriendHead, FastPlaceHead
from recsys_core.recommend.limits import MAX_NAME_CHARS, MAX_TIME_SLOTS
from recsys_core.retrieval.embeddings import FRIENDS, NAMES, embedding_matrix
from recsys_core.retrieval.index import CityIndex
from recsys_core.vocabulary import VOCABULARY_FILE, Vocabulary

# What the service reads of each embedding table (the place table's `retrieval` column is the
# place model's item vectors again, which the service takes from the place model itself).
SERVED_COLUMNS = {
    "user_embeddings": ["user_id", "city_id", "embedding", "influential_place_ids"],
    "place_embeddings": ["place_id", "city_id", "embedding"],
}
# Read where the table has them: an export from before friends and names has neither, and
# is served as naming no one (no friend is cited, nobody by name).
OPTIONAL_SERVED_COLUMNS = {"user_embeddings": [FRIENDS, NAMES], "place_embeddings": []}

logger = logging.getLogger(__name__)


def _position(sorted_ids: np.ndarray, node_id: int) -> int | None:
    """Index of `node_id` in a sorted id array, or None when it is not there."""
    i = int(np.searchsorted(sorted_ids, node_id))
    return i if i < len(sorted_ids) and sorted_ids[i] == node_id else None


def _align(table_ids: np.ndarray, graph_ids: np.ndarray, what: str) -> np.ndarray:
    """Row of the table for each graph node; every node must have exactly one row."""
    order = np.argsort(table_ids)
    pos = np.searchsorted(table_ids[order], graph_ids)
    pos = np.minimum(pos, len(order) - 1)
    if len(table_ids) == 0 or len(table_ids) != len(graph_ids) or not np.array_equal(table_ids[order][pos], graph_ids):
        raise ManifestError(f"{what}: {len(table_ids)} rows do not cover the graph's {len(graph_ids)} nodes one to one")
    return order[pos]


@contextmanager
def _reading(name: str, ref: ArtifactRef | None = None) -> Iterator[None]:
    """Any failure while loading becomes a ManifestError that names the artifact (and file)."""
    try:
        yield
    except ManifestError:
        raise
    except Exception as exc:  # truncated Parquet, a zip torch cannot read, a FAISS file of another kind ...
        where = f" ({ref.target})" if ref is not None else ""
        raise ManifestError(f"{name}{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc


def _check_dimension(name: str, ref: ArtifactRef, dim: int, model_dim: int) -> None:
    if dim != model_dim:
        raise ManifestError(f"{name} ({ref.target}) has dimension {dim}, but the model's embeddings have {model_dim}")


def _check_index(name: str, ref: ArtifactRef, index: CityIndex, model_dim: int, allowed_ids: np.ndarray) -> None:
    """An index must match the model's dimension and hold only the city's own nodes."""
    _check_dimension(name, ref, index.dim, model_dim)
    foreign = index.ids[~np.isin(index.ids, allowed_ids)]
    if len(foreign):
        raise ManifestError(
            f"{name} ({ref.target}) holds {len(foreign)} ids that are not the city's nodes in the graph, "
            f"e.g. {foreign[:5].tolist()}"
        )


def load_vocabulary(model_ref: ArtifactRef) -> Vocabulary:
    """The vocabulary saved with the model (`vocabulary.json` beside its weights); the built-in
    one for a model saved before vocabularies were. A file that is there but unreadable or
    invalid is a ManifestError naming it, never a silent fallback to the built-in names."""
    path = model_ref.directory / VOCABULARY_FILE
    try:
        vocabulary = checkpoint.load_vocabulary(model_ref.directory)
    except Exception as exc:  # not JSON, not a vocabulary, unreadable ...
        raise ManifestError(f"vocabulary ({path}) cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if len(vocabulary.time_slots) > MAX_TIME_SLOTS:
        raise ManifestError(
            f"vocabulary ({path}) has {len(vocabulary.time_slots)} time slots; "
            f"the service takes at most {MAX_TIME_SLOTS}"
        )
    for what, names in (("categories", vocabulary.categories), ("tags", vocabulary.tags)):
        long = [n for n in names if len(n) > MAX_NAME_CHARS]
        if long:
            logger.warning(
                "vocabulary %s: %d %s longer than %d characters can only be asked for by id, e.g. %r",
                path,
                len(long),
                what,
                MAX_NAME_CHARS,
                long[0][:80],
            )
    return vocabulary


def _layout_differences(kind: str, ours: Layout, theirs: Layout) -> list[str]:
    if ours.blocks == theirs.blocks:
        return []
    mine, model = dict(ours.blocks), dict(theirs.blocks)
    differ = [b for b in dict.fromkeys([*mine, *model]) if mine.get(b) != model.get(b)]
    return [f"{kind} block {b} is {mine.get(b)} wide for the vocabulary, {model.get(b)} for the model" for b in differ]


def vocabulary_layouts(vocabulary: Vocabulary, config: ModelConfig, where: str) -> FeatureLayouts:
    """The vocabulary's feature layouts, which must be the model's (`config.layouts`), and the
    vocabulary's other sizes the model's too; otherwise a ManifestError naming every mismatch
    (`where` says which vocabulary it is)."""
    layouts, model_layouts = FeatureLayouts.for_vocabulary(vocabulary), config.layouts
    problems = config.vocabulary_mismatches(vocabulary)
    problems += _layout_differences("user layout", layouts.user, model_layouts.user)
    problems += _layout_differences("place layout", layouts.place, model_layouts.place)
    if problems:
        raise ManifestError(f"the vocabulary ({where}) does not match the model: " + "; ".join(problems))
    return layouts


def _check_features(graph_ref: ArtifactRef, layouts: FeatureLayouts, x_user: torch.Tensor, x_place: np.ndarray) -> None:
    """Feature matrices are the layouts' width (or empty, for interaction-only data)."""
    for kind, width, layout in (("user", x_user.shape[1], layouts.user), ("place", x_place.shape[1], layouts.place)):
        if width not in (0, layout.width):
            raise ManifestError(
                f"graph ({graph_ref.target}): {kind} features are {width} wide, "
                f"but the vocabulary's {kind} layout is {layout.width} wide"
            )


class PlaceNames:
    """Place names, each made on first use: naming all 10k places at load is 0.16 s of Python holding
    the GIL while requests wait (a hot reload), where a request shows ten.

    A place is named by its tags; where there are none to name it by (no features, or a vocabulary
    without tags, whose places would all be "Place"), by its id: "place 42"."""

    def __init__(self, x_place: np.ndarray, place_ids: np.ndarray, vocabulary: Vocabulary, layouts: FeatureLayouts):
        self._x, self._ids = x_place, place_ids
        self._vocabulary, self._layouts = vocabulary, layouts
        self._by_tags = bool(x_place.shape[1] and vocabulary.tags)
        self._made: dict[int, str] = {}

    def __getitem__(self, index: SupportsInt) -> str:
        index = int(index)
        name = self._made.get(index)
        if name is None:
            name = self._made[index] = (
                place_name(self._x[index], vocabulary=self._vocabulary, layouts=self._layouts)
                if self._by_tags
                else f"place {self._ids[index]}"
            )
        return name

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class ServingArtifacts:
    manifest: ServingManifest
    model: GraphRec
    vocabulary: Vocabulary  # the names behind the ids: requests are parsed and explained in it
    layouts: FeatureLayouts  # where each block of x_user / x_place is (the model's layouts)
    user_ids: np.ndarray  # sorted, index = node index
    place_ids: np.ndarray
    z_user: torch.Tensor
    z_place: torch.Tensor
    x_user: torch.Tensor  # the friend head's pair features read it
    user_city: np.ndarray
    place_city: np.ndarray
    seen: sp.csr_matrix  # user x place: interacted before
    visitors: sp.csr_matrix  # place x user: `seen` transposed once at load, for co-visitation counts
    friends: sp.csr_matrix  # user x user: social edges
    influences: list[np.ndarray]  # per user: place indices that weighed most
    # Per user, the friends (user indices) whose messages weighed most, heaviest first:
    # `friend_flat[friend_bounds[u, 0]:friend_bounds[u, 1]]` (`influential_friends`).
    friend_bounds: np.ndarray
    friend_flat: np.ndarray
    # Per user index, a display name or null; None: no names at all. (Not `pa.Array[...]`: the service's
    # framework evaluates these annotations at run time, where pyarrow's classes take no parameters.)
    user_names: pa.StringArray | None
    popularity: np.ndarray  # per place: log1p(interacting users), the cold-start prior
    place_names: PlaceNames
    place_indices: dict[int, CityIndex]
    user_indices: dict[int, CityIndex]
    # Per user: mean and std of <z_u, z_p> over the home city's places, to say how much
    # a given place stands out for them (the target-place term of attendance).
    score_mean: np.ndarray
    score_std: np.ndarray
    place_head: FastPlaceHead  # the heads' inference paths, in numpy
    friend_head: FastFriendHead
    z_user_np: np.ndarray
    z_place_np: np.ndarray  # for history explanations: which past place is nearest
    x_user_np: np.ndarray  # numpy views of the features, for explanations
    x_place_np: np.ndarray
    # The place model (`ranking`) and its item vectors, which the place indices hold; None: GraphRec alone.
    place_model: PlaceBlend | None = None
    retrieval: np.ndarray | None = None
    people_model: PeopleModel | None = None  # each user's candidates by the people model
    loaded_in_s: float = 0.0

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def cities(self) -> list[int]:
        return sorted(self.place_indices)

    def influential_friends(self, user: int) -> np.ndarray:
        """The user's friends (user indices) whose messages weighed most in the GNN, heaviest first."""
        start, end = self.friend_bounds[user]
        friends: np.ndarray = self.friend_flat[start:end]
        return friends

    def user_name(self, user: int) -> str | None:
        """The user's display name, None where the world gives none."""
        if self.user_names is None:
            return None
        name: str | None = self.user_names[user].as_py()
        return name

    def user_index(self, user_id: int) -> int | None:
        return _position(self.user_ids, user_id)

    def place_index(self, place_id: int) -> int | None:
        return _position(self.place_ids, place_id)

    def places_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.place_ids, ids)

    def users_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.user_ids, ids)

    @classmethod
    def load(cls, manifest: ServingManifest, verify: bool = True) -> ServingArtifacts:
        """Everything the manifest names, checked: sha256 and size (`verify`), then shapes:
        embeddings and indices of the model's dimension, one embedding row per graph node, an
        index per city where users live. Any problem raises ManifestError naming the artifact."""
        started = time.perf_counter()
        if verify:
            manifest.verify()
        with _reading("model", manifest.model):
            model, _ = load_checkpoint(manifest.model.directory)
        vocabulary = load_vocabulary(manifest.model)
        vocabulary_file = manifest.model.directory / VOCABULARY_FILE
        where = str(vocabulary_file) if vocabulary_file.exists() else f"the built-in one: no {vocabulary_file}"
        layouts = vocabulary_layouts(vocabulary, model.config, where)
        dim = model.config.d_model
        place_model = None
        if manifest.place_model is not None:
            with _reading("place_model", manifest.place_model):
                place_model = PlaceBlend.load(manifest.place_model.directory)
        people_model = None
        if manifest.people_model is not None:
            with _reading("people_model", manifest.people_model):
                people_model = PeopleModel.load(manifest.people_model.directory)
        with _reading("graph", manifest.graph):
            graph = load_graph_tensors(manifest.graph.directory)  # plain tensors: no PyG import in the service
            user_ids, place_ids = graph["node/user/node_id"].numpy(), graph["node/place/node_id"].numpy()
        if not (np.all(np.diff(user_ids) > 0) and np.all(np.diff(place_ids) > 0)):
            raise ManifestError(f"graph ({manifest.graph.target}): node ids must be sorted and unique")
        tables = {}
        for name, ref, ids, id_column in (
            ("user_embeddings", manifest.user_embeddings, user_ids, "user_id"),
            ("place_embeddings", manifest.place_embeddings, place_ids, "place_id"),
        ):
            with _reading(name, ref):
                present = set(pq.read_schema(ref.target).names)
                optional = [c for c in OPTIONAL_SERVED_COLUMNS[name] if c in present]
                table = pq.read_table(ref.target, columns=SERVED_COLUMNS[name] + optional)
                rows = _align(table.column(id_column).to_numpy(), ids, name)
                vectors = embedding_matrix(table)
            _check_dimension(name, ref, vectors.shape[1], dim)
            tables[name] = (table, rows, vectors)
        (users, u_rows, user_vectors), (places, p_rows, place_vectors) = (
            tables["user_embeddings"],
            tables["place_embeddings"],
        )
        z_user = torch.from_numpy(user_vectors[u_rows].copy())
        z_place = torch.from_numpy(place_vectors[p_rows].copy())
        user_city = users.column("city_id").to_numpy()[u_rows].astype(np.int64)
        place_city = places.column("city_id").to_numpy()[p_rows].astype(np.int64)
        indices: dict[str, dict[int, CityIndex]] = {"place_index": {}, "user_index": {}}
        retrieval = _place_model_vectors(manifest, place_model, len(user_ids), len(place_ids))
        place_dim = dim if retrieval is None else retrieval.shape[1]
        for kind, refs, ids, city, index_dim in (
            ("place_index", manifest.place_indices, place_ids, place_city, place_dim),
            ("user_index", manifest.user_indices, user_ids, user_city, dim),
        ):
            for c, ref in refs.items():
                name = f"{kind}[city {c}]"
                with _reading(name, ref):
                    index = CityIndex.load(ref.directory)
                _check_index(name, ref, index, index_dim, ids[city == int(c)])
                indices[kind][int(c)] = index
            uncovered = sorted(set(np.unique(user_city).tolist()) - set(indices[kind]))
            if uncovered:
                raise ManifestError(f"{kind}: the manifest has no index for cities {uncovered}, where users live")
            unnamed = sorted(c for c in indices[kind] if not 0 <= c < vocabulary.n_cities)
            if unnamed:
                raise ManifestError(
                    f"{kind}: the manifest has indices for cities {unnamed}, "
                    f"but the vocabulary has {vocabulary.n_cities} cities (ids 0..{vocabulary.n_cities - 1})"
                )
        with _reading("graph and model together", manifest.graph):
            artifacts = cls._assemble(
                manifest,
                model,
                vocabulary,
                layouts,
                graph,
                users,
                u_rows,
                user_ids,
                place_ids,
                z_user,
                z_place,
                user_city,
                place_city,
                indices,
            )
        if people_model is not None and (
            people_model.candidates.shape[0] != len(user_ids)
            or people_model.candidates.max(initial=-1) >= len(user_ids)
        ):
            raise ManifestError(
                f"people_model ({manifest.people_model.target if manifest.people_model else ''}) has "
                f"{people_model.candidates.shape[0]} rows and ids up to {people_model.candidates.max(initial=-1)}, "
                f"but the graph has {len(user_ids)} users"
            )
        artifacts.place_model, artifacts.retrieval, artifacts.people_model = place_model, retrieval, people_model
        artifacts.loaded_in_s = time.perf_counter() - started
        logger.info("loaded serving artifacts %s in %.1fs", manifest.version, artifacts.loaded_in_s)
        return artifacts

    @classmethod
    def _assemble(
        cls,
        manifest: ServingManifest,
        model: GraphRec,
        vocabulary: Vocabulary,
        layouts: FeatureLayouts,
        graph: dict[str, torch.Tensor],
        users: pa.Table,
        u_rows: np.ndarray,
        user_ids: np.ndarray,
        place_ids: np.ndarray,
        z_user: torch.Tensor,
        z_place: torch.Tensor,
        user_city: np.ndarray,
        place_city: np.ndarray,
        indices: dict[str, dict[int, CityIndex]],
    ) -> ServingArtifacts:
        influence_ids = cast("pa.ListArray[Any]", users.column("influential_place_ids").combine_chunks())
        offsets: np.ndarray = influence_ids.offsets.to_numpy()
        flat = np.searchsorted(place_ids, influence_ids.values.to_numpy().astype(np.int64))
        influences = [flat[offsets[r] : offsets[r + 1]] for r in u_rows]  # views: no copy per user
        friend_bounds, friend_flat = _friend_lists(users, u_rows, user_ids)
        names = _user_names(users, u_rows)
        n_users, n_places = len(user_ids), len(place_ids)
        ei = graph[f"edge/{'__'.join(INTERACTS)}/edge_index"].numpy()
        seen = sp.csr_matrix((np.ones(ei.shape[1], np.float32), (ei[0], ei[1])), shape=(n_users, n_places))
        social = graph.get(f"edge/{'__'.join(SOCIAL)}/edge_index")
        if social is not None:
            se = social.numpy()
            friends = sp.csr_matrix((np.ones(se.shape[1], np.float32), (se[0], se[1])), shape=(n_users, n_users))
        else:
            friends = sp.csr_matrix(
                (n_users, n_users),  # type: ignore[arg-type]  # scipy-stubs type the shape-only form float64 only
                dtype=np.float32,
            )
        x_user = graph.get("node/user/x", torch.zeros(n_users, 0)).float()
        x_place = graph.get("node/place/x", torch.zeros(n_places, 0)).float().numpy()
        _check_features(manifest.graph, layouts, x_user, x_place)
        mean, std = _home_city_score_stats(z_user, z_place, user_city, place_city)
        return cls(
            manifest=manifest,
            model=model.eval(),
            vocabulary=vocabulary,
            layouts=layouts,
            user_ids=user_ids,
            place_ids=place_ids,
            z_user=z_user,
            z_place=z_place,
            x_user=x_user,
            user_city=user_city,
            place_city=place_city,
            seen=seen,
            visitors=seen.T.tocsr(),
            friends=friends,
            influences=influences,
            friend_bounds=friend_bounds,
            friend_flat=friend_flat,
            user_names=names,
            popularity=np.log1p(np.asarray(seen.sum(axis=0)).ravel()),
            place_names=PlaceNames(x_place, place_ids, vocabulary, layouts),
            place_indices=indices["place_index"],
            user_indices=indices["user_index"],
            score_mean=mean,
            score_std=std,
            place_head=FastPlaceHead(model, z_place, x_place, layouts.place),
            friend_head=FastFriendHead(model, x_user.numpy(), layouts.user),
            z_user_np=z_user.numpy(),
            z_place_np=z_place.numpy(),
            x_user_np=x_user.numpy(),
            x_place_np=x_place,
        )


def _user_names(users: pa.Table, u_rows: np.ndarray) -> pa.StringArray | None:
    """The display names in graph order (one vectorised take); None for a table without them."""
    if NAMES not in users.column_names:
        return None
    names = users.column(NAMES).combine_chunks().cast(pa.string()).take(pa.array(u_rows))
    return cast("pa.StringArray", names)


def _friend_lists(users: pa.Table, u_rows: np.ndarray, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each graph user's (start, end) in the flat array of influential friends (as user indices),
    vectorised over the table; a table without the column (an older export) lists no friends."""
    if FRIENDS not in users.column_names:
        return np.zeros((len(u_rows), 2), np.int64), np.zeros(0, np.int64)
    lists = cast("pa.ListArray[Any]", users.column(FRIENDS).combine_chunks())
    offsets = lists.offsets.to_numpy().astype(np.int64)
    ids = lists.values.to_numpy().astype(np.int64)
    flat = np.searchsorted(user_ids, ids)
    if len(ids) and not np.array_equal(user_ids[np.minimum(flat, len(user_ids) - 1)], ids):
        raise ManifestError(f"user_embeddings: {FRIENDS} names users that are not in the graph")
    return np.stack([offsets[u_rows], offsets[u_rows + 1]], axis=1), flat


def _place_model_vectors(
    manifest: ServingManifest, place_model: PlaceBlend | None, n_users: int, n_places: int
) -> np.ndarray | None:
    """The place model's item vectors, once its shape is checked against the graph's nodes."""
    if place_model is None or manifest.place_model is None:
        return None
    if (place_model.n_users, place_model.n_items) != (n_users, n_places):
        raise ManifestError(
            f"place_model ({manifest.place_model.target}) scores {place_model.n_users} users x "
            f"{place_model.n_items} places, but the graph has {n_users} x {n_places}"
        )
    return place_model.item_vectors()


def _home_city_score_stats(
    z_user: torch.Tensor, z_place: torch.Tensor, user_city: np.ndarray, place_city: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the mean and std of <z_u, z_p> over the home city's places, in closed form from the
    places' mean vector and second moments (`ranking.parts.Moments`): a one-city world of 30k users
    and 41k places would otherwise be scored whole, 24 s of a service's start."""
    mean = np.zeros(len(z_user), np.float32)
    std = np.ones(len(z_user), np.float32)
    users, places = z_user.numpy(), z_place.numpy()
    for city in np.unique(user_city):
        u, p = np.flatnonzero(user_city == city), np.flatnonzero(place_city == city)
        if len(p) < 2:
            continue
        moments = Moments.of(places[p])
        m = moments.mean_of(users[u])
        # torch's std is the unbiased one: n / (n - 1) of the population variance
        variance = np.maximum(moments.square_of(users[u]) - m**2, 0.0) * len(p) / (len(p) - 1)
        mean[u] = m
        std[u] = np.maximum(np.sqrt(variance), 1e-6)
    return mean, std
