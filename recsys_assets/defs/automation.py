"""Jobs, the nightly retraining schedule and the sensors that carry a retrain through to serving.

A retrain is three kinds of run, because the assets are partitioned differently:
`retrain` (features -> graph -> model -> evaluation -> embeddings, all cities in one run),
then `city_indices` for every city partition (started by `indices_after_retrain` when a
retrain succeeds), then `publish_manifest` (started by `publish_when_indices_are_fresh`
once every city's indices are newer than the embeddings and the runs that built them, recall
checks included, have succeeded). The evaluation's blocking quality
gate stops a bad model inside `retrain`: no embeddings, no indices, no manifest, and the
previous model keeps serving while the failed run and check are visible in the UI.
"""

import os
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    run_status_sensor,
    sensor,
)

from recsys_assets.io_manager import latest_materialization, latest_table_schema, load_latest_table
from recsys_assets.partitions import city_keys
from recsys_assets.resources import InboxSettings
from recsys_assets.stages import (
    CITY_WORLD_ASSETS,
    INDEX_ASSETS,
    INGEST_ASSETS,
    MANIFEST_ASSETS,
    REFRESH,
    RETRAIN_ASSETS,
    RETRAIN_MODE_TAG,
    SENSOR_INTERVAL_S,
    WORLD_ASSETS,
)
from recsys_core import inbox

# Every step of these jobs takes seconds, but a step in its own process (the default multiprocess
# executor) first imports the code location, torch included: 10-70 s per step on a busy 2-core machine
# (an ingest was 6 s of work in a 196 s run). In process, a run pays that import once.
IN_PROCESS: dict[str, Any] = dict(executor_def=in_process_executor)

world_tables_job = define_asset_job(
    "world_tables",
    **IN_PROCESS,
    selection=AssetSelection.assets(*WORLD_ASSETS),
    description="A city's world tables. The full pipeline is this for every city (a backfill), then `retrain`; "
    "the sensors carry it on to indices and the manifest (`recsys materialize` does all of it in order).",
)
retrain_job = define_asset_job(
    "retrain",
    **IN_PROCESS,
    selection=AssetSelection.assets(*RETRAIN_ASSETS),
    description="Graph -> model -> evaluation (blocking quality gate) -> embeddings, from the latest world tables.",
)
city_indices_job = define_asset_job(
    "city_indices",
    **IN_PROCESS,
    selection=AssetSelection.assets(*INDEX_ASSETS),
    description="One city's FAISS indices from the latest embeddings.",
)
city_refresh_job = define_asset_job(
    "city_refresh",
    **IN_PROCESS,
    selection=AssetSelection.assets(*CITY_WORLD_ASSETS, *INDEX_ASSETS),
    description="One city's world tables and indices (serving picks them up at the next publish).",
)
ingest_job = define_asset_job(
    "ingest_interactions",
    **IN_PROCESS,
    selection=AssetSelection.assets(*INGEST_ASSETS),
    description="Append an accepted inbox file to a city's interactions and rebuild its social tables.",
)
publish_job = define_asset_job(
    "publish_manifest",
    **IN_PROCESS,
    selection=AssetSelection.assets(*MANIFEST_ASSETS),
    description="Write the serving manifest (refuses unless upstream checks passed).",
)

nightly_retrain = ScheduleDefinition(
    name="nightly_retrain",
    job=retrain_job,
    cron_schedule=os.environ.get("RECSYS_RETRAIN_CRON", "0 3 * * *"),
    execution_timezone=os.environ.get("RECSYS_RETRAIN_TZ", "UTC"),
    default_status=DefaultScheduleStatus.RUNNING,
    description="Retrain every night (cron from RECSYS_RETRAIN_CRON); runs whenever the daemon runs.",
)


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[retrain_job],
    request_job=city_indices_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="After a successful retrain, rebuild every city's indices from the new embeddings.",
)
def indices_after_retrain(context: RunStatusSensorContext):
    run_id = context.dagster_run.run_id
    return [RunRequest(run_key=f"{run_id}-{city}", partition_key=city) for city in city_keys(context.instance)]


def _latest(instance, asset: str, partition: str | None = None):
    return latest_materialization(instance, AssetKey(asset), partition)


def _runs_not_succeeded(instance, records: dict) -> tuple[list[str], list[str]]:
    """Of these materializations (named `asset[city]`), those whose run has not finished and those
    whose run failed. A runless materialization (reported from outside a run) counts as finished."""
    by_run = {record.run_id for record in records.values() if record.run_id}
    status = (
        {
            r.dagster_run.run_id: r.dagster_run.status
            for r in instance.get_run_records(RunsFilter(run_ids=sorted(by_run)))
        }
        if by_run
        else {}
    )
    unfinished, failed = [], []
    for name, record in records.items():
        # No run (a runless report) or a run since deleted: nothing to wait for.
        state = status.get(record.run_id, DagsterRunStatus.SUCCESS) if record.run_id else DagsterRunStatus.SUCCESS
        if state in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            failed.append(name)
        elif state != DagsterRunStatus.SUCCESS:
            unfinished.append(name)
    return unfinished, failed


