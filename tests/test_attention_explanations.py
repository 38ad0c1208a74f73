"""Explanations that say whom or what a place comes through in the GNN (issue #17, deliverable 6).

A small world is built into a graph, a model with a non-trivial last layer (random gates for
`sage`, GAT's own attention) is published and served, and every reason that names a friend must
name the friend whose message weighed most, in the last layer, among the user's friends who went
to the place. The reference weights are read off the backbone in the order each backbone keeps
them (CSR for `sage`, edge_index for `gat`), so a mix-up of the two orders names the wrong friend.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recsys_core import contracts
from recsys_core.explain import (
    A_FRIEND_GOES,
    A_LIKE_MINDED_USER_GOES,
    PEOPLE_MIN,
    GraphPaths,
    Wishes,
    explain_places,
)
from recsys_core.graph import INTERACTS, SOCIAL, GraphBundle, build_from_world, load_graph, save_graph
from recsys_core.manifest import ArtifactRef, ServingManifest, live_manifest_path
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.places import graph_paths, recommend_places
from recsys_core.recommend.queries import PlaceQuery
from recsys_core.retrieval.embeddings import FRIENDS, N_FRIEND_INFLUENCES, NAMES
from recsys_core.retrieval.publish import EMBEDDINGS_FILE, publish

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

FRIEND_SAYS = re.compile(r"^Friend(\d+), your friend, goes here$")
PEOPLE_SAY = re.compile(r"^People who go to (.+) go here$")


def _model(bundle: GraphBundle, backbone: Literal["sage", "gat"]) -> GraphRec:
    """An untrained model whose last-layer weights differ between edges."""
    torch.manual_seed(0)
    inputs = GraphInputs.from_hetero(bundle.data)
    config = ModelConfig(d_model=16, head_hidden=(16, 8), d_ctx=4, backbone=backbone, n_layers=1, gat_heads=2)
    model = GraphRec(config, inputs.edge_dims())
    if backbone == "sage":  # the gates start at zero: every edge would weigh the same
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "gate" in name:
                    p.normal_(std=2.0)
    return model


def _social_weights(model: GraphRec, bundle: GraphBundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(friend, user, weight) of every social message of the model's last pass."""
    inputs = GraphInputs.from_hetero(bundle.data)
    weights = model.backbone.last_edge_weights[SOCIAL].numpy()
    if model.config.backbone == "sage":
        relation = inputs.relations[SOCIAL]
        return relation.src.numpy(), relation.dst.numpy(), weights
    src, dst = inputs.edge_index[SOCIAL].numpy()
    return src, dst, weights


@dataclasses.dataclass
class Served:
    art: ServingArtifacts
    model: GraphRec
    bundle: GraphBundle
    root: Path
    social: tuple[np.ndarray, np.ndarray, np.ndarray]  # (friend, user, weight) of the export's pass


def _serve(bundle: GraphBundle, backbone: Literal["sage", "gat"], root: Path) -> Served:
    model = _model(bundle, backbone)
    manifest = publish(model, bundle, root, version="v1", social_edges_are_friendships=True)
    art = ServingArtifacts.load(ServingManifest.read(manifest))
    return Served(art, model, bundle, root, _social_weights(model, bundle))


@pytest.fixture(scope="module")
def named_bundle(world) -> GraphBundle:
    """The session world's graph, its users renamed uniquely ("Friend<index>") so that a reason's
    name identifies one user (the synthetic first names repeat)."""
    bundle = build_from_world(world)
    n = int(bundle.data["user"].num_nodes)
    return dataclasses.replace(bundle, user_names=[f"Friend{i}" for i in range(n)])


@pytest.fixture(scope="module", params=["sage", "gat"])
def served(request, named_bundle, tmp_path_factory) -> Served:
    return _serve(named_bundle, request.param, tmp_path_factory.mktemp(request.param))


