"""New interaction files: validated, appended as a new materialization, or rejected with a reason."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, SkipReason, build_sensor_context, materialize

from recsys_assets.defs import automation
from recsys_assets.io_manager import load_latest
from recsys_assets.resources import InboxSettings, WorldSource
from recsys_core import inbox
from recsys_core.taxonomy import CITY_SLUGS

CITY = "london"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny world: every city's places, London's users and interactions, in a fresh instance."""
    from recsys_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("inbox-world")
    defs = build_definitions(
        str(root / "artifacts"), WorldSource(n_users=160, n_places=160), inbox_directory=str(root / "inbox")
    )
    instance = DagsterInstance.ephemeral()

    def run(selection, city):
        return materialize(
            [*defs.assets, *defs.asset_checks],
            selection=selection,
            partition_key=city,
            instance=instance,
            resources=defs.resources,
        )

    run(["vocabulary"], None)  # registers the city partitions
    for city in CITY_SLUGS:
        run(["places"], city)
    run(["users", "interactions"], CITY)
    return defs, instance, root / "inbox"


def _ingest(defs, instance, run_config, raise_on_error=True):
    """What an ingest run does: materialize the city's interactions with the sensor's run config."""
    return materialize(
        [*defs.assets, *defs.asset_checks],
        selection=["interactions"],
        partition_key=CITY,
        instance=instance,
        resources=defs.resources,
        raise_on_error=raise_on_error,
        run_config=run_config,
    )


def _evaluate(instance, inbox_dir):
    context = build_sensor_context(
        instance=instance, resources={"inbox_settings": InboxSettings(directory=str(inbox_dir))}
    )
    return automation.interactions_inbox(context)


def test_valid_file_is_appended_and_an_invalid_one_rejected_with_its_reason(tiny):
    defs, instance, inbox_dir = tiny
    existing = load_latest(instance, AssetKey("interactions"), [CITY])
    (inbox_dir / CITY).mkdir(parents=True)
    fresh = existing.slice(0, 5)
    pq.write_table(fresh, inbox_dir / CITY / "good.parquet")
    bad = existing.slice(0, 3).set_column(0, "user_id", pa.array([10**9] * 3, pa.int64()))
    pcsv.write_csv(bad, inbox_dir / CITY / "bad.csv")

    requests = _evaluate(instance, inbox_dir)
    assert len(requests) == 1 and isinstance(requests[0], RunRequest) and requests[0].partition_key == CITY
    assert not list((inbox_dir / CITY).iterdir())  # both files were taken out of the inbox
    reasons = list((inbox_dir / inbox.REJECTED / CITY).glob("*.reason.txt"))
    assert (
        len(reasons) == 1
        and "1000000000" in reasons[0].read_text()
        and "nothing of it was applied" in reasons[0].read_text()
    )

    result = _ingest(defs, instance, requests[0].run_config)
    assert result.success
    [shown] = result.asset_materializations_for_node("interactions")  # the UI names the file and its rows
    assert shown.metadata["appended_rows"].value == fresh.num_rows
    assert [name.endswith("good.parquet") for name in shown.metadata["appended_files"].value] == [True]
    appended = load_latest(instance, AssetKey("interactions"), [CITY])
    assert appended.num_rows == existing.num_rows + fresh.num_rows
    assert pc.is_in(fresh.column("timestamp"), appended.column("timestamp")).to_numpy().all()
    assert isinstance(_evaluate(instance, inbox_dir), SkipReason)  # nothing left to ingest


def test_a_file_that_breaks_the_contract_is_never_half_applied(tiny, tmp_path):
    defs, instance, inbox_dir = tiny
    before = load_latest(instance, AssetKey("interactions"), [CITY]).num_rows
    broken = tmp_path / "broken.parquet"
    table = load_latest(instance, AssetKey("interactions"), [CITY]).slice(0, 4)
    pq.write_table(table.drop_columns(["implicit_rating"]), broken)
    (inbox_dir / CITY).mkdir(parents=True, exist_ok=True)
    broken.rename(inbox_dir / CITY / "broken.parquet")
    skip = _evaluate(instance, inbox_dir)
    assert isinstance(skip, SkipReason) and "missing column(s) implicit_rating" in skip.skip_message
    # Forced through anyway (a stale run config), the asset refuses before writing anything.
    broken_file = next((inbox_dir / inbox.REJECTED / CITY).glob("*broken.parquet"))
    forced = _ingest(
        defs,
        instance,
        {"ops": {"interactions": {"config": {"append_files": [str(broken_file)]}}}},
        raise_on_error=False,
    )
    assert not forced.success
    assert load_latest(instance, AssetKey("interactions"), [CITY]).num_rows == before


def test_a_citys_files_go_in_one_ingest_and_wait_while_one_is_in_flight(tiny):
    """Two ingests of one city would each append to the same latest table (the later dropping the
    other's rows): files that arrive while one is queued or running wait in the inbox, and the next
    run appends all of them, in order."""
    from dagster import DagsterRun, DagsterRunStatus
    from dagster._core.utils import make_new_run_id

    defs, instance, inbox_dir = tiny
    existing = load_latest(instance, AssetKey("interactions"), [CITY])
    folder = inbox_dir / CITY
    folder.mkdir(parents=True, exist_ok=True)
    first, second = existing.slice(0, 5), existing.slice(5, 2)
    pq.write_table(first, folder / "a.parquet")
    pq.write_table(second, folder / "b.parquet")

    running = DagsterRun(
        job_name=automation.ingest_job.name,
        run_id=make_new_run_id(),
        status=DagsterRunStatus.STARTED,
        tags={"dagster/partition": CITY},
    )
    instance.add_run(running)
    waiting = _evaluate(instance, inbox_dir)
    assert isinstance(waiting, SkipReason) and running.run_id[:8] in waiting.skip_message
    assert sorted(p.name for p in folder.iterdir()) == ["a.parquet", "b.parquet"]  # not taken yet
    instance.add_run(
        DagsterRun(
            job_name=automation.ingest_job.name,
            run_id=make_new_run_id(),
            status=DagsterRunStatus.STARTED,
            tags={"dagster/partition": "zurich"},  # another city's ingest does not hold London's files
        )
    )
    instance.delete_run(running.run_id)  # London's ingest is over

    (request,) = _evaluate(instance, inbox_dir)
    files = request.run_config["ops"]["interactions"]["config"]["append_files"]
    assert [Path(f).name.split("-", 1)[1] for f in files] == ["a.parquet", "b.parquet"]
    result = _ingest(defs, instance, request.run_config)
    [shown] = result.asset_materializations_for_node("interactions")
    assert shown.metadata["appended_rows"].value == first.num_rows + second.num_rows
    assert load_latest(instance, AssetKey("interactions"), [CITY]).num_rows == existing.num_rows + 5 + 2
