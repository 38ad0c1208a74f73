"""Any data in: each kind of world source through the whole asset graph and out over HTTP.

Every world here is data the project has not seen: LightGCN-format check-ins, listens plus
friendships (slices of the shared training files), an events file with cities and categories of
its own, a partial Parquet world with its own vocabulary (other cities, neighbourhoods, tags, price
bands and time slots) and that same world in a real PostgreSQL server: the README's examples.
Each is materialized with `materialize_all` (the code path of `recsys materialize --source ...`),
served by the Litestar app, and asked for places and people.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, build_sensor_context, materialize
from litestar.testing import TestClient

from recsys_assets import stages
from recsys_assets.definitions import build_definitions
from recsys_assets.defs import automation
from recsys_assets.io_manager import latest_materialization, load_latest, load_latest_table
from recsys_assets.materialize import materialize_all
from recsys_assets.resources import InboxSettings, TrainingSettings, WorldSource, world_source_from_spec
from recsys_core import inbox
from recsys_core.manifest import ServingManifest, live_manifest_path
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.vocabulary import Vocabulary
from serving.app import create_app

DATA = Path(__file__).parent / "data"
# Enough to run every stage and clear the quality gate on these small worlds, not to be good.
TRAINING = TrainingSettings(
    max_steps=40, eval_every=20, batch_size=2048, time_budget_s=300.0, baseline_budget_s=1.0, d_model=32
)

PARTIAL_WORLD = DATA / "partial_world"  # tests/data/make_samples.py writes it and outings.csv
OWN_VOCABULARY = Vocabulary.load(PARTIAL_WORLD)  # other cities, neighbourhoods, tags, slots and price bands


def _postgres_dsn(dsn: str) -> str:
    """The partial Parquet world, seeded into the server's tables as they are."""
    from recsys_core.sources.postgres import write_world_to_postgres

    tables = {p.stem: pq.read_table(p) for p in PARTIAL_WORLD.glob("*.parquet")}
    write_world_to_postgres(dsn, tables, OWN_VOCABULARY)
    return dsn


SOURCES = ("lightgcn", "lastfm", "events", "parquet", "postgres")


class Served:
    def __init__(self, root: Path, source: WorldSource, instance: DagsterInstance, defs):
        self.root, self.source, self.instance, self.defs = root, source, instance, defs
        self.manifest = live_manifest_path(root / "artifacts")
        self.artifacts = ServingArtifacts.load(ServingManifest.read(self.manifest))

    def user_with_history(self) -> int:
        counts = np.diff(self.artifacts.seen.indptr)
        return int(self.artifacts.user_ids[int(np.argmax(counts))])


@pytest.fixture(scope="module", params=SOURCES)
def served(request, tmp_path_factory) -> Served:
    kind = request.param
    root = tmp_path_factory.mktemp(f"world-{kind}")
    location = {
        "lightgcn": lambda: str(DATA / "gowalla_slice"),
        "lastfm": lambda: str(DATA / "lastfm_slice"),
        "events": lambda: str(DATA / "outings.csv"),
        "parquet": lambda: str(PARTIAL_WORLD),
        "postgres": lambda: _postgres_dsn(request.getfixturevalue("postgres_dsn")),
    }[kind]()
    source = world_source_from_spec(f"{kind}:{location}", 0, 0, 42)
    defs = build_definitions(str(root / "artifacts"), source, TRAINING, inbox_directory=str(root / "inbox"))
    instance = DagsterInstance.ephemeral()
    materialize_all(defs, instance)
    return Served(root, source, instance, defs)


@pytest.fixture(scope="module")
def client(served):
    with TestClient(app=create_app(served.manifest, poll_interval_s=3600)) as c:
        yield c


def test_places_are_served_with_reasons(served, client):
    user = served.user_with_history()
    response = client.get("/recommend/places", params={"user_id": user, "top_k": 5})
    assert response.status_code == 200, response.text
    recommendations = response.json()["recommendations"]
    assert len(recommendations) == 5
    art = served.artifacts
    index = art.user_index(user)
    home = art.user_city[index]
    seen = set(art.place_ids[art.seen.indices[art.seen.indptr[index] : art.seen.indptr[index + 1]]].tolist())
    for rec in recommendations:
        assert rec["place_id"] in set(art.place_ids[art.place_city == home].tolist())  # the user's city
        assert rec["place_id"] not in seen  # nothing they have been to
        assert rec["explanations"] and all(isinstance(r, str) and r for r in rec["explanations"])


def test_people_are_served(served, client):
    user = served.user_with_history()
    response = client.get("/recommend/people", params={"user_id": user, "top_k": 3})
    assert response.status_code == 200, response.text
    people = response.json()["recommendations"]
    assert people and all(p["user_id"] != user and p["explanations"] for p in people)


def test_an_unknown_user_is_404_naming_it(client):
    response = client.get("/recommend/places", params={"user_id": 987_654_321})
    assert response.status_code == 404 and "987654321" in response.text