def publish_decision(instance) -> RunRequest | SkipReason:
    """Publish when every city's indices are newer than the embeddings and were built by runs that
    succeeded (their recall checks passed), and the manifest is older."""
    embeddings = _latest(instance, "user_embeddings")
    if embeddings is None:
        return SkipReason("no embeddings materialized yet")
    if not city_keys(instance):
        return SkipReason("no city partitions registered yet (materialize the vocabulary)")
    latest = {
        f"{asset}[{city}]": _latest(instance, asset, city) for asset in INDEX_ASSETS for city in city_keys(instance)
    }
    stale = [name for name, record in latest.items() if record is None or record.timestamp < embeddings.timestamp]
    if stale:
        return SkipReason(f"waiting for indices built from the latest embeddings: {', '.join(stale[:6])}")
    manifest = _latest(instance, "serving_manifest")
    if manifest is not None and manifest.timestamp > embeddings.timestamp:
        return SkipReason("the serving manifest already names the latest embeddings")
    # An index is recorded before its blocking recall check has run: wait until the run that built each
    # index has succeeded (its check passed); an index whose run failed is never published.
    unfinished, failed = _runs_not_succeeded(instance, latest)
    if failed:
        return SkipReason(f"not publishing: the runs that built {', '.join(failed[:6])} failed; rebuild those indices")
    if unfinished:
        return SkipReason(f"waiting for the runs building {', '.join(unfinished[:6])} to finish (index checks)")
    return RunRequest(run_key=f"publish-{embeddings.run_id}")


@sensor(
    job=publish_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Publish a new serving manifest once all city indices are rebuilt from the latest embeddings.",
)
def publish_when_indices_are_fresh(context: SensorEvaluationContext):
    return publish_decision(context.instance)


@sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="New interaction files per city (inbox/<city>/*.parquet|csv, with the columns the world's "
    "interactions came with): valid ones are appended, invalid ones moved to inbox/rejected/<city>/ "
    "with a .reason.txt.",
)
def interactions_inbox(context: SensorEvaluationContext, inbox_settings: InboxSettings):
    requests, rejected, waiting = [], [], []
    cities = city_keys(context.instance)
    for city in cities:
        files = inbox.pending_files(Path(inbox_settings.directory), city)
        if not files:
            continue
        # One ingest per city at a time: two would each append to the same latest table, and the later
        # would drop the other's rows. The files wait in the inbox and the next run takes them all.
        in_flight = _ingest_in_flight(context, city)
        if in_flight is not None:
            waiting.append(f"{city} ({len(files)} file(s) wait for ingest {in_flight[:8]})")
            continue
        try:
            users = load_latest_table(context.instance, AssetKey("users"), [city])
            places = load_latest_table(context.instance, AssetKey("places"), cities)
            existing = latest_table_schema(context.instance, AssetKey("interactions"), city)
        except FileNotFoundError as exc:
            context.log.info("inbox for %s waits: %s", city, exc)
            continue
        accepted = []
        for path in files:
            result = inbox.triage(
                path,
                Path(inbox_settings.directory),
                city,
                users.column("user_id").to_numpy(),
                places.column("place_id").to_numpy(),
                inbox.given_columns(existing.empty_table()),
            )
            if result.accepted:
                accepted.append(str(result.destination))
            else:
                rejected.append(f"{city}/{path.name}: {result.problems[0]}")
                context.log.warning("rejected %s/%s: %s", city, path.name, "; ".join(result.problems[:3]))
        if accepted:
            config = {"ops": {"interactions": {"config": {"append_files": accepted}}}}
            requests.append(RunRequest(run_key=accepted[0], partition_key=city, run_config=config))
    if requests:
        return requests
    parts = ([f"rejected: {' | '.join(rejected)}"] if rejected else []) + (
        [f"waiting: {', '.join(waiting)}"] if waiting else []
    )
    return SkipReason("; ".join(parts) or "no new files")


IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _ingest_in_flight(context: SensorEvaluationContext, city: str) -> str | None:
    """The id of an ingest of `city` that has not finished, if any."""
    records = context.instance.get_run_records(
        RunsFilter(job_name=ingest_job.name, statuses=IN_FLIGHT, tags={"dagster/partition": city}), limit=1
    )
    return records[0].dagster_run.run_id if records else None


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=retrain_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="New events were appended: a refresh retrain (continues the served model where it can; "
    "indices and the manifest follow).",
)
def retrain_after_ingest(context: RunStatusSensorContext):
    ingest = context.dagster_run.run_id
    covering = _retrain_covering(context, ingest)
    if covering is not None:
        return SkipReason(f"retrain {covering[:8]} has not read the data yet: it includes ingest {ingest[:8]}")
    return RunRequest(run_key=f"retrain-after-{ingest}", tags={RETRAIN_MODE_TAG: REFRESH})


# A run in these states has not begun a step, so it will read the latest tables when it does.
NOT_YET_READING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def _retrain_covering(context: RunStatusSensorContext, ingest_run_id: str) -> str | None:
    """A retrain that will read the tables this ingest appended to: queued, or created after the ingest
    ended (it reads the tables only once it runs). New data arriving in several cities at once (the
    feedback visits of a day land in every city's inbox) then costs one retrain, not one per city."""
    ingest = context.instance.get_run_record_by_id(ingest_run_id)
    ended = ingest.end_time if ingest else None
    for record in context.instance.get_run_records(RunsFilter(job_name=retrain_job.name), limit=20):
        status, created = record.dagster_run.status, record.create_timestamp.timestamp()
        trained_nothing = status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
        if status in NOT_YET_READING or (ended is not None and created > ended and not trained_nothing):
            return record.dagster_run.run_id
    return None


JOBS = [world_tables_job, retrain_job, city_indices_job, city_refresh_job, ingest_job, publish_job]
SCHEDULES = [nightly_retrain]
SENSORS = [indices_after_retrain, publish_when_indices_are_fresh, interactions_inbox, retrain_after_ingest]
