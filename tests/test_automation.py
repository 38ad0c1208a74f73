"""Jobs, the nightly schedule, and the sensors that carry a retrain through to a new manifest."""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    job,
    op,
)

from recsys_assets import stages
from recsys_assets.definitions import defs
from recsys_assets.defs import automation
from recsys_assets.partitions import register_cities
from recsys_core.taxonomy import CITY_SLUGS
from recsys_core.vocabulary import BUILTIN


def test_jobs_schedule_and_sensors_are_defined_and_on_by_default():
    assert {j.name for j in defs.jobs} >= {
        "world_tables",
        "retrain",
        "city_indices",
        "city_refresh",
        "ingest_interactions",
        "publish_manifest",
        "daily_online_metrics",
        "promote_candidate",
    }
    schedule = next(s for s in defs.schedules if s.name == "nightly_retrain")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == "retrain"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert {s.name: s.default_status for s in defs.sensors} == {
        "indices_after_retrain": DefaultSensorStatus.RUNNING,
        "publish_when_indices_are_fresh": DefaultSensorStatus.RUNNING,
        "interactions_inbox": DefaultSensorStatus.RUNNING,
        "retrain_after_ingest": DefaultSensorStatus.RUNNING,
        "event_days": DefaultSensorStatus.RUNNING,
        "promote_when_decided": DefaultSensorStatus.RUNNING,  # acts only with FeedbackSettings.auto_promote
        "feedback_to_inbox": DefaultSensorStatus.RUNNING,
    }
    retrain = {k.to_user_string() for k in defs.resolve_job_def("retrain").asset_layer.selected_asset_keys}
    assert retrain == set(stages.RETRAIN_ASSETS)  # no world tables: a retrain reuses the latest ones


def _instance_with_cities() -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    register_cities(instance, BUILTIN)
    return instance