def test_the_served_vocabulary_is_the_sources(served):
    vocabulary = served.artifacts.vocabulary
    assert vocabulary == served.source.vocabulary()
    if served.source.kind in ("parquet", "postgres"):
        assert vocabulary == OWN_VOCABULARY
        assert served.artifacts.model.config.featureless is False  # places carry categories and tags
    elif served.source.kind == "events":
        assert vocabulary.cities == ("Gotham", "Metropolis") and vocabulary.categories == ("arcade", "diner", "gallery")
    else:
        assert served.artifacts.model.config.featureless  # interaction-only data: id embeddings


@pytest.mark.parametrize("served", ["parquet", "postgres"], indirect=True)
def test_a_world_with_its_own_tags_is_explained_in_them(served, client):
    said = " ".join(
        reason
        for user in served.artifacts.user_ids[:40]
        for rec in client.get("/recommend/places", params={"user_id": int(user)}).json()["recommendations"]
        for reason in rec["explanations"]
    )
    assert any(tag.replace("_", " ") in said for tag in OWN_VOCABULARY.tags)  # tastes derived from history
    assert not any(name in said for name in ("jazz", "bouldering", "London"))  # nothing of the built-in world


@pytest.mark.parametrize("served", ["lastfm"], indirect=True)
def test_friendships_are_declared_and_excluded_from_people(served, client):
    art = served.artifacts
    assert art.manifest.social_edges_are_friendships
    user = int(np.argmax(np.diff(art.friends.indptr)))
    friends = set(art.user_ids[art.friends.indices[art.friends.indptr[user] : art.friends.indptr[user + 1]]].tolist())
    people = client.get("/recommend/people", params={"user_id": int(art.user_ids[user])}).json()["recommendations"]
    assert friends and not friends & {p["user_id"] for p in people}


def test_the_inbox_takes_files_shaped_like_the_sources_events(served):
    """A new file needs the columns the world's events came with, no more: a LightGCN world's
    events are bare (user, place) pairs; a file without a column the world gave is refused."""
    city = served.artifacts.vocabulary.city_slugs[0]
    existing = load_latest_table(served.instance, AssetKey("interactions"), [city])
    given = inbox.given_columns(existing)
    folder = served.root / "inbox" / city
    folder.mkdir(parents=True, exist_ok=True)
    sample = existing.slice(0, 4).select(sorted(given))
    pq.write_table(sample, folder / "new.parquet")
    if "timestamp" in given:
        pq.write_table(sample.drop_columns(["timestamp"]), folder / "undated.parquet")
    context = build_sensor_context(
        instance=served.instance, resources={"inbox_settings": InboxSettings(directory=str(served.root / "inbox"))}
    )
    requests = automation.interactions_inbox(context)
    assert isinstance(requests, list) and len(requests) == 1 and isinstance(requests[0], RunRequest)
    rejected = list((served.root / "inbox" / inbox.REJECTED / city).glob("*.reason.txt"))
    assert ("timestamp" in given) == bool(rejected)
    if rejected:
        assert "missing column(s) timestamp" in rejected[0].read_text()
    result = materialize(
        [*served.defs.assets, *served.defs.asset_checks],
        selection=["interactions"],
        partition_key=city,
        instance=served.instance,
        resources=served.defs.resources,
        run_config=requests[0].run_config,
    )
    assert result.success
    assert load_latest_table(served.instance, AssetKey("interactions"), [city]).num_rows == existing.num_rows + 4


def test_a_refresh_retrain_continues_the_served_model_where_the_split_allows(served):
    """A retrain that new data started (the inbox sensor's, tagged refresh) warm-starts GraphRec from
    the served version and the two-tower from the last evaluation on data split by time; data split
    at random trains from scratch, and the metadata says which and why. The gate runs either way."""
    graph = load_latest(served.instance, AssetKey("hetero_graph"), [None])
    live = ServingManifest.read(served.manifest)
    result = materialize(
        [*served.defs.assets, *served.defs.asset_checks],
        selection=list(stages.RETRAIN_ASSETS),
        instance=served.instance,
        resources=served.defs.resources,
        tags={stages.RETRAIN_MODE_TAG: stages.REFRESH},
    )
    assert result.success
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert {"model_beats_baselines", "model_not_worse_than_served"} <= checks
    model = latest_materialization(served.instance, AssetKey("trained_model")).asset_materialization.metadata
    evaluation = latest_materialization(served.instance, AssetKey("model_evaluation")).asset_materialization.metadata
    trained = load_latest(served.instance, AssetKey("trained_model"), [None])
    if TRAINING.split_policy().resolved_mode(graph) == "time":
        assert model["warm_start"].value == f"from served version {live.version}"
        assert trained.history["step"].iloc[0] == 0 and trained.history["step"].max() <= TRAINING.refresh_steps
        assert evaluation["two_tower_warm_start"].value == "from the last evaluation's two_tower"
    else:
        assert model["warm_start"].value.startswith("not used: the held-out pairs are drawn at random")
        assert trained.history["step"].iloc[0] > 0 and trained.history["step"].max() == TRAINING.max_steps
        assert evaluation["two_tower_warm_start"].value.startswith("not used:")
