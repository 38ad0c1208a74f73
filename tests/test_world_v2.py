"""World v2: behaviour follows signal that no profile column holds, and the time split sees it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_core.evaluation import metrics
from recsys_core.evaluation.protocol import NEW_PLACES
from recsys_core.evaluation.split import MICROS_PER_DAY, SplitPolicy, split_by_time
from recsys_core.graph import INTERACTS, build_from_world
from recsys_core.synthetic.config import ConfigError, Realism, WorldConfig
from recsys_core.synthetic.hidden import PERIOD_DAYS, TruePreference, friendships, late_join_day
from recsys_core.synthetic.interactions import generate_interactions
from recsys_core.synthetic.places import generate_places
from recsys_core.synthetic.social_graph import generate_user_user_edges
from recsys_core.synthetic.users import generate_users
from recsys_core.synthetic.world import generate_world

CONFIG = WorldConfig(n_users=1600, n_places=1200, n_cities=2, seed=7)


@pytest.fixture(scope="module")
def v2():
    return generate_world(CONFIG)


@pytest.fixture(scope="module")
def truth(v2):
    return TruePreference(CONFIG, v2["users"], v2["places"])


def _days(interactions: pa.Table) -> np.ndarray:
    start = np.datetime64(CONFIG.start_date, "D")
    start -= (start.astype(np.int64) + 3) % 7  # the generator's Monday
    micros = interactions.column("timestamp").cast(pa.int64()).to_numpy()
    out: np.ndarray = micros // MICROS_PER_DAY - start.astype(np.int64)
    return out


def _rows(table: pa.Table, column: str, ids: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.searchsorted(table.column(column).to_numpy(), ids)
    return out


def test_hidden_tastes_explain_the_configured_share_of_preference(v2, truth):
    users = np.flatnonzero(truth.tastes.city == 0)
    places = np.flatnonzero(truth.traits.city == 0)
    observed = truth.observed(users, places)
    hidden = truth.scale[users, None] * truth.hidden(users, places, 40.0)
    share = hidden.var() / (hidden.var() + observed.var())
    assert share == pytest.approx(CONFIG.realism.hidden_share, abs=0.08)
    # No profile column holds it: the hidden part is uncorrelated with the observed one.
    assert abs(np.corrcoef(observed.ravel(), hidden.ravel())[0, 1]) < 0.1


def test_visits_follow_the_hidden_part_too(v2, truth):
    """Visited places score higher on the hidden part than random places of the same city do."""
    events = v2["interactions"]
    u = _rows(v2["users"], "user_id", events.column("user_id").to_numpy())
    p = _rows(v2["places"], "place_id", events.column("place_id").to_numpy())
    rng = np.random.default_rng(0)
    sample = rng.choice(len(u), 3000, replace=False)
    visited = np.array([truth.hidden(u[[i]], p[[i]], 40.0)[0, 0] for i in sample])
    same_city = [np.flatnonzero(truth.traits.city == truth.traits.city[p[i]]) for i in sample]
    random = np.array(
        [truth.hidden(u[[i]], rng.choice(c, 1), 40.0)[0, 0] for i, c in zip(sample, same_city, strict=True)]
    )
    assert visited.mean() > random.mean() + 0.3


def test_friends_share_hidden_tastes_and_go_out_together(v2, truth):
    users = v2["users"].filter(pc.equal(v2["users"].column("home_city_id"), 0))
    a, b = friendships(CONFIG, users)
    assert len(a) / users.num_rows == pytest.approx(CONFIG.realism.friends_per_user / 2, rel=0.25)
    rows = np.flatnonzero(truth.tastes.city == 0)
    taste = truth.start[rows] / np.linalg.norm(truth.start[rows], axis=1, keepdims=True)
    friends = (taste[a] * taste[b]).sum(axis=1).mean()
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, len(rows), (2, 5000))
    strangers = (taste[x] * taste[y]).sum(axis=1).mean()
    assert friends > strangers + 0.3  # homophily: in forming ties and in tastes spreading along them
    # Social edges are the friendships, and a good share of them went out together.
    edges = v2["user_user_edges"].filter(pc.is_in(v2["user_user_edges"].column("user_u"), users["user_id"]))
    assert edges.num_rows == len(a)
    assert (edges.column("co_attendance_count").to_numpy() > 0).mean() > 0.2
    assert CONFIG.edges_are_friendships


def test_activity_is_heavy_tailed(v2):
    counts = np.bincount(
        _rows(v2["users"], "user_id", v2["interactions"].column("user_id").to_numpy()), minlength=v2["users"].num_rows
    )
    assert counts.min() >= 1
    assert ((counts >= 1) & (counts <= 10)).mean() > 0.4
    assert counts.max() >= 100


def test_late_joiners_and_new_places_have_no_past(v2, truth):
    events = v2["interactions"]
    day = _days(events)
    u = _rows(v2["users"], "user_id", events.column("user_id").to_numpy())
    p = _rows(v2["places"], "place_id", events.column("place_id").to_numpy())
    late = truth.join_day > 0
    assert late.mean() == pytest.approx(CONFIG.realism.late_join_share, abs=0.03)
    assert (day >= truth.join_day[u]).all()
    assert day[late[u]].min() >= late_join_day(CONFIG)
    opening = truth.appeal.opens_day
    assert ((opening > 0).mean()) == pytest.approx(CONFIG.realism.new_place_share, abs=0.03)
    assert (day >= opening[p]).all()
    assert np.isin(np.flatnonzero(opening > 0), p).mean() > 0.5  # new places do get visitors once open


def test_tastes_drift(v2, truth):
    rows = np.arange(len(truth.start))
    begin, end = truth.tastes_at(rows, 0.0), truth.tastes_at(rows, CONFIG.weeks * 7)
    turned = np.cos(CONFIG.realism.drift * np.pi / 2)
    assert np.corrcoef(begin.ravel(), end.ravel())[0, 1] == pytest.approx(turned, abs=0.05)
    # The last weeks' visits fit the tastes of the end better than those of the start.
    events = v2["interactions"]
    day = _days(events)
    late = np.flatnonzero(day >= (CONFIG.weeks - 2) * PERIOD_DAYS)
    u = _rows(v2["users"], "user_id", events.column("user_id").to_numpy())[late]
    p = _rows(v2["places"], "place_id", events.column("place_id").to_numpy())[late]
    vectors = truth.appeal.vector[p]
    assert (truth.tastes_at(u, CONFIG.weeks * 7) * vectors).sum(1).mean() > (truth.tastes_at(u, 0.0) * vectors).sum(
        1
    ).mean()


def test_v2_is_deterministic_and_each_city_reproduces_standalone(v2):
    places = pa.concat_tables([generate_places(CONFIG, c) for c in range(CONFIG.n_cities)])
    users = generate_users(CONFIG, 1)
    interactions = generate_interactions(CONFIG, 1, users, places)
    city_users = v2["users"].filter(pc.equal(v2["users"].column("home_city_id"), 1))
    ours = v2["interactions"].filter(pc.is_in(v2["interactions"].column("user_id"), city_users["user_id"]))
    assert interactions.equals(ours)
    edges = generate_user_user_edges(CONFIG, users, interactions)
    theirs = v2["user_user_edges"].filter(pc.is_in(v2["user_user_edges"].column("user_u"), city_users["user_id"]))
    assert edges.equals(theirs)


def test_v1_stays_a_setting():
    v1 = WorldConfig.v1(n_users=800, n_places=800)
    assert not v1.realism.enabled and v1.realism == Realism.off() and v1.events_per_user_range == (50, 500)
    assert not v1.edges_are_friendships
    assert WorldConfig.of_version("v1", n_users=800, n_places=800) == v1
    with pytest.raises(ConfigError, match="unknown world version"):
        WorldConfig.of_version("v3")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hidden_share": 1.0}, "realism.hidden_share"),
        ({"drift": 1.5}, "realism.drift"),
        ({"late_join_days": 200}, "realism.late_join_days"),
        ({"friends_per_user": -1.0}, "realism.friends_per_user"),
    ],
)
def test_bad_realism_is_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        WorldConfig(realism=Realism(**changes)).validate()


def test_the_time_split_holds_out_the_last_two_weeks(v2):
    bundle = build_from_world(v2)
    policy = SplitPolicy()
    assert policy.resolved_mode(bundle) == "time"
    split = policy.apply(bundle)
    store = bundle.data[INTERACTS]
    first = store.edge_first_time.numpy()
    end = first.max()
    window = 14 * MICROS_PER_DAY
    assert (first[split.test_edges] > end - window).all()
    assert (first[split.val_edges] <= end - window).all() and (first[split.val_edges] > end - 2 * window).all()
    assert (first[split.train_edges] <= end - 2 * window).all()
    users = store.edge_index[0].numpy()
    train_counts = np.bincount(users[split.train_edges], minlength=int(bundle.data["user"].num_nodes))
    tested = np.unique(users[split.test_edges])
    tiers = metrics.history_tiers(train_counts[tested])
    assert (tiers == "zero").sum() > 50  # late joiners: their whole history is in the test window
    # The random split stays an option, and data without dates falls back to it.
    assert SplitPolicy(mode="random").resolved_mode(bundle) == "random"
    assert len(split_by_time(bundle, 7.0).test_edges) < len(split.test_edges)


def test_evaluation_reports_zero_history_users_and_new_places(v2, truth):
    from recsys_core.evaluation import protocol

    bundle = build_from_world(v2)
    split = SplitPolicy().apply(bundle)
    user_city = v2["users"].sort_by("user_id").column("home_city_id").to_numpy()
    place_city = v2["places"].sort_by("place_id").column("city_id").to_numpy()
    held = protocol.PlaceTruth.from_split(bundle, split, "test", user_city, place_city)
    day = CONFIG.weeks * 7 - 7.0

    def oracle(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return truth.scores(users, places, day)

    def popularity(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return np.tile(held.place_popularity[places], (len(users), 1))

    table = protocol.evaluate_places({"oracle": oracle, "popularity": popularity}, held).set_index(["model", "tier"])
    assert {"all", "zero", "cold", "warm", "hot", NEW_PLACES} <= set(table.index.get_level_values("tier"))
    assert table.loc[("oracle", "zero"), "users"] > 50
    assert table.loc[("oracle", NEW_PLACES), "users"] > 0
    # The oracle knows new places and the tastes of users without history; popularity does not.
    assert table.loc[("oracle", "zero"), "recall@20"] > 2 * table.loc[("popularity", "zero"), "recall@20"]
    assert table.loc[("oracle", NEW_PLACES), "recall@20"] > table.loc[("popularity", NEW_PLACES), "recall@20"]
