"""Serving a world whose vocabulary is not the built-in one: requests are parsed in its names,
explanations speak them, and the artifacts load it from `vocabulary.json` beside the model
(the built-in one when there is none), refusing one that does not fit the model."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient

from recsys_core.explain import Wishes, explain_person, explain_places, place_name
from recsys_core.features import FeatureLayouts
from recsys_core.manifest import ManifestError, ServingManifest
from recsys_core.recommend.artifacts import ServingArtifacts
from recsys_core.recommend.fast_head import FastPlaceHead
from recsys_core.recommend.limits import MAX_TIME_SLOT
from recsys_core.recommend.places import recommend_places
from recsys_core.recommend.queries import PlaceQuery, RequestError, category_ids, check_time_slot, tag_ids
from recsys_core.vocabulary import BUILTIN, NO_CATEGORY, VOCABULARY_FILE, Vocabulary
from serving.app import create_app
from serving.controllers import _vocabulary

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

# A small made-up world: other cities, neighbourhoods, categories, tags, vibes and time slots.
ISLANDS = Vocabulary(
    cities=("Atlantis", "El Dorado"),
    neighborhoods=(("Coral Reef", "Old Harbour"), ("Gold Quarter",)),
    categories=("games", "water"),
    tags=("chess", "Scuba Diving", "go", "k-pop"),
    tag_category=(0, 1, 0, NO_CATEGORY),
    vibes=("serene", "rowdy"),
    time_slots=("dawn", "dusk", "midnight"),
    slot_of_bucket=((0, 0), (1, 1), (1, 2), (2, 2)),
    price_bands=("cheap", "dear"),
)
LAYOUTS = FeatureLayouts.for_vocabulary(ISLANDS)
CHESS, SCUBA, GO, KPOP = range(4)
GAMES, WATER = range(2)


# --------------------------------------------------------------------------- the query parser


def test_names_and_ids_resolve_in_the_served_vocabulary():
    assert tag_ids("desired_tags", ["chess", " scuba diving ", "Scuba_Diving", 2], ISLANDS) == (CHESS, SCUBA, GO)
    assert tag_ids("activity_tags", ["k-pop", "3"], ISLANDS) == (KPOP,)
    assert category_ids("desired_categories", ["Water", 0], ISLANDS) == (GAMES, WATER)
    assert tag_ids("desired_tags", None, ISLANDS) == ()


@pytest.mark.parametrize(
    "parse, field, value",
    [
        (tag_ids, "desired_tags", "jazz"),
        (tag_ids, "activity_tags", "live_music"),
        (tag_ids, "desired_tags", 4),  # a built-in tag id, past this vocabulary's four
        (category_ids, "desired_categories", "dining"),
        (category_ids, "desired_categories", "2"),
    ],
)
def test_built_in_names_and_ids_are_400_naming_the_field(parse, field, value):
    assert parse(field, [value], BUILTIN)  # known to the built-in vocabulary ...
    with pytest.raises(RequestError) as raised:
        parse(field, [value], ISLANDS)  # ... but not to the one being served
    assert raised.value.status == 400 and raised.value.field == field
    assert f"unknown id(s) or name(s) {[value]}" in raised.value.message
    assert "valid ids are 0.." in raised.value.message


def test_time_slots_are_the_served_vocabularys():
    check_time_slot(2, ISLANDS)
    check_time_slot(None, ISLANDS)
    check_time_slot(5, BUILTIN)
    with pytest.raises(RequestError) as raised:
        check_time_slot(3, ISLANDS)
    assert raised.value.status == 400 and raised.value.field == "time_slot"
    assert raised.value.message == "unknown time slot 3; valid: 0=dawn, 1=dusk, 2=midnight"
    with pytest.raises(RequestError) as built_in:
        check_time_slot(9, BUILTIN)
    assert built_in.value.message == (
        "unknown time slot 9; valid: 0=morning, 1=afternoon, 2=evening, 3=night, 4=weekend_day, 5=weekend_night"
    )


def test_the_http_schema_bounds_time_slots_without_naming_any_vocabulary():
    schema = create_app(Path("/nonexistent/manifest.json")).openapi_schema.to_schema()
    parameters = schema["paths"]["/recommend/places"]["get"]["parameters"]
    query = next(p for p in parameters if p["name"] == "time_slot")["schema"]
    body = schema["components"]["schemas"]["PlaceRequest"]["properties"]["time_slot"]
    for slot in (query, body):
        assert (slot["minimum"], slot["maximum"]) == (0, MAX_TIME_SLOT) == (0, 63)
        assert "morning" not in str(slot)


def test_a_name_of_the_served_vocabulary_passes_the_alphabet_check():
    assert _vocabulary("desired_tags", ["k-pop"], ISLANDS.tags) == ["k-pop"]
    with pytest.raises(RequestError) as raised:
        _vocabulary("desired_tags", ["k-pop"], BUILTIN.tags)
    assert raised.value.field == "desired_tags" and "ASCII" in raised.value.message
    with pytest.raises(RequestError, match="e.g. 'chess'"):
        _vocabulary("desired_tags", ["chess;DROP"], ISLANDS.tags)


# --------------------------------------------------------------------------- explanations


def _user(city: int, fine: dict[int, float], vibes: dict[int, float], area: dict[int, float], cats: dict[int, float]):
    x = np.zeros(LAYOUTS.user.width, np.float32)
    x[LAYOUTS.user["city_id"]] = city
    for block, values in (("fine_pref", fine), ("vibe_pref", vibes), ("area_freqs", area), ("cat_pref", cats)):
        for i, v in values.items():
            x[LAYOUTS.user[block].start + i] = v
    return x


def _place(tags: list[int], city: int, nbhd: int, cats: tuple[int, ...] = (), slot: int = 1):
    x = np.zeros(LAYOUTS.place.width, np.float32)
    x[LAYOUTS.place["city_id"]] = city
    x[LAYOUTS.place["neighborhood_id"]] = nbhd
    x[LAYOUTS.place["typical_time_slot"]] = slot
    for t in tags:
        x[LAYOUTS.place["fine_tag_vector"].start + t] = 1.0 / len(tags)
    for c in cats:
        x[LAYOUTS.place["category_one_hot"].start + c] = 1.0
    return x


def test_place_explanations_and_names_use_the_vocabularys_names():
    user = _user(0, {CHESS: 0.4, SCUBA: 0.001}, {}, {1: 0.7}, {GAMES: 0.6})
    place = _place([CHESS, GO], city=0, nbhd=1, cats=(GAMES,))
    assert place_name(place, vocabulary=ISLANDS) in ("Chess & go · Old Harbour", "Go & chess · Old Harbour")
    reasons = explain_places(user, place[None, :], vocabulary=ISLANDS, layouts=LAYOUTS)[0]
    assert reasons == [
        "Matches your interest in chess",
        "You enjoy games spots",
        "In Old Harbour, where you often go out",
    ]
    asked = explain_places(user, place[None, :], Wishes((GAMES,), (GO,), 1), vocabulary=ISLANDS)[0]
    assert asked == ["Has the go you asked for", "At its best in the dusk, when you want to go", asked[2]]


def test_a_neighbourhood_the_vocabulary_does_not_name_is_not_mentioned():
    # El Dorado has one neighbourhood; id 1 there has no name.
    user = _user(1, {CHESS: 0.4}, {}, {1: 0.7}, {})
    place = _place([CHESS], city=1, nbhd=1)
    assert place_name(place, vocabulary=ISLANDS) == "Chess"
    reasons = explain_places(user, place[None, :], vocabulary=ISLANDS)[0]
    assert reasons == ["Matches your interest in chess"]
    named = explain_places(user, _place([CHESS], city=1, nbhd=0)[None, :], vocabulary=ISLANDS)[0]
    assert named == ["Matches your interest in chess"]  # the user goes out in the unnamed one, not Gold Quarter


def test_person_explanations_use_the_vocabularys_names():
    a = _user(0, {SCUBA: 0.3, GO: 0.2}, {0: 0.2}, {0: 0.5}, {})
    b = _user(0, {SCUBA: 0.25, KPOP: 0.3}, {0: 0.3}, {0: 0.4}, {})
    assert explain_person(a, b, vocabulary=ISLANDS, layouts=LAYOUTS) == [
        "You both like Scuba Diving",
        "You're both serene",
        "You both go out in Coral Reef",
    ]
    target = _place([KPOP], city=0, nbhd=0)
    wishes = Wishes(tags=(KPOP,), target_place_name="K-pop · Coral Reef")
    assert explain_person(a, b, wishes, target, vocabulary=ISLANDS)[:2] == [
        "Into k-pop, like K-pop · Coral Reef",
        "Also into k-pop",
    ]


# --------------------------------------------------------------------------- the served artifacts


def _renamed(vocabulary: Vocabulary) -> Vocabulary:
    """The same sizes (so it fits the served model) under other names."""
    return dataclasses.replace(
        vocabulary,
        cities=tuple(f"Isle {c}" for c in vocabulary.cities),
        neighborhoods=tuple(tuple(f"{n} Reef" for n in names) for names in vocabulary.neighborhoods),
        categories=tuple(f"neo_{c}" for c in vocabulary.categories),
        tags=tuple(f"neo_{t}" for t in vocabulary.tags),
        vibes=tuple(f"neo_{v}" for v in vocabulary.vibes),
        time_slots=tuple(f"neo_{s}" for s in vocabulary.time_slots),
    )


NEO = _renamed(BUILTIN)


def _with_vocabulary(served_world, directory: Path, vocabulary: Vocabulary | None) -> Path:
    """A copy of the served manifest whose model directory holds `vocabulary` (None: no file)."""
    manifest = ServingManifest.read(served_world.manifest_path)
    model_dir = directory / "model"
    shutil.copytree(manifest.model.directory, model_dir)
    (model_dir / VOCABULARY_FILE).unlink(missing_ok=True)
    if vocabulary is not None:
        vocabulary.save(model_dir)
    moved = dataclasses.replace(manifest, model=dataclasses.replace(manifest.model, path=str(model_dir)))
    return moved.write(directory / "manifest.json")


@pytest.fixture(scope="module")
def neo_manifest(served_world, tmp_path_factory) -> Path:
    return _with_vocabulary(served_world, tmp_path_factory.mktemp("neo"), NEO)


@pytest.fixture(scope="module")
def neo_artifacts(neo_manifest) -> ServingArtifacts:
    return ServingArtifacts.load(ServingManifest.read(neo_manifest))


@pytest.fixture(scope="module")
def warm_user(serving_artifacts) -> int:
    art = serving_artifacts
    city = int(np.bincount(art.user_city).argmax())
    users = np.flatnonzero(art.user_city == city)
    return int(art.user_ids[next(u for u in users if art.seen[u].nnz)])


def test_artifacts_load_the_vocabulary_beside_the_model(neo_artifacts, serving_artifacts):
    assert neo_artifacts.vocabulary == NEO
    assert neo_artifacts.layouts == FeatureLayouts.for_vocabulary(NEO) == neo_artifacts.model.config.layouts
    assert serving_artifacts.vocabulary == BUILTIN  # the served world is the built-in one


def test_without_a_vocabulary_file_the_vocabulary_is_the_built_in_one(served_world, tmp_path):
    art = ServingArtifacts.load(ServingManifest.read(_with_vocabulary(served_world, tmp_path, None)))
    assert art.vocabulary == BUILTIN and art.layouts == FeatureLayouts.for_vocabulary(BUILTIN)


def test_a_vocabulary_that_does_not_fit_the_model_is_refused_naming_the_mismatch(served_world, tmp_path):
    smaller = dataclasses.replace(BUILTIN, tags=BUILTIN.tags[:50], tag_category=BUILTIN.tag_category[:50])
    with pytest.raises(ManifestError) as raised:
        ServingArtifacts.load(ServingManifest.read(_with_vocabulary(served_world, tmp_path, smaller)))
    message = str(raised.value)
    assert VOCABULARY_FILE in message
    assert "n_tags 100 (vocabulary: 50)" in message  # the model says 100 tags, the vocabulary 50
    assert "fine_tag_vector is 50 wide for the vocabulary, 100 for the model" in message


def test_an_unreadable_vocabulary_file_is_refused_naming_it(served_world, tmp_path):
    path = _with_vocabulary(served_world, tmp_path, None)
    (tmp_path / "model" / VOCABULARY_FILE).write_text('{"cities": ["Atlantis"], "colours": []}')
    with pytest.raises(ManifestError, match=r"vocabulary \(.*vocabulary\.json\) cannot be loaded.*colours"):
        ServingArtifacts.load(ServingManifest.read(path))


def test_the_fast_head_refuses_features_of_another_width(serving_artifacts):
    art = serving_artifacts
    with pytest.raises(ValueError, match="place features are"):
        FastPlaceHead(art.model, art.z_place, art.x_place_np[:, :-1])


def test_same_scores_under_other_names(neo_artifacts, serving_artifacts, warm_user):
    jazz = BUILTIN.tags.index("jazz")
    query = PlaceQuery(user_id=warm_user, time_slot=2, desired_tags=(jazz,), top_k=10)
    built_in, neo = recommend_places(serving_artifacts, query), recommend_places(neo_artifacts, query)
    assert [r.place_id for r in neo] == [r.place_id for r in built_in]
    assert np.allclose([r.score for r in neo], [r.score for r in built_in], rtol=0, atol=1e-6)
    assert all(r.name.endswith(" Reef") for r in neo)  # named after the served neighbourhoods
    reasons = [e for r in neo for e in r.explanations]
    assert any("neo jazz you asked for" in e for e in reasons)
    assert all(e.lower().count("jazz") == e.lower().count("neo jazz") for e in reasons)


@pytest.fixture(scope="module")
def neo_client(neo_manifest):
    with TestClient(app=create_app(neo_manifest, poll_interval_s=3600)) as c:
        yield c


def test_the_service_parses_and_explains_in_the_served_vocabulary(neo_client, neo_artifacts, warm_user):
    rejected = neo_client.get("/recommend/places", params={"user_id": warm_user, "desired_tags": "jazz"})
    assert rejected.status_code == 400 and rejected.json()["field"] == "desired_tags"
    posted = neo_client.post("/recommend/people", json={"user_id": warm_user, "activity_tags": ["techno"]})
    assert posted.status_code == 400 and posted.json()["field"] == "activity_tags"
    category = neo_client.get("/recommend/places", params={"user_id": warm_user, "desired_categories": "dining"})
    assert category.status_code == 400 and category.json()["field"] == "desired_categories"
    slot = neo_client.get("/recommend/places", params={"user_id": warm_user, "time_slot": 6})
    assert slot.status_code == 400 and slot.json()["field"] == "time_slot"
    assert "valid: 0=neo_morning, 1=neo_afternoon" in slot.json()["detail"]
    both = neo_client.get("/recommend/places", params={"user_id": warm_user, "time_slot": 6, "desired_tags": "jazz"})
    assert both.status_code == 400 and both.json()["field"] == "time_slot"  # checked first, as the schema did

    places = neo_client.get(
        "/recommend/places",
        params={"user_id": warm_user, "desired_tags": "Neo Jazz", "desired_categories": "neo_dining", "top_k": 20},
    )
    assert places.status_code == 200, places.text
    recs = places.json()["recommendations"]
    assert all(r["name"].endswith(" Reef") for r in recs)
    assert any("neo jazz you asked for" in e for r in recs for e in r["explanations"])
    people = neo_client.get("/recommend/people", params={"user_id": warm_user, "top_k": 20})
    assert people.status_code == 200, people.text
    reasons = [e for r in people.json()["recommendations"] for e in r["explanations"]]
    shared = [e for e in reasons if e.startswith(("You both like ", "You're both ", "You both go out in "))]
    assert shared and all("neo " in e or e.endswith(" Reef") for e in shared)
