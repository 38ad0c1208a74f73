"""The loop after serving: online metrics per day from the feedback events, the A/B decision,
promotion of the candidate, and the visits that go back in as new interactions.

- `event_days` (sensor) rolls the service's closed log segments into Parquet, registers a
  partition per event day, and runs `online_metrics` for every day with new events and the
  `window_days` before it (whose conversions the new visits may complete).
- `online_metrics` (asset, one partition per day) computes each variant's impressions, CTR@k,
  visit conversion and coverage for the day, and the running experiment's decision as of that day.
- `promote_when_decided` (sensor) starts `promote_candidate` when the newest day says `promote`
  and automatic promotion is on (`FeedbackSettings.auto_promote`); the job can also be run by hand.
- `feedback_to_inbox` (sensor) drops each newly stored file's visits into the interactions inbox,
  where the inbox sensor checks and appends them like any other new data (then retrain follows).
"""

import datetime as dt
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    job,
    op,
    run_status_sensor,
    sensor,
)

if TYPE_CHECKING:
    from dagster import JobDefinition
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from recsys_assets.io_manager import latest_materialization, load_latest, load_latest_table
from recsys_assets.metadata import Metadata, markdown_table, png_markdown
from recsys_assets.partitions import city_keys
from recsys_assets.resources import FeedbackSettings, InboxSettings, ServingSettings
from recsys_assets.stages import SENSOR_INTERVAL_S
from recsys_core.feedback import online
from recsys_core.feedback.experiment import read_experiment
from recsys_core.feedback.interactions import drop_in_inbox, split_by_city, visits_as_interactions
from recsys_core.feedback.store import day_directory, read_event_file, read_events, roll_segments, stored_days
from recsys_core.vocabulary import Vocabulary

EVENT_DAYS = "event_day"
event_days_partitions = DynamicPartitionsDefinition(name=EVENT_DAYS)
FEEDBACK: dict[str, Any] = dict(group_name="feedback", owners=["team:ml"])


def _day(context: AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _arm_rows(arms: list[online.ArmMetrics]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "variant": a.variant,
                "users": a.users,
                "impressions": a.impressions,
                "CTR@k": round(a.ctr, 4),
                "CTR interval": f"{a.ctr_ci[0]:.4f} .. {a.ctr_ci[1]:.4f}",
                "conversion": round(a.conversion, 4),
                "conversion interval": f"{a.conversion_ci[0]:.4f} .. {a.conversion_ci[1]:.4f}",
                "coverage (items)": a.coverage,
            }
            for a in arms
        ]
    )


def _plot(arms: list[online.ArmMetrics], title: str) -> MetadataValue:
    """CTR@k and conversion per variant, with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    names = [a.variant[-12:] for a in arms]
    for ax, metric in zip(axes, ("ctr", "conversion"), strict=True):
        values = np.array([getattr(a, metric) for a in arms])
        low = np.array([getattr(a, f"{metric}_ci")[0] for a in arms])
        high = np.array([getattr(a, f"{metric}_ci")[1] for a in arms])
        ax.bar(names, values, yerr=[values - low, high - values], capsize=4, color="tab:blue")
        ax.set_title("CTR@k" if metric == "ctr" else "visit conversion")
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return png_markdown(buffer.getvalue(), "online metrics")


@asset(
    **FEEDBACK,
    kinds={"parquet"},
    partitions_def=event_days_partitions,
    description="A day's impressions by variant and user: CTR@k, visit conversion, coverage; and the "
    "running experiment's A/B decision as of the day (promote, keep, inconclusive).",
)
def online_metrics(context: AssetExecutionContext, feedback: FeedbackSettings, serving: ServingSettings):
    paths, settings = feedback.paths(), feedback.online()
    roll_segments(paths)  # segments of a service that has stopped since
    day = _day(context)
    later = _days(day, day + settings.window)
    shown_today = read_events(paths.store, [day])
    window = read_events(paths.store, later)
    outcomes = online.user_outcomes(window, settings, impressions_from=shown_today)
    coverage = online.shown_coverage(shown_today, settings)
    places = outcomes[outcomes["surface"] == online.PLACES]
    arms = [
        online.arm_metrics(places, v, coverage.get(v, 0), settings.confidence)
        for v in sorted(places["variant"].unique())
    ]
    metadata: Metadata = {
        "dagster/row_count": len(outcomes),
        "events read": window.num_rows,
        "by variant (places)": markdown_table(_arm_rows(arms)),
    }
    if arms:
        metadata["plot"] = _plot(arms, f"{day}: places, k={settings.k}, {settings.confidence:.0%} intervals")
    decision = _experiment_decision(paths.store, serving, settings, day)
    if decision is not None:
        metadata.update(
            {
                "decision": decision.decision,
                "decision reason": decision.reason,
                "experiment": MetadataValue.json(decision.to_dict()),
            }
        )
        context.log.info("experiment as of %s: %s (%s)", day, decision.decision, decision.reason)
    table = pa.Table.from_pandas(outcomes, preserve_index=False)
    return Output(table, metadata=metadata)


def _experiment_decision(
    store: Path, serving: ServingSettings, settings: online.OnlineSettings, day: dt.date
) -> online.Decision | None:
    """The experiment's decision from its start to the end of `day` (None: no experiment ran then)."""
    experiment = read_experiment(serving.releases().experiment)
    start = experiment.start if experiment else None
    if experiment is None or start is None or not experiment.candidate_version or start.date() > day:
        return None
    events = read_events(store, _days(start.date(), day + settings.window))
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return online.experiment_decision(
        events, experiment.live_version, experiment.candidate_version, settings, until=end, since=start
    )