def test_a_successful_retrain_requests_every_citys_indices():
    @op
    def noop():
        return None

    @job
    def retrain():
        noop()

    instance = _instance_with_cities()
    result = retrain.execute_in_process(instance=instance)
    context = build_run_status_sensor_context(
        sensor_name="indices_after_retrain",
        dagster_event=next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS"),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    requests = automation.indices_after_retrain(context)
    assert [r.partition_key for r in requests] == list(CITY_SLUGS)
    assert len({r.run_key for r in requests}) == len(CITY_SLUGS)


def test_ingests_that_a_pending_retrain_will_read_share_it():
    """Eight cities' inbox files in one go start one retrain: an ingest is covered by a retrain that is
    queued or was created after the ingest ended; a retrain that may have read the tables already, or
    that failed, covers nothing."""
    from dagster import DagsterRun, DagsterRunStatus
    from dagster._core.utils import make_new_run_id

    @op
    def append():
        return None

    @job
    def ingest_interactions():
        append()

    instance = DagsterInstance.ephemeral()

    def retrain_run(status: DagsterRunStatus) -> str:
        run = DagsterRun(job_name=automation.retrain_job.name, run_id=make_new_run_id(), status=status)
        instance.add_run(run)
        return run.run_id

    def after(ingest):
        context = build_run_status_sensor_context(
            sensor_name="retrain_after_ingest",
            dagster_event=ingest.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=ingest.dagster_run,
        )
        return automation.retrain_after_ingest(context)

    retrain_run(DagsterRunStatus.SUCCESS)  # an earlier retrain, done before the data arrived
    first = ingest_interactions.execute_in_process(instance=instance)
    requested = after(first)
    assert isinstance(requested, RunRequest) and requested.tags[stages.RETRAIN_MODE_TAG] == stages.REFRESH
    retrain_run(DagsterRunStatus.FAILURE)
    assert isinstance(after(first), RunRequest)  # a failed retrain trained nothing
    started = retrain_run(DagsterRunStatus.STARTED)  # created after the first ingest ended
    skipped = after(first)
    assert isinstance(skipped, SkipReason) and started[:8] in skipped.skip_message

    second = ingest_interactions.execute_in_process(instance=instance)
    assert isinstance(after(second), RunRequest)  # the started retrain may have read the tables before it
    queued = retrain_run(DagsterRunStatus.NOT_STARTED)  # (a QUEUED run needs a code location to be made)
    skipped = after(second)
    assert isinstance(skipped, SkipReason) and queued[:8] in skipped.skip_message


def _materialized(instance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(AssetMaterialization(asset_key=AssetKey(asset), partition=partition))


def test_publish_waits_for_every_city_index_then_publishes_once():
    instance = _instance_with_cities()
    assert "no embeddings" in automation.publish_decision(instance).skip_message
    _materialized(instance, "user_embeddings")
    for city in CITY_SLUGS[:-1]:
        for asset in stages.INDEX_ASSETS:
            _materialized(instance, asset, city)
    waiting = automation.publish_decision(instance)
    assert isinstance(waiting, SkipReason) and f"[{CITY_SLUGS[-1]}]" in waiting.skip_message
    for asset in stages.INDEX_ASSETS:
        _materialized(instance, asset, CITY_SLUGS[-1])
    assert isinstance(automation.publish_decision(instance), RunRequest)
    _materialized(instance, "serving_manifest")
    assert "already names" in automation.publish_decision(instance).skip_message
    _materialized(instance, "user_embeddings")  # a new retrain: old indices are stale again
    assert "waiting for indices" in automation.publish_decision(instance).skip_message


def _index_run(instance, fail: bool) -> list:
    """A run that records every city's indices, then (as a blocking recall check would) fails or
    succeeds; returns the publish decisions taken while it was still running and after it ended."""
    decisions = []

    @op
    def build_indices(context) -> None:
        for city in CITY_SLUGS:
            for asset in stages.INDEX_ASSETS:
                context.log_event(AssetMaterialization(asset_key=asset, partition=city))
        decisions.append(automation.publish_decision(context.instance))  # the run's checks are still to come
        if fail:
            raise RuntimeError("place_index_recall failed")

    @job
    def city_indices():
        build_indices()

    city_indices.execute_in_process(instance=instance, raise_on_error=False)
    decisions.append(automation.publish_decision(instance))
    return decisions


def test_publish_waits_until_the_runs_that_built_the_indices_succeeded():
    instance = _instance_with_cities()
    _materialized(instance, "user_embeddings")
    during, after = _index_run(instance, fail=False)
    assert isinstance(during, SkipReason) and "waiting for the runs building" in during.skip_message
    assert isinstance(after, RunRequest)


def test_an_index_whose_run_failed_is_not_published():
    instance = _instance_with_cities()
    _materialized(instance, "user_embeddings")
    during, after = _index_run(instance, fail=True)
    assert isinstance(during, SkipReason) and "waiting for the runs building" in during.skip_message
    assert isinstance(after, SkipReason) and "failed" in after.skip_message
    for city in CITY_SLUGS[:-1]:  # rebuilt outside that run, all but one city: still refused
        for asset in stages.INDEX_ASSETS:
            _materialized(instance, asset, city)
    assert f"[{CITY_SLUGS[-1]}]" in automation.publish_decision(instance).skip_message
    for asset in stages.INDEX_ASSETS:
        _materialized(instance, asset, CITY_SLUGS[-1])
    assert isinstance(automation.publish_decision(instance), RunRequest)


def test_the_daemons_code_location_continues_the_world_recsys_materialize_built(tmp_path, monkeypatch):
    """`recsys materialize --users 400` then `make dagster`: a city refresh or an inbox ingest under the
    daemon must regenerate that world (same size and seed) and retrain with the same settings, not the defaults."""
    import recsys_assets.materialize
    from recsys_assets.definitions import build_definitions
    from recsys_assets.resources import ReleasePolicy, TrainingSettings, WorldSource, recorded_settings
    from recsys_core import cli

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert build_definitions(str(tmp_path / "artifacts")).resources["world"].n_users == WorldSource().n_users
    materialized = []
    monkeypatch.setattr(
        recsys_assets.materialize, "materialize_all", lambda defs, instance, cities: materialized.append(defs)
    )
    argv = [
        "materialize",
        "--users",
        "400",
        "--places",
        "320",
        "--seed",
        "7",
        "--max-steps",
        "30",
        "--time-budget",
        "900",
    ]
    assert cli.main(argv) == 0

    recorded = recorded_settings(tmp_path)
    world, training = recorded.world, recorded.training
    assert recorded.release == ReleasePolicy()  # nothing asked: new models go live, nothing promotes itself
    assert (world.n_users, world.n_places, world.seed, world.kind) == (400, 320, 7, "synthetic")
    assert (training.max_steps, training.time_budget_s, training.batch_size) == (
        30,
        900.0,
        TrainingSettings().batch_size,
    )
    for location in (materialized[0], build_definitions(str(tmp_path / "artifacts"))):  # the CLI's run and the daemon's
        assert location.resources["world"].n_users == 400 and location.resources["world"].seed == 7
        assert location.resources["training"].max_steps == 30
    # Resources given explicitly (tests, `recsys materialize` itself) win over the record.
    assert build_definitions(str(tmp_path / "a"), WorldSource(n_users=160)).resources["world"].n_users == 160


def test_the_release_policy_is_recorded_and_the_daemon_publishes_and_promotes_by_it(tmp_path, monkeypatch, capsys):
    """`recsys materialize --publish-as candidate --candidate-share 0.3 --auto-promote`: the daemon's later
    retrains are A/B tested on 30 % of users and promote themselves; a share outside (0, 1) is refused
    before anything is recorded."""
    import recsys_assets.materialize
    from recsys_assets.definitions import build_definitions
    from recsys_assets.resources import ReleasePolicy, recorded_settings, settings_path
    from recsys_core import cli

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    materialized = []
    monkeypatch.setattr(
        recsys_assets.materialize, "materialize_all", lambda defs, instance, cities: materialized.append(defs)
    )
    assert cli.main(["materialize", "--candidate-share", "1.5", "--publish-as", "candidate"]) == 2
    assert "candidate_share must be between 0 and 1" in capsys.readouterr().err
    assert not materialized and not settings_path(tmp_path).exists()

    argv = ["materialize", "--users", "400", "--publish-as", "candidate", "--candidate-share", "0.3", "--auto-promote"]
    assert cli.main(argv) == 0
    assert recorded_settings(tmp_path).release == ReleasePolicy("candidate", 0.3, auto_promote=True)
    for location in (materialized[0], build_definitions(str(tmp_path / "artifacts"))):  # the CLI's run and the daemon's
        serving, feedback = location.resources["serving"], location.resources["feedback"]
        assert (serving.publish_as, serving.candidate_share, feedback.auto_promote) == ("candidate", 0.3, True)
    # Without the flags the defaults are recorded again: a policy does not outlive the materialize that set it.
    assert cli.main(["materialize", "--users", "400"]) == 0
    assert recorded_settings(tmp_path).release == ReleasePolicy()
    assert build_definitions(str(tmp_path / "artifacts")).resources["serving"].publish_as == "live"
