"""The Litestar service over the served small world: every endpoint, every client error, the
context effect, cold start, and hot reload under concurrent requests."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recsys_core.features import PLACE_LAYOUT
from recsys_core.manifest import ServingManifest
from recsys_core.taxonomy import COARSE_CATEGORIES, FINE_TAGS
from serving.app import create_app

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def client(served_world):
    with TestClient(app=create_app(served_world.manifest_path, poll_interval_s=60)) as c:
        yield c


def _places(client, **params):
    response = client.get("/recommend/places", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --------------------------------------------------------------------------- endpoints


def test_batch_lines_are_what_the_service_answers(client, served_world, serving_artifacts):
    """`batch_recommendations` comes from the published manifest through the service's own code."""
    from dagster import AssetKey

    from recsys_assets.io_manager import load_latest_table

    table = load_latest_table(served_world.instance, AssetKey("batch_recommendations"), [None])
    art = serving_artifacts
    assert art.place_model is not None  # the pipeline serves the place model, not GraphRec alone
    assert table.column("user_id").to_pylist() == art.user_ids.tolist()
    rows = table.to_pylist()
    has_history = np.diff(art.seen.indptr) > 0
    rng = np.random.default_rng(7)
    sample = [*rng.choice(np.flatnonzero(has_history), 20, replace=False), *np.flatnonzero(~has_history)[:5]]
    for user in sample:
        line = rows[int(user)]
        got = _places(client, user_id=line["user_id"], top_k=20)["recommendations"]
        assert [r["place_id"] for r in got] == line["place_ids"], line["user_id"]
        assert [r["score"] for r in got] == pytest.approx(line["scores"], rel=1e-9, abs=1e-9)
        seen = set(art.place_ids[art.seen[int(user)].indices].tolist())
        assert not seen & set(line["place_ids"])
        cities = art.place_city[art.places_of(np.asarray(line["place_ids"], np.int64))]
        assert (cities == art.user_city[int(user)]).all()


def test_health_ready_version_and_openapi(client, served_world):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    manifest = ServingManifest.read(served_world.manifest_path)
    assert ready == {"ready": True, "version": manifest.version, "detail": None}
    version = client.get("/version").json()
    assert "version" in version, version
    assert version["version"] == manifest.version and version["model_version"].startswith("graphrec-")
    schema = client.get("/schema/openapi.json").json()
    assert {"/recommend/places", "/recommend/people", "/health", "/ready", "/version"} <= set(schema["paths"])


def test_place_recommendations_get_and_post_agree_and_are_well_formed(client, some_user, serving_artifacts):
    user_id, city = some_user
    got = _places(client, user_id=user_id, top_k=7)
    posted = client.post("/recommend/places", json={"user_id": user_id, "top_k": 7})
    assert posted.status_code == 200
    posted_body = posted.json()
    # two responses are two impressions: each has its own request id; the version that answered is named
    assert posted_body.pop("request_id") != got.pop("request_id")
    assert posted_body == got and got["variant"] == client.get("/version").json()["version"]
    recs = got["recommendations"]
    assert len(recs) == 7 and got["model_version"].startswith("graphrec-")
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    art = serving_artifacts
    user = art.user_index(user_id)
    seen = set(art.place_ids[art.seen[user].indices].tolist())
    for r in recs:
        place = art.place_index(r["place_id"])
        assert art.place_city[place] == city  # the user's home city by default
        assert r["place_id"] not in seen  # places the user already went to are not recommended
        assert 1 <= len(r["explanations"]) <= 3 and r["name"]


def test_people_recommendations_exclude_the_user_and_are_scored(client, some_user, serving_artifacts):
    user_id, city = some_user
    got = client.get("/recommend/people", params={"user_id": user_id, "top_k": 10}).json()
    posted = client.post("/recommend/people", json={"user_id": user_id, "top_k": 10}).json()
    assert got.pop("request_id") != posted.pop("request_id") and got == posted
    recs = got["recommendations"]
    assert len(recs) == 10 and user_id not in [r["user_id"] for r in recs]
    # The default world's social edges are friendships: without context the people model's odds rank.
    assert serving_artifacts.manifest.social_edges_are_friendships
    for r in recs:
        assert 0 <= r["compat_score"] <= 1 and 0 <= r["attend_prob"] <= 1
        assert r["combined_score"] == pytest.approx(r["compat_score"], rel=1e-5)
        assert serving_artifacts.user_city[serving_artifacts.user_index(r["user_id"])] == city
        assert 1 <= len(r["explanations"]) <= 3
    combined = [r["combined_score"] for r in recs]
    assert combined == sorted(combined, reverse=True)