# Ahead of the ingests and retrains in the run queue: a decision and its promotion take seconds and
# should not wait for a retrain to finish.
AHEAD_IN_QUEUE = {"dagster/priority": "10"}

online_metrics_job = define_asset_job(
    "daily_online_metrics",
    executor_def=in_process_executor,
    tags=AHEAD_IN_QUEUE,
    selection=AssetSelection.assets(online_metrics),
    description="One day's online metrics and the experiment's decision as of that day.",
)


@op(description="Make the experiment's candidate the live version and end the experiment.")
def promote(context: OpExecutionContext, serving: ServingSettings) -> None:
    manifest = serving.releases().promote()
    context.log.info("promoted %s (%s) to live", manifest.version, manifest.model_version)


@job(
    tags=AHEAD_IN_QUEUE,
    description="The candidate becomes live (refused while live is pinned); everyone is back on one version.",
)
def promote_candidate():
    promote()


@sensor(
    job=online_metrics_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Roll closed event segments into Parquet, add a partition per event day, and compute the "
    "online metrics of days with new events (and the conversion window before them).",
)
def event_days(context: SensorEvaluationContext, feedback: FeedbackSettings):
    paths = feedback.paths()
    roll_segments(paths)
    seen = json.loads(context.cursor) if context.cursor else {}
    stamps = {
        day.isoformat(): max(
            (f.stat().st_mtime_ns for f in day_directory(paths.store, day).glob("*.parquet")), default=0
        )
        for day in stored_days(paths.store)
    }
    changed = [dt.date.fromisoformat(d) for d, stamp in stamps.items() if seen.get(d) != stamp]
    if not changed:
        return SkipReason("no new feedback events")
    known = set(context.instance.get_dynamic_partitions(EVENT_DAYS))
    new = sorted(d for d in stamps if d not in known)
    stale = {d - dt.timedelta(days=back) for d in changed for back in range(feedback.window_days + 1)} & {
        dt.date.fromisoformat(d) for d in stamps
    }
    newest = max(stamps.values())
    requests = [RunRequest(run_key=f"{d}-{newest}", partition_key=d.isoformat()) for d in sorted(stale)]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[event_days_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(stamps),
    )


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[online_metrics_job],
    request_job=promote_candidate,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="When the newest day's decision is `promote` and automatic promotion is on "
    "(FeedbackSettings.auto_promote), make the candidate live.",
)
def promote_when_decided(context: RunStatusSensorContext, feedback: FeedbackSettings, serving: ServingSettings):
    if not feedback.auto_promote:
        return SkipReason("automatic promotion is off (FeedbackSettings.auto_promote)")
    experiment = read_experiment(serving.releases().experiment)
    if experiment is None or not experiment.enabled or not serving.releases().candidate.exists():
        return SkipReason("no experiment running")
    days = sorted(context.instance.get_dynamic_partitions(EVENT_DAYS))
    record = latest_materialization(context.instance, AssetKey("online_metrics"), days[-1]) if days else None
    meta = record.asset_materialization.metadata if record else {}
    decision = getattr(meta.get("decision"), "value", None)
    if decision != online.PROMOTE:
        return SkipReason(f"newest day {days[-1] if days else '-'}: {decision or 'no decision'}")
    return RunRequest(run_key=f"promote-{experiment.candidate_version}")


@sensor(
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Visits from newly stored feedback files into the interactions inbox (one file per city), "
    "where the inbox sensor checks and appends them.",
)
def feedback_to_inbox(context: SensorEvaluationContext, feedback: FeedbackSettings, inbox_settings: InboxSettings):
    paths = feedback.paths()
    roll_segments(paths)
    done = set(json.loads(context.cursor)) if context.cursor else set()
    horizon = dt.date.today() - dt.timedelta(days=45)  # older days take no new files (events <= 30 days old)
    files = sorted(
        str(f.relative_to(paths.store))
        for day in stored_days(paths.store)
        if day >= horizon
        for f in day_directory(paths.store, day).glob("*.parquet")
    )
    new = [f for f in files if f not in done]
    if not new:
        return SkipReason("no new feedback files")
    try:
        vocabulary = load_latest(context.instance, AssetKey("vocabulary"), [None])
        if not isinstance(vocabulary, Vocabulary):
            raise TypeError(f"the vocabulary asset holds a {type(vocabulary).__name__}")
        places = load_latest_table(context.instance, AssetKey("places"), city_keys(context.instance))
    except FileNotFoundError as exc:
        return SkipReason(f"feedback waits for the world's tables: {exc}")
    places = places.sort_by("place_id")
    place_ids, place_cities = places.column("place_id").to_numpy(), places.column("city_id").to_numpy()
    # Every new file's visits in one table, then one inbox file per city: a tick costs each city one ingest.
    visits = visits_as_interactions(pa.concat_tables([read_event_file(paths.store / name) for name in new]))
    stem = f"{new[0]}..{Path(new[-1]).name}".replace("/", "-").replace(".parquet", "")
    dropped = 0
    for city, table in split_by_city(visits, place_ids, place_cities).items():
        drop_in_inbox(table, Path(inbox_settings.directory), vocabulary.city_slugs[city], stem)
        dropped += table.num_rows
    context.update_cursor(json.dumps(sorted((done | set(new)) & set(files))))
    return SkipReason(f"{dropped} visits from {len(new)} files dropped into the inbox")


JOBS: "list[JobDefinition | UnresolvedAssetJobDefinition]" = [online_metrics_job, promote_candidate]
SENSORS: list[SensorDefinition] = [event_days, promote_when_decided, feedback_to_inbox]
