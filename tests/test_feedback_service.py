"""The service's side of the loop: traceable responses, POST /events (durable, validated, throttled),
two versions served side by side by a stable split, and /metrics in Prometheus text format."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recsys_core.feedback.experiment import CANDIDATE, Experiment, write_experiment
from recsys_core.feedback.log import LogFull
from recsys_core.feedback.releases import ServingDirectory
from recsys_core.feedback.store import EventPaths, read_events, roll_segments, stored_days
from recsys_core.manifest import ServingManifest
from serving.app import create_app


@pytest.fixture()
def releases(served_world, tmp_path) -> ServingDirectory:
    """A serving directory of its own whose live version is the served world's (as `v-live`)."""
    directory = ServingDirectory(tmp_path / "serving")
    directory.publish(dataclasses.replace(ServingManifest.read(served_world.manifest_path), version="v-live"))
    return directory


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _metrics(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(metrics: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in metrics.items() if n == name and all((k, str(x)) in ls for k, x in labels.items()))


def test_shown_items_clicked_and_visited_are_acknowledged_on_disk_with_the_variant_that_served(
    releases, some_user, tmp_path
):
    user_id, _ = some_user
    events = EventPaths(tmp_path / "events")
    with TestClient(app=create_app(releases.live, poll_interval_s=3600, events_root=events.root)) as client:
        shown = client.get("/recommend/places", params={"user_id": user_id, "top_k": 5}).json()
        assert len(shown["request_id"]) == 32 and shown["variant"] == "v-live"
        batch = [
            {
                "type": "impression",
                "user_id": user_id,
                "place_id": item["place_id"],
                "position": position,
                "request_id": shown["request_id"],
                "variant": shown["variant"],
                "timestamp": _now(),
            }
            for position, item in enumerate(shown["recommendations"])
        ]
        first = shown["recommendations"][0]["place_id"]
        batch += [
            {
                "type": "click",
                "user_id": user_id,
                "place_id": first,
                "request_id": shown["request_id"],
                "variant": shown["variant"],
                "timestamp": _now(),
            },
            {"type": "visit", "user_id": user_id, "place_id": first, "timestamp": _now(), "event_id": "client-7"},
        ]
        response = client.post("/events", json={"events": batch})
        assert response.status_code == 200 and response.json() == {"accepted": 7}
        metrics = _metrics(client)
    assert _value(metrics, "recsys_events_total", outcome="accepted") >= 7
    assert _value(metrics, "recsys_events_accepted_by_type_total", type="impression") >= 5
    roll_segments(events)  # the worker closed its log at shutdown: everything acknowledged rolls
    stored = read_events(events.store, stored_days(events.store)).to_pylist()
    assert [e["type"] for e in stored] == ["impression"] * 5 + ["click", "visit"]
    assert {e["variant"] for e in stored[:6]} == {"v-live"} and stored[6]["event_id"] == "client-7"
    assert all(e["received_at"] is not None for e in stored)


def test_a_bad_event_is_a_400_naming_its_index_and_field_and_nothing_is_recorded(releases, some_user, tmp_path):
    user_id, _ = some_user
    events = EventPaths(tmp_path / "events")
    good = {"type": "visit", "user_id": user_id, "place_id": 0, "timestamp": _now()}
    with TestClient(app=create_app(releases.live, poll_interval_s=3600, events_root=events.root)) as client:
        cases = {
            "events[2].place_id": [good, good, {**good, "place_id": None}],
            "events[1].user_id": [good, {**good, "user_id": "seven"}],
            "events[0].type": [{**good, "type": "purchase"}],
            "events[1].timestamp": [good, {**good, "timestamp": "2026-12-02T10:00:00"}],  # no offset
            "events[0].user_id": [{**good, "user_id": 10**9}],  # not a served user
            "events[0].surprise": [{**good, "surprise": 1}],
        }
        for field, batch in cases.items():
            response = client.post("/events", json={"events": batch})
            body = response.json()
            assert response.status_code == 400, (field, body)
            assert body["field"] == field and field.split(".")[0] in body["detail"], (field, body)
        too_many = client.post("/events", json={"events": [good] * 1001})
        assert too_many.status_code == 400 and "1000" in too_many.json()["detail"]
        full = {**good, "request_id": "r" * 64, "variant": "v" * 64, "event_id": "e" * 64, "type": "visit"}
        assert client.post("/events", json={"events": [full] * 1000}).status_code == 200  # a full batch fits
        huge = client.post("/events", json={"events": [{**good, "event_id": "x" * 10**6}]})
        assert huge.status_code == 413
        assert client.post("/events", json={"events": []}).status_code == 400
        metrics = _metrics(client)
    assert _value(metrics, "recsys_events_total", outcome="rejected") >= 1
    roll_segments(events)
    stored = read_events(events.store, stored_days(events.store))
    assert stored.num_rows == 1000 and set(stored.column("event_id").to_pylist()) == {"e" * 64}  # the full batch only


def test_a_full_log_is_a_429_with_retry_after_and_nothing_acknowledged(releases, some_user, tmp_path, monkeypatch):
    user_id, _ = some_user
    app = create_app(releases.live, poll_interval_s=3600, events_root=tmp_path / "events")
    with TestClient(app=app) as client:
        sink = app.dependencies["sink"].dependency()

        def full(events, received_at=None):
            raise LogFull(50_000, 50_000, 3)

        monkeypatch.setattr(sink.log, "append", full)
        response = client.post(
            "/events", json={"events": [{"type": "visit", "user_id": user_id, "place_id": 0, "timestamp": _now()}]}
        )
        assert response.status_code == 429 and response.headers["retry-after"] == "3"
        assert "retry in 3 s" in response.json()["detail"] and "nothing was recorded" in response.json()["detail"]
        assert _value(_metrics(client), "recsys_events_total", outcome="throttled") >= 1


def _variants(client, users) -> dict[int, str]:
    return {u: client.get("/recommend/places", params={"user_id": u, "top_k": 3}).json()["variant"] for u in users}


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_experiment_serves_the_candidate_to_a_stable_share_and_ends_without_a_restart(releases, serving_artifacts):
    users = [int(u) for u in serving_artifacts.user_ids[:300]]
    with TestClient(app=create_app(releases.live, poll_interval_s=0.05)) as client:
        assert set(_variants(client, users[:20]).values()) == {"v-live"}  # no candidate: everyone on live
        candidate = dataclasses.replace(releases.read("live"), version="v-cand", model_version="graphrec-cand")
        releases.publish(candidate, "candidate", candidate_share=0.3)
        _wait_for(lambda: (client.get("/version").json()["experiment"] or {}).get("candidate_version") == "v-cand")
        experiment = client.get("/version").json()["experiment"]
        assert experiment["enabled"] and experiment["candidate_share"] == 0.3
        first = _variants(client, users)
        on_candidate = [u for u, v in first.items() if v == "v-cand"]
        assert 0.2 < len(on_candidate) / len(users) < 0.4
        assert set(first.values()) == {"v-live", "v-cand"}
        assert _variants(client, users) == first  # the same user sees the same arm every time
        expected = Experiment.from_json(releases.experiment.read_text())
        assert all((expected.arm(u) == CANDIDATE) == (first[u] == "v-cand") for u in users)
        people = client.get("/recommend/people", params={"user_id": on_candidate[0], "top_k": 3}).json()
        assert people["variant"] == "v-cand"
        metrics = _metrics(client)
        assert _value(metrics, "recsys_assignments_total", arm="candidate") >= len(on_candidate)
        assert _value(metrics, "recsys_served_version", arm="candidate", version="v-cand") == 1

        write_experiment(releases.experiment, dataclasses.replace(expected, enabled=False))  # switched off
        _wait_for(lambda: set(_variants(client, on_candidate[:10]).values()) == {"v-live"})
        assert set(_variants(client, users).values()) == {"v-live"}

        write_experiment(releases.experiment, expected)
        _wait_for(lambda: _variants(client, on_candidate[:5]) == {u: "v-cand" for u in on_candidate[:5]})
        releases.experiment.write_text("{not json")  # an unusable file switches it off, and says why
        _wait_for(lambda: client.get("/version").json()["experiment_error"] is not None)
        assert set(_variants(client, on_candidate[:10]).values()) == {"v-live"}

        write_experiment(releases.experiment, expected)
        releases.promote()  # the candidate goes live; the candidate file and the experiment end
        _wait_for(lambda: client.get("/version").json()["version"] == "v-cand")
        assert set(_variants(client, users[:30]).values()) == {"v-cand"}
        assert not releases.candidate.exists() and not Experiment.from_json(releases.experiment.read_text()).enabled


def test_metrics_count_requests_by_endpoint_and_status_with_latency_and_reloads(releases, some_user):
    user_id, _ = some_user
    with TestClient(app=create_app(releases.live, poll_interval_s=3600)) as client:
        before = _metrics(client)
        for _ in range(3):
            assert client.get("/recommend/places", params={"user_id": user_id}).status_code == 200
        assert client.get("/recommend/places", params={"user_id": user_id, "top_k": 0}).status_code == 400
        client.get(f"/no/such/path/{user_id}")  # not a route: no series of its own
        after = _metrics(client)
    path = "/recommend/places"
    for status, count in (("200", 3), ("400", 1)):
        grew = _value(after, "recsys_requests_total", path=path, status_code=status) - _value(
            before, "recsys_requests_total", path=path, status_code=status
        )
        assert grew == count
    assert _value(after, "recsys_request_duration_seconds_count", path=path) >= 4
    assert _value(after, "recsys_request_duration_seconds_bucket", path=path, le="0.5") >= 3
    assert not [k for k in after if "/no/such" in str(k)]
    assert _value(after, "recsys_reloads_total", arm="live", outcome="ok") >= 1
    assert _value(after, "recsys_served_version", arm="live", version="v-live") == 1


def test_a_pinned_version_is_served_again_and_new_publications_wait(releases, served_world):
    live = releases.read("live")
    second = dataclasses.replace(live, version="v-second", created_at=_now())
    assert releases.publish(second).target == "live"
    releases.pin_version("v-live", reason="v-second misbehaves")
    assert releases.read("live").version == "v-live" and releases.pin().version == "v-live"
    third = dataclasses.replace(live, version="v-third", created_at=_now())
    assert releases.publish(third).target == "held" and releases.read("live").version == "v-live"
    with TestClient(app=create_app(releases.live, poll_interval_s=3600)) as client:
        info = client.get("/version").json()
    assert info["version"] == "v-live" and info["pinned"] == {"version": "v-live", "reason": "v-second misbehaves"}
    releases.unpin()
    assert releases.publish(third).target == "live"
    with pytest.raises(Exception, match="no published version 'v-nope'"):
        releases.pin_version("v-nope")


def test_retention_keeps_what_manifests_name_and_the_newest_runs(tmp_path):
    from recsys_core.feedback.releases import artifact_retention

    root = tmp_path / "artifacts"
    runs = []
    for i in range(5):
        run = root / "trained_model" / "all" / f"run{i}"
        run.mkdir(parents=True)
        (run / "artifact.json").write_text("{}")
        runs.append(run)
        time.sleep(0.01)
        Path(run).touch()
    referenced = {runs[0].resolve()}
    doomed = artifact_retention(root, referenced, keep_runs=2)
    assert sorted(p.name for p in doomed) == ["run1", "run2"]
    assert [r.exists() for r in runs] == [True, False, False, True, True]
