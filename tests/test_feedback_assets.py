"""The loop in Dagster: day partitions from the stored events, the online_metrics asset and its
decision, promotion (by the job, and by the sensor only when automatic promotion is on), and the
visits that go back into the interactions inbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)

from recsys_assets.defs import feedback as feedback_defs
from recsys_assets.io_manager import ArtifactIOManager, load_latest_table
from recsys_assets.resources import FeedbackSettings, InboxSettings, ServingSettings
from recsys_core import inbox
from recsys_core.feedback.events import FeedbackEvent
from recsys_core.feedback.log import EventLog, LogSettings
from recsys_core.feedback.releases import ServingDirectory
from recsys_core.feedback.store import EventPaths, roll_segments
from recsys_core.manifest import ServingManifest

TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _log_experiment(paths: EventPaths, live: str, candidate: str, day: dt.datetime, users: int = 400) -> None:
    """Half the users on each arm; the candidate's top items are clicked three times as often."""
    rng = np.random.default_rng(0)
    log = EventLog(LogSettings(paths.log))
    events = []
    for user in range(users):
        variant, rate = (candidate, 0.3) if user % 2 else (live, 0.1)
        at = day + dt.timedelta(hours=1 + user % 10)
        for position in range(10):
            request = f"r{user}"
            events.append(
                FeedbackEvent(
                    "impression", user, at, request_id=request, variant=variant, place_id=position, position=position
                )
            )
            if rng.random() < rate:
                events.append(FeedbackEvent("click", user, at, request_id=request, variant=variant, place_id=position))
                events.append(FeedbackEvent("visit", user, at + dt.timedelta(hours=2), place_id=position))
    for start in range(0, len(events), 1000):
        log.append(events[start : start + 1000]).result(timeout=30)
    log.close()


@pytest.fixture()
def loop(served_world, tmp_path):
    releases = ServingDirectory(tmp_path / "artifacts" / "serving")
    live = dataclasses.replace(ServingManifest.read(served_world.manifest_path), version="v-live")
    releases.publish(live)
    releases.publish(dataclasses.replace(live, version="v-cand", model_version="graphrec-cand"), "candidate", 0.5)
    resources = {
        "feedback": FeedbackSettings(events_root=str(tmp_path / "events"), min_impressions=1000),
        "serving": ServingSettings(artifact_root=str(tmp_path / "artifacts")),
        "io_manager": ArtifactIOManager(root=str(tmp_path / "store")),
    }
    return releases, resources, EventPaths(tmp_path / "events")


def _started_yesterday(releases: ServingDirectory) -> None:
    from recsys_core.feedback.experiment import read_experiment, write_experiment

    experiment = read_experiment(releases.experiment)
    assert experiment is not None
    write_experiment(
        releases.experiment, dataclasses.replace(experiment, started_at=(TODAY - dt.timedelta(days=1)).isoformat())
    )


def test_day_partitions_come_from_the_events_and_the_metrics_decide_to_promote(loop):
    releases, resources, paths = loop
    _started_yesterday(releases)
    yesterday = TODAY - dt.timedelta(days=1)
    _log_experiment(paths, "v-live", "v-cand", yesterday)
    instance = DagsterInstance.ephemeral()
    context = build_sensor_context(instance=instance, resources={"feedback": resources["feedback"]})
    result = feedback_defs.event_days(context)
    day = yesterday.date().isoformat()
    assert [r.partition_key for r in result.run_requests] == [day]
    (added,) = result.dynamic_partitions_requests
    assert list(added.partition_keys) == [day]
    instance.add_dynamic_partitions(feedback_defs.EVENT_DAYS, [day])
    context = build_sensor_context(
        instance=instance, cursor=result.cursor, resources={"feedback": resources["feedback"]}
    )
    assert isinstance(feedback_defs.event_days(context), SkipReason)  # nothing new since

    run = materialize([feedback_defs.online_metrics], partition_key=day, instance=instance, resources=resources)
    meta = run.asset_materializations_for_node("online_metrics")[0].metadata
    assert meta["decision"].value == "promote", meta["decision reason"].value
    assert "v-cand" in meta["by variant (places)"].value and meta["plot"].value.startswith("![online metrics]")
    table = load_latest_table(instance, AssetKey("online_metrics"), [day])
    by_variant = table.to_pandas().groupby("variant")[["impressions", "clicks", "conversions"]].sum()
    assert by_variant.loc["v-live", "impressions"] == 2000 and by_variant.loc["v-cand", "impressions"] == 2000
    assert by_variant.loc["v-cand", "clicks"] > 2 * by_variant.loc["v-live", "clicks"]
    assert (by_variant["conversions"] == by_variant["clicks"]).all()  # every click led to a visit here

    def after_the_run(auto_promote: bool):
        feedback = FeedbackSettings(
            events_root=resources["feedback"].events_root, min_impressions=1000, auto_promote=auto_promote
        )
        context = build_run_status_sensor_context(
            sensor_name="promote_when_decided",
            dagster_instance=instance,
            dagster_run=run.dagster_run,
            dagster_event=run.get_run_success_event(),
            resources={"feedback": feedback, "serving": resources["serving"]},
        )
        return feedback_defs.promote_when_decided(context)

    off = after_the_run(auto_promote=False)
    assert isinstance(off, SkipReason) and "automatic promotion is off" in off.skip_message
    on = after_the_run(auto_promote=True)
    assert isinstance(on, RunRequest)
    feedback_defs.promote_candidate.execute_in_process(instance=instance, resources={"serving": resources["serving"]})
    assert releases.read("live").version == "v-cand" and not releases.candidate.exists()