def _expected_friend(served: Served, user: int, place: int) -> int | None:
    """Of the user's friends who went to `place`, the one with the largest last-layer weight, if it
    is among the friends the export keeps (otherwise none of those went there)."""
    src, dst, weight = served.social
    ei = served.bundle.data[INTERACTS].edge_index.numpy()
    visitors = set(ei[0, ei[1] == place].tolist())
    mine = np.flatnonzero(dst == user)
    ranked = mine[np.argsort(-weight[mine], kind="stable")]  # heaviest first, ties in the weights' order
    kept = src[ranked[:N_FRIEND_INFLUENCES]].tolist()
    went = [int(f) for f in src[ranked] if int(f) in visitors]
    return went[0] if went and went[0] in kept else None


def test_synthetic_names_reach_the_graph_and_survive_saving_it(world, tmp_path):
    bundle = build_from_world(world)
    users = world["users"].sort_by("user_id")
    assert bundle.user_names == users.column(contracts.DISPLAY_NAME).to_pylist()
    assert all(isinstance(n, str) and n for n in bundle.user_names)
    save_graph(bundle, tmp_path)
    assert load_graph(tmp_path).user_names == bundle.user_names


def test_exported_friends_are_the_heaviest_social_neighbours(served):
    src, dst, weight = served.social
    assert len(np.unique(weight)) > 10  # the weights really differ between friends
    table = pq.read_table(served.root / "user_embeddings" / EMBEDDINGS_FILE)
    friends = dict(zip(table.column("user_id").to_pylist(), table.column(FRIENDS).to_pylist(), strict=True))
    user_ids = served.bundle.data["user"].node_id.numpy()
    for user in range(0, len(user_ids), 37):
        mine = dst == user
        expected = user_ids[src[mine][np.argsort(-weight[mine], kind="stable")[:N_FRIEND_INFLUENCES]]]
        assert friends[int(user_ids[user])] == expected.tolist()
        assert (
            served.art.influential_friends(user).tolist()
            == src[mine][np.argsort(-weight[mine], kind="stable")[:N_FRIEND_INFLUENCES]].tolist()
        )


def _users_with_friends(art: ServingArtifacts, step: int = 9) -> list[int]:
    return [u for u in range(0, len(art.user_ids), step) if len(art.influential_friends(u))]


def test_a_place_a_friend_went_to_names_the_friend_with_the_largest_weight(served):
    """Direct: for places two or more of a user's friends went to, the reason names the heaviest."""
    art = served.art
    decisive = 0
    for user in _users_with_friends(art):
        friends = art.influential_friends(user)
        went = art.seen[friends].toarray() > 0
        places = np.flatnonzero(went.sum(axis=0) >= 2)
        places = places[~np.isin(places, art.seen[user].indices)][:10]
        if not len(places):
            continue
        paths = graph_paths(art, user, places)
        reasons = explain_places(
            art.x_user_np[user],
            art.x_place_np[places],
            Wishes(),
            (),
            False,
            places,
            paths,
            vocabulary=art.vocabulary,
            layouts=art.layouts,
        )
        for place, rs in zip(places, reasons, strict=True):
            expected = _expected_friend(served, user, int(place))
            assert expected is not None  # two of the kept friends went there
            assert rs[0] == f"Friend{expected}, your friend, goes here", (user, place, rs)
            lighter = [int(f) for f in friends if went[list(friends).index(f), place] and f != expected]
            decisive += bool(lighter)  # another friend went too: the weights decided
    assert decisive >= 20


def test_served_recommendations_name_the_heaviest_visiting_friend_or_the_people_of_a_past_place(served):
    """End to end, through `recommend_places`: each recommended place's reasons."""
    art = served.art
    named = people = 0
    for user in _users_with_friends(art, step=7):
        results = recommend_places(art, PlaceQuery(user_id=int(art.user_ids[user]), top_k=20))
        for r in results:
            place = art.place_index(r.place_id)
            expected = _expected_friend(served, user, place)
            said = [int(m.group(1)) for e in r.explanations if (m := FRIEND_SAYS.match(e))]
            assert said == ([expected] if expected is not None else []), (user, r)
            cited = [m.group(1) for e in r.explanations if (m := PEOPLE_SAY.match(e))]
            if expected is not None:
                named += 1
                assert not cited and r.explanations[0] == f"Friend{expected}, your friend, goes here"
            else:
                sharing = [p for p in art.influences[user].tolist() if p != place and _others_went(art, user, place, p)]
                assert bool(sharing) == bool(cited), (user, r)  # cited exactly when some past place shares
                if sharing:
                    people += 1
                    assert art.place_names[sharing[0]] == cited[0], (user, r)  # the heaviest that shares
    assert named >= 10 and people >= 1


