"""Explanations from history, for worlds whose places carry no content (interaction-only data such
as LastFM listens): the pure reason builders on hand-made matrices, then the LastFM slice trained,
published and served, whose reasons must name the user's real past places."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core.explain import (
    GET_ALONG,
    POPULAR_IN_CITY,
    explain_people_from_history,
    explain_places_from_history,
)
from recsys_core.features import FeatureLayouts
from recsys_core.manifest import ServingManifest
from recsys_core.model.config import has_place_content
from recsys_core.recommend.artifacts import PlaceNames, ServingArtifacts
from recsys_core.recommend.people import recommend_people
from recsys_core.recommend.places import past_places, recommend_places
from recsys_core.recommend.queries import PeopleQuery, PlaceQuery
from recsys_core.vocabulary import Vocabulary

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

NAMES = {i: f"P{i}" for i in range(100)}


def _places(past, places, z_past, z_places, co_visitors):
    return explain_places_from_history(
        np.asarray(past),
        np.asarray(places),
        np.asarray(z_past, np.float32),
        np.asarray(z_places, np.float32),
        np.asarray(co_visitors, np.float32),
        NAMES,
    )


# --------------------------------------------------------------------------- places, by hand


def test_the_nearest_past_place_and_the_most_co_visited_one_are_cited():
    past = [10, 11, 12]
    z_past = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    places = [20, 21]
    z_places = [[0.1, 0.9, 0.2], [0.3, 0.0, 2.0]]  # 20 is nearest 11, 21 nearest 12 (cosine, not length)
    co = [[3, 0], [1, 0], [0, 0]]  # 20 shares 3 visitors with 10; 21 shares none with any
    assert _places(past, places, z_past, z_places, co) == [
        ["Because you went to P11", "Popular with people who go to P10 (3 of them go here)"],
        ["Because you went to P12"],
    ]


def test_cosine_not_dot_product_picks_the_nearest():
    # 11 has the larger dot product with the place (long vector), 10 the larger cosine.
    reasons = _places([10, 11], [20], [[1, 0.1], [5, 5]], [[1, 0]], [[0], [0]])
    assert reasons == [["Because you went to P10"]]


def test_one_co_visitor_is_not_counted_aloud():
    reasons = _places([10], [20], [[1, 0]], [[1, 0]], [[1]])
    assert reasons == [["Because you went to P10", "Popular with people who go to P10"]]


def test_a_place_never_cites_itself():
    # Place 11 is both a past place and recommended: identical embedding, most co-visitors.
    past, places = [10, 11], [11, 20]
    z_past = [[1, 0.2], [0, 1]]
    z_places = [[0, 1], [0, 1]]
    co = [[2, 1], [9, 5]]
    first, second = _places(past, places, z_past, z_places, co)
    assert first == ["Because you went to P10", "Popular with people who go to P10 (2 of them go here)"]
    assert second == ["Because you went to P11", "Popular with people who go to P11 (5 of them go here)"]
    # With itself the only past place, there is nothing to cite.
    assert _places([11], [11], [[0, 1]], [[0, 1]], [[7]]) == [[POPULAR_IN_CITY]]


def test_zero_co_visitors_give_no_popular_with_sentence():
    reasons = _places([10, 11], [20, 21], [[1, 0], [0, 1]], [[1, 0], [0, 1]], np.zeros((2, 2)))
    assert reasons == [["Because you went to P10"], ["Because you went to P11"]]
    assert not any("Popular with people who go to" in e for r in reasons for e in r)


def test_no_history_is_popular_in_the_city():
    empty = np.zeros((0, 3), np.float32)
    assert _places([], [20, 21, 22], empty, np.eye(3), np.zeros((0, 3))) == [[POPULAR_IN_CITY]] * 3
    assert _places([], [], empty, empty, np.zeros((0, 0))) == []


def test_a_past_place_pointing_away_and_no_co_visitors_is_popular_in_the_city():
    assert _places([10], [20], [[1, 0]], [[-1, 0.1]], [[0]]) == [[POPULAR_IN_CITY]]


def test_ties_go_to_the_most_influential_past_place():
    reasons = _places([12, 10], [20], [[1, 0], [1, 0]], [[1, 0]], [[4], [4]])
    assert reasons == [["Because you went to P12", "Popular with people who go to P12 (4 of them go here)"]]


# --------------------------------------------------------------------------- people, by hand


def test_the_least_visited_shared_place_and_common_friends_are_cited():
    popularity = np.log1p(np.array([50, 3, 7, 1, 0], np.float32))
    shared = [np.array([0, 1, 2]), np.array([0]), np.array([], np.int64), np.array([], np.int64)]
    friends = np.array([2, 1, 0, 0])
    assert explain_people_from_history(shared, popularity, friends, NAMES) == [
        ["You both went to P1", "You have 2 friends in common", "You have both been to 3 of the same places"],
        ["You both went to P0", "You have 1 friend in common"],
        [GET_ALONG],
        [GET_ALONG],
    ]


# --------------------------------------------------------------------------- place names


def test_places_of_a_vocabulary_without_tags_are_named_by_id():
    vocabulary = Vocabulary(cities=("lastfm",))
    layouts = FeatureLayouts.for_vocabulary(vocabulary)
    assert layouts.place.width > 0  # city, neighbourhood, price, slot, popularity: features, but none that name
    x = np.zeros((2, layouts.place.width), np.float32)
    names = PlaceNames(x, np.array([7, 42]), vocabulary, layouts)
    assert (names[0], names[1]) == ("place 7", "place 42")


# --------------------------------------------------------------------------- the LastFM slice, served


@pytest.fixture(scope="module")
def lastfm_artifacts(tmp_path_factory) -> ServingArtifacts:
    """The LastFM slice completed, trained a few steps (featureless), published and loaded."""
    from recsys_core.completion import complete_world
    from recsys_core.graph import build_from_world
    from recsys_core.model.config import ModelConfig
    from recsys_core.retrieval.publish import publish
    from recsys_core.sources.files import read_listens
    from recsys_core.training.config import TrainConfig
    from recsys_core.training.pipeline import fit

    raw = read_listens(Path(__file__).parent / "data" / "lastfm_slice")
    bundle = build_from_world(complete_world(raw.tables, raw.vocabulary), raw.vocabulary)
    torch.manual_seed(0)
    config = ModelConfig.for_world(raw.vocabulary, **bundle.node_counts(), d_model=16, n_layers=1)
    trained = fit(bundle, config, TrainConfig(max_steps=20, eval_every=10, batch_size=1024))
    manifest = publish(
        trained.model, bundle, tmp_path_factory.mktemp("lastfm"), version="v1", social_edges_are_friendships=True
    )
    return ServingArtifacts.load(ServingManifest.read(manifest))


@pytest.fixture(scope="module")
def busy_user(lastfm_artifacts) -> int:
    """The user index with the most history."""
    return int(np.argmax(np.diff(lastfm_artifacts.seen.indptr)))


def _visited(art: ServingArtifacts, user: int) -> set[int]:
    return set(art.place_ids[art.seen[user].indices].tolist())


def _cited(reasons: list[str], prefix: str) -> list[int]:
    return [int(m.group(1)) for e in reasons if (m := re.match(rf"{prefix} place (\d+)\b", e))]


def test_the_slice_is_a_world_without_content_but_with_features(lastfm_artifacts):
    art = lastfm_artifacts
    assert not has_place_content(art.vocabulary) and art.model.config.featureless
    assert art.x_place_np.shape[1] > 0  # the old zero-width test would not pick the history path
    assert art.visitors.shape == art.seen.shape[::-1]
    assert (art.visitors != art.seen.T).nnz == 0


def test_place_reasons_name_the_users_real_past_places(lastfm_artifacts, busy_user):
    art, user = lastfm_artifacts, busy_user
    history = _visited(art, user)
    past = past_places(art, user)
    assert art.influences[user].tolist() == past[: len(art.influences[user])].tolist()  # influential first
    assert set(art.place_ids[past].tolist()) <= history
    results = recommend_places(art, PlaceQuery(user_id=int(art.user_ids[user]), top_k=10))
    assert len(results) == 10
    because, popular = [], []
    for r in results:
        assert r.name == f"place {r.place_id}"
        assert 1 <= len(r.explanations) <= 3
        assert POPULAR_IN_CITY not in r.explanations or len(r.explanations) == 1
        went, shared = (
            _cited(r.explanations, "Because you went to"),
            _cited(r.explanations, "Popular with people who go to"),
        )
        assert set(went) | set(shared) <= history and r.place_id not in went + shared
        j = art.place_index(r.place_id)
        for y in shared:  # the co-visited place really shares visitors with the recommended one
            assert art.seen[:, [j, art.place_index(y)]].min(axis=1).sum() > 0
        because += went
        popular += shared
    assert because and popular


def test_a_user_with_history_is_not_told_what_is_popular_in_the_city(lastfm_artifacts, busy_user):
    art = lastfm_artifacts
    results = recommend_places(art, PlaceQuery(user_id=int(art.user_ids[busy_user]), top_k=10))
    assert all(r.explanations[0].startswith("Because you went to place ") for r in results)


def test_people_reasons_name_a_place_both_went_to(lastfm_artifacts, busy_user):
    art, user = lastfm_artifacts, busy_user
    mine = _visited(art, user)
    results = recommend_people(art, PeopleQuery(user_id=int(art.user_ids[user]), top_k=20))
    assert results
    named = 0
    for r in results:
        other = art.user_index(r.user_id)
        assert 1 <= len(r.explanations) <= 3
        both = mine & _visited(art, other)
        cited = _cited(r.explanations, "You both went to")
        if both:
            assert len(cited) == 1 and cited[0] in both
            rarest = min(art.popularity[art.place_index(p)] for p in both)
            assert art.popularity[art.place_index(cited[0])] == rarest
            named += 1
        else:
            assert not cited
        common = art.friends[user].multiply(art.friends[other]).nnz
        says = [e for e in r.explanations if e.endswith("in common")]
        assert says == ([f"You have {common} friend{'s' if common > 1 else ''} in common"] if common else [])
    assert named


def test_similarity_edges_are_not_called_friends(lastfm_artifacts, busy_user):
    """Social edges that are not declared friendships (the manifest says so) give no "in common"."""
    art = dataclasses.replace(
        lastfm_artifacts, manifest=dataclasses.replace(lastfm_artifacts.manifest, social_edges_are_friendships=False)
    )
    results = recommend_people(art, PeopleQuery(user_id=int(art.user_ids[busy_user]), top_k=20))
    assert results and not any(e.endswith("in common") for r in results for e in r.explanations)
