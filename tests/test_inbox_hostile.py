"""Hostile new-data files: every kind is moved to rejected/ with a reason that names the offending
rows (or the column, or why the file cannot be read), and nothing downstream changes: the inbox
sensor requests no run and the city's world tables keep their latest materializations."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, SkipReason, build_sensor_context, materialize

from recsys_assets.defs import automation
from recsys_assets.io_manager import latest_materialization, load_latest
from recsys_assets.resources import InboxSettings, WorldSource
from recsys_core import contracts, inbox
from recsys_core.taxonomy import CITY_SLUGS

CITY = "london"
CITY_TABLES = ["users", "interactions", "user_user_edges", "friend_labels"]
UNKNOWN = 10**9


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every city's places and London's world tables in a fresh instance, and 6 valid new events."""
    from recsys_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("hostile-inbox")
    defs = build_definitions(
        str(root / "artifacts"), WorldSource(n_users=160, n_places=160), inbox_directory=str(root / "inbox")
    )
    instance = DagsterInstance.ephemeral()
    materialize([*defs.assets], selection=["vocabulary"], instance=instance, resources=defs.resources)
    for city in CITY_SLUGS:
        materialize(
            [*defs.assets], selection=["places"], partition_key=city, instance=instance, resources=defs.resources
        )
    materialize([*defs.assets], selection=CITY_TABLES, partition_key=CITY, instance=instance, resources=defs.resources)
    users = load_latest(instance, AssetKey("users"), [CITY]).column("user_id").to_numpy()
    places = load_latest(instance, AssetKey("places"), list(CITY_SLUGS)).column("place_id").to_numpy()
    valid = load_latest(instance, AssetKey("interactions"), [CITY]).slice(0, 6)
    assert inbox.problems_of(valid, users, places) == []  # each case below breaks exactly one thing
    return instance, root / "inbox", valid


def _replace(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
    )


def _as_text(table: pa.Table, column: str, row: int, value: str) -> pa.Table:
    values = [str(v) for v in table.column(column).to_pylist()]
    values[row] = value
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))


def _future(table: pa.Table, row: int) -> pa.Table:
    ts = table.column("timestamp").to_numpy().copy()
    ts[row] = ts[row] + np.timedelta64(7 * 52 * 20, "D")  # 20 years of whole weeks: the buckets still agree
    return table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(ts, contracts.TIMESTAMP))


def _parquet(table):
    return lambda path: pq.write_table(table, path)


def _csv(table):
    return lambda path: pcsv.write_csv(table, path)


def _bytes(data: bytes):
    return lambda path: path.write_bytes(data)


# name: (file name, writer of the file from the valid events, rows the reason must name
# (None: a file-level reason), texts the reason must contain)
CASES = {
    "missing column": (
        "missing.parquet",
        lambda t: _parquet(t.drop_columns(["dwell_time"])),
        None,
        ["missing column(s) dwell_time"],
    ),
    "wrong type in a CSV cell": (
        "wrong_type.csv",
        lambda t: _csv(_as_text(t, "user_id", 2, "abc")),
        None,
        ["column user_id must be int64", "row 2 ('abc')"],
    ),
    "wrong type in a Parquet column": (
        "wrong_type.parquet",
        lambda t: _parquet(_as_text(t, "dwell_time", 1, "long")),
        None,
        ["column dwell_time must be float", "row 1 ('long')"],
    ),
    "NaN in a numeric field": (
        "nan.parquet",
        lambda t: _parquet(_replace(t, "dwell_time", 3, float("nan"))),
        {3},
        ["dwell_time must be finite"],
    ),
    "unknown user id": (
        "unknown_user.csv",
        lambda t: _csv(_replace(t, "user_id", 1, UNKNOWN)),
        {1},
        ["unknown_user", f"user:place {UNKNOWN}:"],
    ),
    "unknown place id": (
        "unknown_place.parquet",
        lambda t: _parquet(_replace(t, "place_id", 4, UNKNOWN + 7)),
        {4},
        ["unknown_place", f":{UNKNOWN + 7}"],
    ),
    "duplicated rows": (
        "duplicated.parquet",
        lambda t: _parquet(pa.concat_tables([t, t.slice(1, 1)])),
        {6},
        ["duplicate_row: repeats row 1"],
    ),
    "future timestamp": ("future.csv", lambda t: _csv(_future(t, 2)), {2}, ["future_timestamp", "in the future"]),
    "empty Parquet file": ("empty.parquet", lambda t: _parquet(t.slice(0, 0)), None, ["the file has no rows"]),
    "empty CSV file": ("empty.csv", lambda t: _bytes(b""), None, ["cannot read empty.csv as CSV"]),
    "not Parquet at all": (
        "notes.parquet",
        lambda t: _bytes(b'{"this": "is JSON, not Parquet"}\n'),
        None,
        ["cannot read notes.parquet as Parquet"],
    ),
    "not CSV at all": (
        "image.csv",
        lambda t: _bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
        None,
        ["image.csv"],
    ),
}


def _downstream(instance) -> dict[str, int | None]:
    """Storage id of the latest materialization of every city table and unpartitioned asset."""
    keys: dict[str, tuple[str, str | None]] = {f"{name}[{CITY}]": (name, CITY) for name in CITY_TABLES}
    keys.update({name: (name, None) for name in ("hetero_graph", "trained_model", "serving_manifest")})
    return {
        label: getattr(latest_materialization(instance, AssetKey(name), p), "storage_id", None)
        for label, (name, p) in keys.items()
    }


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_file_is_rejected_naming_what_is_wrong_and_nothing_downstream_changes(world, case):
    instance, inbox_dir, valid = world
    name, writer, rows, texts = CASES[case]
    before = _downstream(instance)
    (inbox_dir / CITY).mkdir(parents=True, exist_ok=True)
    writer(valid)(inbox_dir / CITY / name)

    context = build_sensor_context(
        instance=instance, resources={"inbox_settings": InboxSettings(directory=str(inbox_dir))}
    )
    result = automation.interactions_inbox(context)

    assert isinstance(result, SkipReason) and f"{CITY}/{name}" in result.skip_message  # no run requested
    assert not list((inbox_dir / CITY).iterdir())
    assert not list((inbox_dir / inbox.ACCEPTED / CITY).glob(f"*{name}"))
    moved = list((inbox_dir / inbox.REJECTED / CITY).glob(f"*-{name}"))
    assert len(moved) == 1
    reason = Path(f"{moved[0]}.reason.txt").read_text()
    assert reason.startswith(f"{name} was rejected and nothing of it was applied")
    for text in texts:
        assert text in reason, reason
    named = {int(r) for r in re.findall(r"^row (\d+) ", reason, flags=re.MULTILINE)}
    assert named == (rows or set()), reason
    assert _downstream(instance) == before


def test_hidden_files_are_uploads_in_progress_and_wait(world):
    instance, inbox_dir, valid = world
    (inbox_dir / CITY).mkdir(parents=True, exist_ok=True)
    pq.write_table(valid, inbox_dir / CITY / ".upload.parquet")
    assert inbox.pending_files(inbox_dir, CITY) == []
    (inbox_dir / CITY / ".upload.parquet").unlink()