def _others_went(art: ServingArtifacts, user: int, place: int, past: int) -> bool:
    """Whether users other than `user` (at least `PEOPLE_MIN`) went to both places."""

    def visitors(p: int) -> set[int]:
        return set(art.visitors.indices[art.visitors.indptr[p] : art.visitors.indptr[p + 1]].tolist())

    return len((visitors(place) & visitors(past)) - {user}) >= PEOPLE_MIN


def test_the_people_of_the_most_influential_past_place_are_cited():
    """By hand: no friend went there; of the past places sharing visitors, the heaviest is cited,
    never the place itself, and its "Like X" reason is not repeated."""
    paths = GraphPaths(
        friend_names=["Priya"],
        friend_went=np.array([[False, False, True]]),
        past=np.array([10, 11, 12]),
        past_names=["Jazz bar", "Wine bar", "Club"],
        co_visitors=np.array([[0, 5, 0], [2, 3, 1], [9, 0, 0]]),  # one co-visitor is not people
    )
    friend, people = paths.through(np.array([12, 20, 21]))
    assert friend.tolist() == [-1, -1, 0]
    assert people.tolist() == [1, 0, -1]  # place 12 shares 9 visitors with past place 12: itself, not a path
    assert paths.people_reason(1) == "People who go to Wine bar go here"
    assert paths.friend_reason(0) == "Priya, your friend, goes here"


def test_similar_users_are_not_called_friends():
    paths = GraphPaths(["Priya", None], np.ones((2, 1), bool), np.zeros(0, np.int64), [], np.zeros((0, 1)), False)
    assert paths.friend_reason(0) == "Priya, who shares your tastes, goes here"
    assert paths.friend_reason(1) == A_LIKE_MINDED_USER_GOES


# --------------------------------------------------------------------------- no names, old artifacts


@pytest.fixture(scope="module")
def unnamed(world, tmp_path_factory) -> Served:
    """A world whose users have no display_name column at all, served."""
    users = world["users"].drop_columns([contracts.DISPLAY_NAME])
    bundle = build_from_world({**world, "users": users})
    assert bundle.user_names is None
    return _serve(bundle, "sage", tmp_path_factory.mktemp("unnamed"))


def test_without_names_a_friend_is_a_friend_of_yours(unnamed):
    art = unnamed.art
    table = pq.read_table(unnamed.root / "user_embeddings" / EMBEDDINGS_FILE)
    assert table.column(NAMES).null_count == table.num_rows
    said = []
    for user in _users_with_friends(art, step=5):
        for r in recommend_places(art, PlaceQuery(user_id=int(art.user_ids[user]), top_k=20)):
            expected = _expected_friend(unnamed, user, art.place_index(r.place_id))
            assert (A_FRIEND_GOES in r.explanations) == (expected is not None)
            assert not any(FRIEND_SAYS.match(e) or ", your friend," in e for e in r.explanations)
            said += [e for e in r.explanations if e == A_FRIEND_GOES]
    assert len(said) >= 5


def test_an_export_without_friends_and_names_still_loads_and_names_no_friend(unnamed, tmp_path):
    """A user table written before this change (no friends, no names) is served as naming no one."""
    old = pq.read_table(unnamed.root / "user_embeddings" / EMBEDDINGS_FILE).drop_columns([FRIENDS, NAMES])
    pq.write_table(old, tmp_path / EMBEDDINGS_FILE)
    manifest = dataclasses.replace(
        ServingManifest.read(live_manifest_path(unnamed.root)),
        user_embeddings=ArtifactRef.of_directory(tmp_path, EMBEDDINGS_FILE),
    )
    art = ServingArtifacts.load(manifest)
    assert art.user_names is None and not len(art.friend_flat)
    user = _users_with_friends(unnamed.art)[0]
    results = recommend_places(art, PlaceQuery(user_id=int(art.user_ids[user]), top_k=20))
    assert results and not any("friend" in e for r in results for e in r.explanations)