def test_a_tie_is_inconclusive_and_a_pinned_live_refuses_promotion(loop):
    releases, resources, paths = loop
    _started_yesterday(releases)
    yesterday = TODAY - dt.timedelta(days=1)
    _log_experiment(paths, "v-live", "v-live", yesterday)  # all traffic on live: the candidate has none
    instance = DagsterInstance.ephemeral()
    day = yesterday.date().isoformat()
    instance.add_dynamic_partitions(feedback_defs.EVENT_DAYS, [day])
    run = materialize([feedback_defs.online_metrics], partition_key=day, instance=instance, resources=resources)
    meta = run.asset_materializations_for_node("online_metrics")[0].metadata
    assert meta["decision"].value == "inconclusive" and "too few impressions" in meta["decision reason"].value
    releases.pin_version("v-live")
    failed = feedback_defs.promote_candidate.execute_in_process(
        instance=instance, resources={"serving": resources["serving"]}, raise_on_error=False
    )
    assert not failed.success and releases.read("live").version == "v-live"


def test_visits_go_into_each_city_inbox_and_pass_its_checks(materialized_world, tmp_path):
    """Each tick takes every newly stored file, drops one file per city (one ingest each), and counts a
    check-in stored twice once."""
    instance = materialized_world.instance
    places = load_latest_table(instance, AssetKey("places"), _cities(instance))
    users = load_latest_table(instance, AssetKey("users"), _cities(instance))
    paths = EventPaths(tmp_path / "events")
    log = EventLog(LogSettings(paths.log))
    at = TODAY - dt.timedelta(hours=5)
    place_ids = places.column("place_id").to_numpy()
    user_ids = users.column("user_id").to_numpy()
    visits = [
        FeedbackEvent("visit", int(user_ids[i]), at, place_id=int(place_ids[i * 7 % len(place_ids)])) for i in range(40)
    ]
    clicks = [FeedbackEvent("click", int(user_ids[0]), at, request_id="r", variant="v", place_id=int(place_ids[0]))]
    log.append(visits[:25] + clicks).result(timeout=10)
    log.close()
    roll_segments(paths)
    log = EventLog(LogSettings(paths.log))  # a second stored file, with the same check-in again: one interaction
    log.append([*visits[25:], visits[0]]).result(timeout=10)
    log.close()
    roll_segments(paths)
    feedback = FeedbackSettings(events_root=str(paths.root))
    box = InboxSettings(directory=str(tmp_path / "inbox"))
    context = build_sensor_context(instance=instance, resources={"feedback": feedback, "inbox_settings": box})
    result = feedback_defs.feedback_to_inbox(context)
    assert "40 visits" in result.skip_message
    dropped = sorted(Path(box.directory).glob("*/feedback-*.parquet"))
    assert len({f.parent for f in dropped}) == len(dropped)  # both stored files in one inbox file per city
    assert dropped and sum(inbox.read_interactions_file(f).num_rows for f in dropped) == 40
    for file in dropped:
        table = inbox.read_interactions_file(file)
        assert inbox.problems_of(table, user_ids, place_ids) == [], file
    again = feedback_defs.feedback_to_inbox(
        build_sensor_context(
            instance=instance, cursor=context.cursor, resources={"feedback": feedback, "inbox_settings": box}
        )
    )
    assert "no new feedback files" in again.skip_message  # each stored file goes in once


def _cities(instance) -> list[str]:
    from recsys_assets.partitions import city_keys

    return city_keys(instance)
