"""The vocabulary as data: its file form, its checks, and the schemas, layouts and validators that follow it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from recsys_core import contracts, features, taxonomy, validation
from recsys_core.vocabulary import BUILTIN, NO_CATEGORY, Vocabulary, VocabularyError, slug

SMALL = {
    "cities": ["New York", "Kyoto"],
    "neighborhoods": {"New York": ["SoHo", "Harlem", "Astoria"], "Kyoto": ["Gion", "Arashiyama", "Demachi", "Fushimi"]},
    "categories": ["music", "food", "outdoor"],
    "tags": [
        {"name": "jazz_club", "category": "music"},
        {"name": "noise_rock", "category": "music"},
        {"name": "ramen", "category": "food"},
        {"name": "kaiseki", "category": "food"},
        {"name": "temple_walk", "category": "outdoor"},
        {"name": "river_bank", "category": "outdoor"},
        "open_late",
    ],
    "vibes": ["calm", "loud", "curious", "early"],
    "time_slots": ["day", "night", "weekend"],
    "slot_of_bucket": [[0, 2], [0, 2], [1, 2], [1, 2]],
    "price_bands": ["cheap", "dear"],
}


@pytest.fixture
def small() -> Vocabulary:
    return Vocabulary.from_dict(SMALL)


def test_the_builtin_vocabulary_is_the_taxonomy():
    assert BUILTIN.city_slugs == taxonomy.CITY_SLUGS
    assert BUILTIN.tags == taxonomy.FINE_TAGS and BUILTIN.categories == taxonomy.COARSE_CATEGORIES
    assert BUILTIN.n_neighborhoods == taxonomy.N_NEIGHBORHOODS_PER_CITY
    assert all(BUILTIN.time_slot_of(t, w) == taxonomy.time_slot_of(t, w) for t in range(4) for w in range(2))
    assert BUILTIN.neighborhood_name(2, 0) == taxonomy.neighborhood_name(2, 0) == "Kreuzberg"


def test_a_vocabulary_survives_its_file_form(small, tmp_path):
    assert Vocabulary.from_json(small.to_json()) == small
    assert Vocabulary.from_json(BUILTIN.to_json()) == BUILTIN
    small.save(tmp_path)
    assert Vocabulary.load(tmp_path) == small


def test_lookups_follow_the_vocabulary(small):
    assert small.city_slugs == ("new_york", "kyoto")
    assert small.city_id("kyoto") == 1
    with pytest.raises(ValueError, match="unknown city 'london'"):
        small.city_id("london")
    assert small.n_neighborhoods == 4  # the city with the most
    assert small.neighborhood_name(0, 2) == "Astoria"
    assert small.neighborhood_name(0, 3) is None  # New York has three
    assert small.tags_of_category(1) == (2, 3)
    assert small.tag_category[-1] == NO_CATEGORY
    assert small.time_slot_of(3, 0) == 1 and small.time_slot_of(0, 1) == 2
    assert slug("Saint-Germain des Prés!") == "saint_germain_des_pr_s"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cities": [], "neighborhoods": {}}, "at least one city"),
        ({"cities": ["Paris", "paris"], "neighborhoods": {}}, "duplicate city slugs"),
        ({"tags": ["a", "a"]}, "duplicate tags"),
        ({"tags": [{"name": "x", "category": "sport"}]}, "unknown category 'sport'"),
        ({"neighborhoods": {"Atlantis": ["x"]}}, "neighborhoods of unknown cities"),
        ({"slot_of_bucket": [[0, 1]]}, "slot_of_bucket must be 4 rows of 2"),
        ({"slot_of_bucket": [[0, 9]] * 4}, "outside 0..2"),
        ({"colour": ["red"]}, "unknown vocabulary fields"),
    ],
)
def test_a_bad_vocabulary_is_refused_naming_the_problem(change, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_dict({**SMALL, **change})


def test_schemas_and_layouts_take_their_widths_from_the_vocabulary(small):
    users = contracts.world_schemas(small)["users"]
    assert users.field("fine_pref").type.list_size == 7
    assert users.field("cat_pref").type.list_size == 3
    assert users.field("vibe_pref").type.list_size == 4
    layouts = features.FeatureLayouts.for_vocabulary(small)
    assert layouts.user.size("area_freqs") == 4 and layouts.user.size("fine_pref") == 7
    assert layouts.place.size("category_one_hot") == 3
    assert (layouts.user.width, layouts.place.width) == (2 + 3 + 7 + 4 + 4 + 5, 2 + 3 + 7 + 2 + 4)
    builtin = features.FeatureLayouts.for_vocabulary(BUILTIN)
    assert (builtin.user.width, builtin.place.width) == (158, 114)


def _users(vocabulary: Vocabulary, neighborhood: list[int], city: list[int]) -> pa.Table:
    n = len(city)

    def simplex(width: int) -> list[list[float]]:
        return [[1.0 / width] * width for _ in range(n)]

    area = pa.array([[(nb, 1.0)] for nb in neighborhood], type=pa.map_(pa.int32(), pa.float32()))
    columns: dict[str, Any] = {
        "user_id": pa.array(range(n), pa.int64()),
        "home_city_id": pa.array(city, pa.int32()),
        "home_neighborhood_id": pa.array(neighborhood, pa.int32()),
        "cat_pref": simplex(len(vocabulary.categories)),
        "fine_pref": simplex(len(vocabulary.tags)),
        "vibe_pref": simplex(len(vocabulary.vibes)),
        "area_freqs": area,
        "avg_sessions_per_week": [2.0] * n,
        "avg_views_per_session": [10.0] * n,
        "avg_likes_per_session": [1.0] * n,
        "avg_saves_per_session": [0.5] * n,
        "avg_attends_per_month": [1.0] * n,
    }
    return pa.table(columns).cast(contracts.world_schemas(vocabulary)["users"])


def test_validators_and_features_follow_the_vocabulary(small):
    users = _users(small, neighborhood=[2, 3, 3], city=[0, 1, 0])  # New York has no neighbourhood 3
    violations = validation.validate_users(users, vocabulary=small)
    assert violations.query("rule == 'neighborhood_range'")["row"].tolist() == [2]
    assert "its city's neighbourhood ids" in violations["reason"].iloc[0]
    # The built-in vocabulary's schema does not fit this world: named, not misread.
    builtin_check = validation.validate_users(users)
    assert (builtin_check["rule"] == "schema").all() and builtin_check["reason"].str.contains("fine_pref").any()
    x = features.user_features(users, small)
    layout = features.FeatureLayouts.for_vocabulary(small).user
    assert x.shape == (3, layout.width)
    np.testing.assert_array_equal(x[:, layout["area_freqs"]].argmax(axis=1), [2, 3, 3])