# --------------------------------------------------------------------------- the request context changes the ranking


def test_desired_category_and_tags_reorder_places_towards_them(client, some_user, serving_artifacts):
    user_id, _ = some_user
    art = serving_artifacts
    plain = _places(client, user_id=user_id, top_k=20)["recommendations"]

    def cat_of(pid):
        return art.x_place_np[art.place_index(pid), PLACE_LAYOUT["category_one_hot"]] > 0

    def share(recs, c):
        return np.mean([cat_of(r["place_id"])[c] for r in recs])

    least = min(range(len(COARSE_CATEGORIES)), key=lambda c: share(plain, c))
    asked = _places(client, user_id=user_id, top_k=20, desired_categories=COARSE_CATEGORIES[least])["recommendations"]
    assert [r["place_id"] for r in asked] != [r["place_id"] for r in plain]
    assert share(asked, least) > share(plain, least)
    tag = FINE_TAGS.index("jazz")
    with_tag = _places(client, user_id=user_id, top_k=20, desired_tags="jazz")["recommendations"]

    def has_tag(recs):
        return np.mean(
            [
                art.x_place_np[art.place_index(r["place_id"]), PLACE_LAYOUT["fine_tag_vector"].start + tag] > 0
                for r in recs
            ]
        )

    assert has_tag(with_tag) > has_tag(plain)
    assert any("jazz you asked for" in e for r in with_tag for e in r["explanations"])


def test_time_slot_changes_the_ranking(client, some_user):
    user_id, _ = some_user
    orders = {
        tuple(r["place_id"] for r in _places(client, user_id=user_id, top_k=20, time_slot=s)["recommendations"])
        for s in range(6)
    }
    assert len(orders) > 1


