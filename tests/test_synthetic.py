"""The synthetic world generator: per-city determinism, travel, social structure, learnable tastes, config errors."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_core import contracts, validation
from recsys_core.synthetic.config import ConfigError, PreferenceWeights, WorldConfig
from recsys_core.synthetic.interactions import generate_interactions
from recsys_core.synthetic.places import generate_places
from recsys_core.synthetic.preference import Tastes, Traits, preference_scores
from recsys_core.synthetic.social_graph import generate_friend_labels, generate_user_user_edges
from recsys_core.synthetic.users import generate_users
from recsys_core.synthetic.world import generate_world
from recsys_core.taxonomy import C_COARSE, EXPENSIVE_CITIES, FINE_TAG_CATEGORY, N_CITIES

CITIES = range(N_CITIES)


# --------------------------------------------------------------------------- helpers


def rows_where(table: pa.Table, column: str, values) -> pa.Table:
    return table.filter(
        pc.is_in(table.column(column), pa.array(np.atleast_1d(values), table.schema.field(column).type))
    )


def city_users(world, city: int) -> pa.Table:
    return rows_where(world["users"], "home_city_id", city)


def city_tables(world, city: int) -> dict[str, pa.Table]:
    """One city's slice of the world (interactions/edges/labels by the users' home city)."""
    users = city_users(world, city)
    ids = users.column("user_id")
    return {
        "users": users,
        "places": rows_where(world["places"], "city_id", city),
        "interactions": rows_where(world["interactions"], "user_id", ids),
        "user_user_edges": rows_where(world["user_user_edges"], "user_u", ids),
        "friend_labels": rows_where(world["friend_labels"], "user_u", ids),
    }


def unit_fine_pref(users: pa.Table) -> np.ndarray:
    fine = contracts.list_matrix(users, "fine_pref").astype(np.float64)
    return fine / np.linalg.norm(fine, axis=1, keepdims=True)


def co_attendance(interactions: pa.Table) -> pd.Series:
    """Days on which both users of a pair attended the same place, by (user_u < user_v), via pandas."""
    events = interactions.select(["user_id", "place_id", "attended", "timestamp"]).to_pandas()
    events = events[events["attended"]]
    events["day"] = events["timestamp"].dt.tz_convert("UTC").dt.floor("D")
    events = events[["user_id", "place_id", "day"]].drop_duplicates()
    pairs = events.merge(events, on=["place_id", "day"], suffixes=("_u", "_v"))
    pairs = pairs[pairs["user_id_u"] < pairs["user_id_v"]]
    return pairs.groupby(["user_id_u", "user_id_v"]).size()


def co_attendance_of(counts: pd.Series, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return counts.reindex(pd.MultiIndex.from_arrays([u, v]), fill_value=0).to_numpy()


def visited_score_percentile(
    config: WorldConfig, users: pa.Table, places: pa.Table, interactions: pa.Table
) -> tuple[float, float]:
    """Event-weighted percentile of visited home-city places in each user's true-preference ranking,
    and the share of users whose visited places score above the city average."""
    city = users.column("home_city_id")[0].as_py()
    home = rows_where(places, "city_id", city)
    tastes, traits = Tastes.from_table(users), Traits.from_table(home)
    scores = preference_scores(tastes, traits, config.preference)
    percentile = scores.argsort(axis=1).argsort(axis=1) / (scores.shape[1] - 1)
    events = rows_where(interactions, "place_id", traits.ids)
    ui = pd.Index(tastes.ids).get_indexer(events.column("user_id").to_numpy())
    pi = pd.Index(traits.ids).get_indexer(events.column("place_id").to_numpy())
    per_user = pd.Series(scores[ui, pi]).groupby(ui).mean()
    above = per_user.to_numpy() > scores.mean(axis=1)[per_user.index.to_numpy()]
    return float(percentile[ui, pi].mean()), float(above.mean())


# --------------------------------------------------------------------------- shape of the world


def test_every_city_has_users_and_places(world):
    for name, column in (("users", "home_city_id"), ("places", "city_id")):
        counts = np.bincount(world[name].column(column).to_numpy(), minlength=N_CITIES)
        assert len(counts) == N_CITIES and (counts >= 10).all(), (name, counts)
    assert world["users"].num_rows == 800 and world["places"].num_rows == 800


def test_ids_are_global_and_unique_across_cities(world):
    for name, column in (("users", "user_id"), ("places", "place_id")):
        ids = world[name].column(column).to_numpy()
        assert len(np.unique(ids)) == len(ids) == 800


@pytest.mark.parametrize("city", CITIES)
def test_each_city_partition_passes_every_validator(world, city):
    t = city_tables(world, city)
    user_ids = t["users"].column("user_id").to_numpy()
    assert validation.validate_users(t["users"], city).empty
    assert validation.validate_places(t["places"], city).empty
    assert validation.validate_interactions(
        t["interactions"], user_ids, world["places"].column("place_id").to_numpy()
    ).empty
    assert validation.validate_user_user_edges(t["user_user_edges"], user_ids).empty
    assert validation.validate_friend_labels(t["friend_labels"], t["users"], t["interactions"]).empty


def test_every_interaction_belongs_to_a_user_of_some_city(world):
    per_city = sum(city_tables(world, c)["interactions"].num_rows for c in CITIES)
    assert per_city == world["interactions"].num_rows > 0


# --------------------------------------------------------------------------- determinism


def test_city_generation_is_deterministic_and_independent_of_other_cities(world_config, world):
    city = 5
    users = generate_users(world_config, city)
    assert users.equals(generate_users(world_config, city))
    assert users.equals(city_users(world, city))
    assert generate_places(world_config, city).equals(rows_where(world["places"], "city_id", city))


def test_city_interactions_and_social_tables_are_reproduced_standalone(world_config, world):
    city = 2
    expected = city_tables(world, city)
    users = generate_users(world_config, city)
    interactions = generate_interactions(world_config, city, users, world["places"])
    edges = generate_user_user_edges(world_config, users, interactions)
    labels = generate_friend_labels(world_config, city, users, interactions, edges)
    assert interactions.equals(expected["interactions"])
    assert edges.equals(expected["user_user_edges"])
    assert labels.equals(expected["friend_labels"])


def test_another_seed_gives_another_world(world_config, world):
    other = contracts.list_matrix(generate_users(world_config.replace(seed=7), 0), "fine_pref")[:10]
    mine = contracts.list_matrix(city_users(world, 0), "fine_pref")[:10]
    assert not np.allclose(other, mine)


# --------------------------------------------------------------------------- users and places


def test_fine_tastes_follow_category_tastes(world):
    users = world["users"]
    category_pref = contracts.list_matrix(users, "cat_pref")
    fine_mass_per_category = contracts.list_matrix(users, "fine_pref") @ np.eye(C_COARSE)[list(FINE_TAG_CATEGORY)]
    # Unrelated tastes would give a correlation near 0.
    assert np.corrcoef(category_pref.ravel(), fine_mass_per_category.ravel())[0, 1] > 0.4


def test_users_frequent_their_home_neighbourhood(world):
    users = world["users"]
    area = contracts.map_matrix(users, "area_freqs", 15)
    home = users.column("home_neighborhood_id").to_numpy()
    assert (area[np.arange(len(home)), home] > 0).all()


def test_place_tags_belong_to_the_place_categories(world):
    places = world["places"]
    tags = contracts.list_matrix(places, "fine_tag_vector")
    categories = places.column("category_ids").to_pylist()
    for row in range(places.num_rows):
        tag_categories = {FINE_TAG_CATEGORY[t] for t in np.flatnonzero(tags[row])}
        assert tag_categories <= set(categories[row]), row
    one_hot = contracts.list_matrix(places, "category_one_hot")
    assert ((one_hot > 0).sum(axis=1) == [len(c) for c in categories]).all()
    assert one_hot.shape[1] == C_COARSE


def test_expensive_cities_have_pricier_places(world):
    places = world["places"]
    city = places.column("city_id").to_numpy()
    price = places.column("price_band").to_numpy()
    expensive = np.isin(city, list(EXPENSIVE_CITIES))
    assert price[expensive].mean() > price[~expensive].mean() + 1


# --------------------------------------------------------------------------- interactions


def test_ratings_follow_the_contract_formula(world):
    it = world["interactions"]

    def col(name):
        return it.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    expected = np.minimum(
        1
        + np.minimum(col("dwell_time") / 150, 2)
        + np.minimum(0.5 * col("num_likes"), 1.5)
        + np.minimum(col("num_saves"), 2)
        + np.minimum(0.5 * col("num_shares"), 1)
        + 2 * col("attended"),
        5,
    )
    np.testing.assert_allclose(col("implicit_rating"), expected, atol=1e-4)
    assert len(np.unique(np.round(col("implicit_rating"), 1))) > 10


def test_time_buckets_match_the_timestamp(world):
    ts = world["interactions"].column("timestamp").to_pandas().dt.tz_convert("UTC")
    hour, weekday = ts.dt.hour.to_numpy(), ts.dt.day_of_week.to_numpy()
    expected_tod = np.where(hour < 6, 3, np.where(hour < 12, 0, np.where(hour < 18, 1, 2)))
    np.testing.assert_array_equal(world["interactions"].column("time_of_day_bucket").to_numpy(), expected_tod)
    np.testing.assert_array_equal(world["interactions"].column("day_of_week_bucket").to_numpy(), weekday >= 5)
    assert set(np.unique(expected_tod)) == {0, 1, 2, 3}


def test_some_interactions_are_travel_to_other_cities(world_config, world):
    place_city = pd.Series(
        world["places"].column("city_id").to_numpy(), index=world["places"].column("place_id").to_numpy()
    )
    user_city = pd.Series(
        world["users"].column("home_city_id").to_numpy(), index=world["users"].column("user_id").to_numpy()
    )
    it = world["interactions"]
    travel = (
        place_city[it.column("place_id").to_numpy()].to_numpy() != user_city[it.column("user_id").to_numpy()].to_numpy()
    )
    assert 0.5 * world_config.travel_share < travel.mean() < 2 * world_config.travel_share
    travelling_users = np.unique(it.column("user_id").to_numpy()[travel])
    travelling_from = np.unique(user_city[travelling_users].to_numpy())
    assert len(travelling_from) == N_CITIES  # every city's users travel


def test_no_travel_share_means_no_travel(world_config, world):
    config = world_config.replace(travel_share=0.0)
    users = generate_users(config, 4)
    interactions = generate_interactions(config, 4, users, world["places"])
    visited = rows_where(world["places"], "place_id", interactions.column("place_id"))
    assert set(visited.column("city_id").to_pylist()) == {4}


@pytest.mark.parametrize("city", CITIES)
def test_true_preference_ranks_visited_places_far_above_random_places(world_config, world, city):
    t = city_tables(world, city)
    percentile, share_above = visited_score_percentile(world_config, t["users"], world["places"], t["interactions"])
    assert percentile > 0.8  # random visits would sit at 0.5
    assert share_above > 0.95


def test_hot_temperature_destroys_the_structure(world_config, world):
    """Control for the test above: with near-uniform visits the oracle no longer predicts them."""
    config = world_config.replace(preference=PreferenceWeights(temperature=10.0))
    users = generate_users(config, 2)
    interactions = generate_interactions(config, 2, users, world["places"])
    percentile, _ = visited_score_percentile(config, users, world["places"], interactions)
    assert 0.4 < percentile < 0.6


# --------------------------------------------------------------------------- social edges and labels


def test_social_edges_are_ordered_same_city_pairs(world):
    edges = world["user_user_edges"]
    u, v = edges.column("user_u").to_numpy(), edges.column("user_v").to_numpy()
    assert (u < v).all() and len(edges) > 0
    city = pd.Series(
        world["users"].column("home_city_id").to_numpy(), index=world["users"].column("user_id").to_numpy()
    )
    assert (city[u].to_numpy() == city[v].to_numpy()).all()


def test_interest_overlap_is_the_cosine_of_fine_preferences(world):
    edges, users = world["user_user_edges"], world["users"]
    unit, index = unit_fine_pref(users), pd.Index(users.column("user_id").to_numpy())
    a = index.get_indexer(edges.column("user_u").to_numpy())
    b = index.get_indexer(edges.column("user_v").to_numpy())
    np.testing.assert_allclose(
        edges.column("interest_overlap_score").to_numpy(), (unit[a] * unit[b]).sum(axis=1), atol=1e-5
    )


@pytest.mark.parametrize("city", [0, 6])
def test_social_edges_are_exactly_each_users_top_k_similar_neighbours(world_config, world, city):
    t = city_tables(world, city)
    ids = t["users"].column("user_id").to_numpy()
    unit = unit_fine_pref(t["users"])
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    k = min(world_config.social_top_k, len(ids) - 1)
    kth_best = -np.sort(-sims, axis=1)[:, k - 1]
    expected = set()
    for i in range(len(ids)):
        for j in np.flatnonzero((sims[i] >= kth_best[i] - 1e-6) & (sims[i] >= world_config.social_min_overlap + 1e-6)):
            expected.add((min(ids[i], ids[j]), max(ids[i], ids[j])))
    edges = t["user_user_edges"]
    actual = set(zip(edges.column("user_u").to_pylist(), edges.column("user_v").to_pylist(), strict=True))
    assert expected <= actual
    unexplained = actual - expected
    # Anything else may only differ by float ties right at the k-th score or the threshold.
    assert len(unexplained) <= 0.01 * len(actual)


def test_co_attendance_counts_days_both_attended_the_same_place(world):
    edges = world["user_user_edges"]
    counts = co_attendance(world["interactions"])
    expected = co_attendance_of(counts, edges.column("user_u").to_numpy(), edges.column("user_v").to_numpy())
    np.testing.assert_array_equal(edges.column("co_attendance_count").to_numpy(), expected)
    assert (expected > 0).mean() > 0.1  # joint outings make co-attendance common among similar users


def test_same_neighbourhood_frequency_reflects_shared_areas(world):
    edges, users = world["user_user_edges"], world["users"]
    area = contracts.map_matrix(users, "area_freqs", 15) > 0
    index = pd.Index(users.column("user_id").to_numpy())
    a = index.get_indexer(edges.column("user_u").to_numpy())
    b = index.get_indexer(edges.column("user_v").to_numpy())
    shared = (area[a] & area[b]).any(axis=1)
    freq = edges.column("same_neighborhood_freq").to_numpy()
    assert ((freq >= 0) & (freq <= 1)).all()
    assert (freq[~shared] == 0).all()
    assert (freq[shared] > 0).all()
    assert shared.any() and (~shared).any()


def test_friend_labels_follow_the_rules(world):
    labels, users = world["friend_labels"], world["users"]
    u, v = labels.column("user_u").to_numpy(), labels.column("user_v").to_numpy()
    unit, index = unit_fine_pref(users), pd.Index(users.column("user_id").to_numpy())
    overlap = (unit[index.get_indexer(u)] * unit[index.get_indexer(v)]).sum(axis=1)
    co = co_attendance_of(co_attendance(world["interactions"]), u, v)
    compat = labels.column("label_compat").to_numpy()
    attend = labels.column("label_attend").to_numpy()
    positive, negative = compat == 1, compat == 0
    assert (positive | negative).all()
    assert ((overlap[positive] >= 0.6 - 1e-5) | (co[positive] >= 2)).all()
    assert ((overlap[negative] < 0.3 + 1e-5) & (co[negative] == 0)).all()
    assert (attend[negative] == 0).all()
    assert set(np.unique(attend[positive])) == {0, 1}


def test_friend_labels_have_both_classes_and_unique_ordered_pairs(world):
    labels = world["friend_labels"].to_pandas()
    assert (labels["user_u"] < labels["user_v"]).all()
    assert not labels.duplicated(["user_u", "user_v"]).any()
    counts = labels["label_compat"].value_counts()
    assert counts.get(0, 0) > 100 and counts.get(1, 0) > 100


# --------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(n_users=5), "n_users"),
        (dict(n_places=0), "n_places"),
        (dict(n_cities=9), "n_cities"),
        (dict(weeks=0), "weeks"),
        (dict(start_date="2024-13-45"), "start_date"),
        (dict(preference=PreferenceWeights(temperature=0.0)), "temperature"),
        (dict(preference=PreferenceWeights(interest=-1.0)), "preference weights"),
        (dict(category_concentration=0.0), "category_concentration"),
        (dict(events_per_user_range=(10, 5)), "events_per_user_range"),
        (dict(events_per_view=0.0), "events_per_view"),
        (dict(travel_share=1.0), "travel_share"),
        (dict(social_top_k=0), "social_top_k"),
        (dict(social_min_overlap=1.5), "social_min_overlap"),
        (dict(joint_outing_rate=-1.0), "joint_outing_rate"),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(changes, field):
    config = WorldConfig(n_users=800, n_places=800).replace(**changes)
    with pytest.raises(ConfigError, match=field):
        config.validate()


def test_config_error_lists_every_problem():
    with pytest.raises(ConfigError) as excinfo:
        WorldConfig(n_users=1, weeks=0, travel_share=-0.5).validate()
    message = str(excinfo.value)
    assert all(name in message for name in ("n_users", "weeks", "travel_share"))


def test_valid_config_passes_validation(world_config):
    assert world_config.validate() is world_config


def test_generate_world_refuses_a_bad_config():
    with pytest.raises(ConfigError, match="n_places"):
        generate_world(WorldConfig(n_users=800, n_places=3))


def test_negative_seed_raises_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="seed"):
        WorldConfig(n_users=800, n_places=800, seed=-1).validate()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"start_date": None}, "start_date"),
        ({"start_date": "not-a-date"}, "start_date"),
        ({"n_users": 800.5}, "n_users"),
        ({"social_top_k": 2.5}, "social_top_k"),
        ({"events_per_user_range": (5,)}, "events_per_user_range"),
    ],
)
def test_malformed_config_values_raise_config_error_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        WorldConfig(n_users=800, n_places=800).replace(**changes).validate()