def test_target_place_and_activity_tags_change_people_ranking(client, some_user, serving_artifacts):
    user_id, city = some_user
    art = serving_artifacts
    base = client.get("/recommend/people", params={"user_id": user_id, "top_k": 20}).json()["recommendations"]
    city_places = art.place_ids[art.place_city == city]
    target = int(city_places[len(city_places) // 2])
    with_place = client.get(
        "/recommend/people", params={"user_id": user_id, "top_k": 20, "target_place_id": target}
    ).json()["recommendations"]
    assert [r["user_id"] for r in with_place] != [r["user_id"] for r in base]
    assert all(w["attend_prob"] <= 1 for w in with_place)
    with_tags = client.get(
        "/recommend/people", params={"user_id": user_id, "top_k": 20, "activity_tags": "bouldering,yoga"}
    ).json()["recommendations"]
    assert [r["user_id"] for r in with_tags] != [r["user_id"] for r in base]


# --------------------------------------------------------------------------- cold start


def test_unknown_user_is_404_unless_the_request_carries_a_profile(client, some_user):
    _, city = some_user
    missing = client.get("/recommend/places", params={"user_id": 987654321})
    assert missing.status_code == 404 and "unknown user 987654321" in missing.json()["detail"]
    assert missing.json()["field"] == "user_id"
    no_city = client.get("/recommend/places", params={"user_id": 987654321, "desired_tags": "jazz"})
    assert no_city.status_code == 400 and no_city.json()["field"] == "city_id"
    profile = _places(client, user_id=987654321, city_id=city, desired_tags="jazz,techno", top_k=10)["recommendations"]
    assert len(profile) == 10
    assert any("jazz" in e or "techno" in e for e in profile[0]["explanations"])
    people = client.get("/recommend/people", params={"user_id": 987654321})
    assert people.status_code == 404


def test_known_user_without_history_gets_city_popularity_blended_with_profile(serving_artifacts, some_user):
    from recsys_core.recommend.places import recommend_places
    from recsys_core.recommend.queries import PlaceQuery

    art = serving_artifacts
    user_id, city = some_user
    user = art.user_index(user_id)
    seen = art.seen.tolil()
    seen[user, :] = 0
    cold = dataclasses.replace(art, seen=seen.tocsr())
    recs = recommend_places(cold, PlaceQuery(user_id=user_id, top_k=20))
    warm = recommend_places(art, PlaceQuery(user_id=user_id, top_k=20))
    city_pop = art.popularity[art.place_city == city]
    rec_pop = art.popularity[[art.place_index(r.place_id) for r in recs]]
    warm_pop = art.popularity[[art.place_index(r.place_id) for r in warm]]
    assert rec_pop.mean() > np.median(city_pop) and rec_pop.mean() > warm_pop.mean()
    assert any("Popular" in e for r in recs for e in r.explanations)


# --------------------------------------------------------------------------- client mistakes are 4xx naming the field


@pytest.mark.parametrize(
    "params, field",
    [
        ({"city_id": 99}, "city_id"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 101}, "top_k"),
        ({"time_slot": 9}, "time_slot"),
        ({"desired_tags": "jazz,not_a_tag"}, "desired_tags"),
        ({"desired_tags": "100"}, "desired_tags"),
        ({"desired_categories": "7"}, "desired_categories"),
        ({"user_id": "abc"}, "user_id"),
    ],
)
def test_bad_place_requests_are_4xx_with_the_field_named(client, some_user, params, field):
    user_id, _ = some_user
    response = client.get("/recommend/places", params={"user_id": user_id, **params})
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text


@pytest.mark.parametrize(
    "body, field",
    [
        ({"top_k": -1}, "top_k"),
        ({"user_id": "seven"}, "user_id"),
        ({"desired_tags": [1, 2, 500]}, "desired_tags"),
        ({"city_id": 42}, "city_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_json_bodies_are_4xx_with_the_field_named(client, some_user, body, field):
    user_id, _ = some_user
    response = client.post("/recommend/places", json={"user_id": user_id, **body})
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text


def test_malformed_json_and_unknown_target_place_are_client_errors(client, some_user):
    user_id, _ = some_user
    malformed = client.post(
        "/recommend/places", content=b'{"user_id": 1,', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    unknown_place = client.get("/recommend/people", params={"user_id": user_id, "target_place_id": 10**9})
    assert unknown_place.status_code == 404 and unknown_place.json()["field"] == "target_place_id"
    missing = client.get("/recommend/people")
    assert missing.status_code == 400 and "user_id" in missing.text


# --------------------------------------------------------------------------- hot reload


def _republish(source: Path, target: Path, version: str, model_version: str, **changes) -> None:
    manifest = dataclasses.replace(
        ServingManifest.read(source), version=version, model_version=model_version, **changes
    )
    manifest.write(target)


def test_hot_reload_swaps_manifests_under_concurrent_requests_without_errors(served_world, some_user, tmp_path):
    user_id, _ = some_user
    live = tmp_path / "manifest.json"
    _republish(served_world.manifest_path, live, "v1", "graphrec-v1")
    with TestClient(app=create_app(live, poll_interval_s=0.05)) as c:
        assert c.get("/version").json()["model_version"] == "graphrec-v1"
        failures, versions, stop = [], set(), threading.Event()

        def hammer():
            while not stop.is_set():
                r = c.get("/recommend/places", params={"user_id": user_id, "top_k": 10})
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    versions.add(r.json()["model_version"])

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.3)
        _republish(served_world.manifest_path, live, "v2", "graphrec-v2")
        deadline = time.time() + 30
        while c.get("/version").json()["model_version"] != "graphrec-v2" and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for w in workers:
            w.join()
        assert failures == []
        assert versions == {"graphrec-v1", "graphrec-v2"}
        info = c.get("/version").json()
        assert info["reloads"] == 1 and info["last_reload_error"] is None


def test_a_broken_manifest_is_reported_and_the_current_version_keeps_serving(served_world, some_user, tmp_path):
    user_id, _ = some_user
    live = tmp_path / "manifest.json"
    _republish(served_world.manifest_path, live, "v1", "graphrec-v1")
    source = ServingManifest.read(served_world.manifest_path)
    bad_graph = dataclasses.replace(source.graph, sha256="0" * 64)
    with TestClient(app=create_app(live, poll_interval_s=0.05)) as c:
        _republish(served_world.manifest_path, live, "v2", "graphrec-v2", graph=bad_graph)
        deadline = time.time() + 30
        while c.get("/version").json()["last_reload_error"] is None and time.time() < deadline:
            time.sleep(0.05)
        info = c.get("/version").json()
        assert info["model_version"] == "graphrec-v1" and "changed since it was checked" in info["last_reload_error"]
        assert c.get("/recommend/places", params={"user_id": user_id}).status_code == 200


def test_service_without_a_manifest_is_live_but_not_ready(tmp_path):
    with TestClient(app=create_app(tmp_path / "absent.json", poll_interval_s=60)) as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503 and "no serving manifest" in ready.text
        assert c.get("/recommend/places", params={"user_id": 1}).status_code == 503


# --------------------------------------------------------------------------- the real server


def _start_recsys_serve(manifest: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`recsys serve` on a free port, once it answers /ready (its output kept for the failure message)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "recsys_core.cli", "serve", "--port", str(port), "--manifest", str(manifest), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=1) as r:
                if r.status == 200:
                    return server, base
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    server.kill()
    pytest.fail(f"server never became ready: {server.communicate()[0].decode()[-2000:]}")


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:  # a new connection each time: any worker may answer
        return json.loads(r.read())


def test_recsys_serve_runs_uvicorn_and_answers_over_http(served_world, some_user):
    user_id, _ = some_user
    server, base = _start_recsys_serve(served_world.manifest_path)
    try:
        body = _get_json(f"{base}/recommend/places?user_id={user_id}&top_k=5")
        assert len(body["recommendations"]) == 5
        request = urllib.request.Request(
            f"{base}/recommend/people",
            data=json.dumps({"user_id": user_id, "top_k": 3}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert len(json.loads(r.read())["recommendations"]) == 3
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(f"{base}/recommend/places?user_id={user_id}&top_k=0", timeout=5)
        assert bad.value.code == 400
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_every_worker_serves_and_follows_a_new_manifest(served_world, some_user, tmp_path):
    """`--workers 2`: both processes answer, and after a publication both serve the new version."""
    import psutil

    user_id, _ = some_user
    live = tmp_path / "manifest.json"
    _republish(served_world.manifest_path, live, "v1", "graphrec-v1")
    server, base = _start_recsys_serve(live, "--workers", "2", "--poll-interval", "0.2")
    workers = psutil.Process(server.pid).children(recursive=True)
    try:
        asked = 0

        def versions_by_worker(want: str, timeout_s: float = 60.0) -> dict[int, str]:
            nonlocal asked
            seen: dict[int, str] = {}
            deadline = time.time() + timeout_s
            while time.time() < deadline and not (len(seen) == 2 and set(seen.values()) == {want}):
                info = _get_json(f"{base}/version")
                seen[info["worker_pid"]] = info["model_version"]
                assert _get_json(f"{base}/recommend/places?user_id={user_id}&top_k=3")["recommendations"]
                asked += 1
            return seen

        before = versions_by_worker("graphrec-v1")
        assert set(before.values()) == {"graphrec-v1"} and len(before) == 2
        assert set(before) <= {w.pid for w in workers}
        _republish(served_world.manifest_path, live, "v2", "graphrec-v2")
        after = versions_by_worker("graphrec-v2")
        assert after == {pid: "graphrec-v2" for pid in before}
        # Whichever worker answers a scrape, it reports both workers' requests, and each one's version.
        for _ in range(4):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
                families = list(text_string_to_metric_families(r.read().decode()))
            samples = [s for f in families for s in f.samples]
            answered = sum(
                s.value
                for s in samples
                if s.name == "recsys_requests_total" and s.labels["path"] == "/recommend/places"
            )
            assert answered == asked
            served = {s.labels["pid"] for s in samples if s.name == "recsys_served_version" and s.value == 1}
            assert served == {str(pid) for pid in before}
    finally:
        server.terminate()
        server.wait(timeout=30)
    _, still_running = psutil.wait_procs(workers, timeout=15)  # workers and multiprocessing's tracker follow
    assert not still_running


def test_people_leave_out_existing_friends_when_the_edges_are_friendships(serving_artifacts, some_user):
    from recsys_core.recommend.people import recommend_people
    from recsys_core.recommend.queries import PeopleQuery

    art = serving_artifacts
    user_id, _ = some_user
    user = art.user_index(user_id)
    friends = set(art.user_ids[art.friends[user].indices].tolist())
    assert friends and art.manifest.social_edges_are_friendships  # the default world's edges are friendships
    people = recommend_people(art, PeopleQuery(user_id=user_id, top_k=50))
    recs = [r.user_id for r in people]
    assert len(recs) == 50 and not friends & set(recs) and user_id not in recs
    # friendship data without context: the people model's order and odds, as measured
    assert [r.combined_score for r in people] == [r.compat_score for r in people]
    assert [r.combined_score for r in people] == sorted((r.combined_score for r in people), reverse=True)
    # Read as similarity edges, the social neighbours are fair candidates, ordered by 0.7 compat + 0.3 attend.
    similar = dataclasses.replace(art, manifest=dataclasses.replace(art.manifest, social_edges_are_friendships=False))
    neighbours = recommend_people(similar, PeopleQuery(user_id=user_id, top_k=50))
    assert friends & {r.user_id for r in neighbours}
    for r in neighbours:
        assert r.combined_score == pytest.approx(0.7 * r.compat_score + 0.3 * r.attend_prob, rel=1e-5)
