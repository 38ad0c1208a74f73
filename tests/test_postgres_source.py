"""The PostgreSQL world source against a real server (`postgres_dsn`): each test in its own schema."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from recsys_core import contracts
from recsys_core.sources import SourceError
from recsys_core.sources import postgres as pg
from recsys_core.sources.postgres import read_postgres, write_world_to_postgres
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world
from recsys_core.vocabulary import BUILTIN, Vocabulary, VocabularyError
from tests.postgres_server import _free_port

# Not the built-in one: a city without neighbourhoods, a tag without a category, two time slots.
SMALL_VOCABULARY = Vocabulary.from_dict(
    {
        "cities": ["Springfield", "Shelbyville"],
        "neighborhoods": {"Springfield": ["Old Town", "Docks"]},
        "categories": ["food", "music"],
        "tags": [{"name": "pizza", "category": "food"}, {"name": "jazz", "category": "music"}, "misc"],
        "vibes": ["cosy"],
        "time_slots": ["day", "night"],
        "slot_of_bucket": [[0, 0], [0, 0], [1, 1], [1, 1]],
        "price_bands": ["$", "$$"],
    }
)


@pytest.fixture
def schema(postgres_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    name = re.sub(r"\W+", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def small_world() -> dict[str, pa.Table]:
    return generate_world(WorldConfig(n_users=300, n_places=300, seed=1))


def execute(dsn: str, schema: str, statement: str, params: tuple[object, ...] = ()) -> None:
    """Run `statement` with `schema` first on the search path."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(statement, params)


def in_order(table: pa.Table) -> pa.Table:
    """Rows sorted by every scalar column: a table's row order is not part of what it means."""
    return table.sort_by([(f.name, "ascending") for f in table.schema if not pa.types.is_nested(f.type)])


def test_round_trip_of_a_synthetic_world(postgres_dsn, schema, small_world, monkeypatch):
    monkeypatch.setattr(pg, "CHUNK_ROWS", 20_000)  # several chunks for interactions
    write_world_to_postgres(postgres_dsn, small_world, BUILTIN, schema=schema)
    raw = read_postgres(postgres_dsn, schema=schema)

    assert raw.vocabulary == BUILTIN
    assert set(raw.tables) == set(small_world)
    schemas = contracts.world_schemas(BUILTIN)
    for name, table in small_world.items():
        got = raw.tables[name]
        expected = schemas[name]
        for field in contracts.optional_fields(table, name):  # the synthetic users' display names, as text
            expected = expected.append(field)
        assert got.schema.equals(expected), name
        assert in_order(got).equals(in_order(table)), name


def test_round_trip_of_another_vocabulary(postgres_dsn, schema):
    write_world_to_postgres(postgres_dsn, {}, SMALL_VOCABULARY, schema=schema)
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT name, parent FROM {} WHERE kind = 'time_slot' ORDER BY position").format(
                sql.Identifier(schema, "vocabulary")
            )
        ).fetchall()
    assert rows == [("day", "0:0 0:1 1:0 1:1"), ("night", "2:0 2:1 3:0 3:1")]
    # A world needs its tables too: the vocabulary alone is refused, naming them.
    with pytest.raises(SourceError, match="no table users, places, interactions"):
        read_postgres(postgres_dsn, schema=schema)
    for name, columns in contracts.REQUIRED_COLUMNS.items():
        if name in pg.REQUIRED_TABLES:
            execute(postgres_dsn, schema, f"CREATE TABLE {name} ({', '.join(c + ' bigint' for c in columns)})")
    assert read_postgres(postgres_dsn, schema=schema).vocabulary == SMALL_VOCABULARY


def test_partial_world_reads_only_its_columns(postgres_dsn, schema):
    write_world_to_postgres(postgres_dsn, {}, SMALL_VOCABULARY, schema=schema)
    execute(
        postgres_dsn,
        schema,
        """
        CREATE TABLE users (user_id bigint, home_city_id integer);
        INSERT INTO users VALUES (1, 0), (2, 1);
        CREATE TABLE places (place_id bigint, city_id integer);
        INSERT INTO places VALUES (10, 0), (11, 1), (12, 0);
        CREATE TABLE interactions (user_id bigint, place_id bigint, "timestamp" timestamptz);
        INSERT INTO interactions VALUES (1, 10, '2024-05-01 10:00+02'), (2, 11, NULL);
        """,
    )
    raw = read_postgres(postgres_dsn, schema=schema)

    assert set(raw.tables) == {"users", "places", "interactions"}  # no social tables: none read
    assert raw.tables["users"].schema == pa.schema([("user_id", pa.int64()), ("home_city_id", pa.int32())])
    assert raw.tables["places"].schema == pa.schema([("place_id", pa.int64()), ("city_id", pa.int32())])
    interactions = raw.tables["interactions"]
    assert interactions.schema == pa.schema(
        [("user_id", pa.int64()), ("place_id", pa.int64()), ("timestamp", contracts.TIMESTAMP)]
    )
    assert interactions.column("timestamp").to_pylist()[0].isoformat() == "2024-05-01T08:00:00+00:00"
    assert interactions.column("timestamp").null_count == 1
    assert raw.tables["places"].column("place_id").to_pylist() == [10, 11, 12]


def test_column_types(postgres_dsn, schema, monkeypatch):
    monkeypatch.setattr(pg, "CHUNK_ROWS", 2)  # a column's type must not depend on where a chunk ends
    write_world_to_postgres(postgres_dsn, {}, SMALL_VOCABULARY, schema=schema)
    execute(
        postgres_dsn,
        schema,
        """
        CREATE TABLE users (
            user_id bigint, home_city_id smallint, cat_pref real[], fine_pref double precision[],
            area_freqs jsonb, extra json, seen timestamp, active boolean, score double precision, note text
        );
        INSERT INTO users VALUES
            (1, 0, '{0.5,0.5}', '{0.25,0,0.75}', '{"10": 0.5, "2": 1}', '{"a": 1}', '2024-01-01 12:00', true, 1.5, 'x'),
            (2, 1, '{1,0}', '{1,0,0}', '{}', '{"1": 2}', NULL, NULL, NULL, NULL),
            (3, 1, NULL, '{0,1,0}', NULL, '[1, 2]', '2024-01-02 00:00', false, 2, 'y'),
            (4, 0, '{0,1}', '{0,0,1}', '{"0": 0.125}', NULL, NULL, true, 0, 'z');
        CREATE TABLE places (place_id bigint, city_id integer, category_ids integer[], fine_tag_vector real[]);
        INSERT INTO places VALUES (10, 0, '{0,1}', '{1,0}'), (11, 1, '{}', '{1,0,0}'), (12, 0, NULL, NULL);
        CREATE TABLE interactions (user_id bigint, place_id bigint, dwell_time real, attended boolean);
        """,
    )
    raw = read_postgres(postgres_dsn, schema=schema)
    users, places = raw.tables["users"], raw.tables["places"]

    assert dict(zip(users.column_names, users.schema.types, strict=True)) == {
        "user_id": pa.int64(),
        "home_city_id": pa.int32(),
        "cat_pref": pa.list_(pa.float32(), 2),  # every row as long: fixed size
        "fine_pref": pa.list_(pa.float32(), 3),  # double precision[] too
        "area_freqs": pa.map_(pa.int32(), pa.float32()),
        "extra": pa.string(),  # not an int -> number object throughout: its JSON text
        "seen": contracts.TIMESTAMP,  # naive, taken as UTC
        "active": pa.bool_(),
        "score": pa.float64(),
        "note": pa.string(),
    }
    assert users.column("cat_pref").to_pylist() == [[0.5, 0.5], [1.0, 0.0], None, [0.0, 1.0]]
    assert users.column("area_freqs").to_pylist() == [[(2, 1.0), (10, 0.5)], [], None, [(0, 0.125)]]
    assert users.column("extra").to_pylist() == ['{"a": 1}', '{"1": 2}', "[1, 2]", None]
    assert users.column("seen").to_pylist()[0].isoformat() == "2024-01-01T12:00:00+00:00"
    # Rows of different lengths stay a variable list (the schema check then names the column).
    assert places.schema.field("fine_tag_vector").type == pa.list_(pa.float32())
    assert places.schema.field("category_ids").type == pa.list_(pa.int32())
    assert places.column("category_ids").to_pylist() == [[0, 1], [], None]
    # An empty table still has its contract's types.
    assert raw.tables["interactions"].num_rows == 0
    assert raw.tables["interactions"].schema.field("dwell_time").type == pa.float32()


def test_missing_required_table_is_named(postgres_dsn, schema, small_world):
    tables = {name: small_world[name] for name in ("users", "places")}
    write_world_to_postgres(postgres_dsn, tables, BUILTIN, schema=schema)
    with pytest.raises(SourceError, match=r"no table interactions \(a world needs users, places and interactions\)"):
        read_postgres(postgres_dsn, schema=schema)


def test_missing_schema(postgres_dsn):
    with pytest.raises(SourceError, match="'no_such_schema': no such schema"):
        read_postgres(postgres_dsn, schema="no_such_schema")


def test_missing_vocabulary_table(postgres_dsn, schema, small_world):
    write_world_to_postgres(postgres_dsn, small_world, BUILTIN, schema=schema)
    execute(postgres_dsn, schema, "DROP TABLE vocabulary")
    with pytest.raises(SourceError, match="no vocabulary table") as raised:
        read_postgres(postgres_dsn, schema=schema)
    assert "kind text, name text, parent text NULL, position int NULL" in str(raised.value)


def test_bad_time_slot_buckets_are_named(postgres_dsn, schema, small_world):
    write_world_to_postgres(postgres_dsn, {"users": small_world["users"].slice(0, 0)}, SMALL_VOCABULARY, schema=schema)
    execute(postgres_dsn, schema, "CREATE TABLE places (place_id bigint, city_id integer)")
    execute(postgres_dsn, schema, "CREATE TABLE interactions (user_id bigint, place_id bigint)")
    # night takes morning-weekday (already day's) and leaves night-weekend (3:1) to no slot.
    execute(postgres_dsn, schema, "UPDATE vocabulary SET parent = '2:0 2:1 3:0 0:0' WHERE name = 'night'")
    with pytest.raises(SourceError, match=r"uncovered 3:1; covered more than once 0:0 \(day, night\)"):
        read_postgres(postgres_dsn, schema=schema)

    execute(postgres_dsn, schema, "UPDATE vocabulary SET parent = '2:0 2:1 3:0 3:1 4:0' WHERE name = 'night'")
    with pytest.raises(SourceError, match=r"time_slot 'night'.*bucket '4:0' is not T:W"):
        read_postgres(postgres_dsn, schema=schema)


def test_bad_vocabulary_rows(postgres_dsn, schema):
    write_world_to_postgres(postgres_dsn, {}, SMALL_VOCABULARY, schema=schema)
    for name, columns in contracts.REQUIRED_COLUMNS.items():
        if name in pg.REQUIRED_TABLES:
            execute(postgres_dsn, schema, f"CREATE TABLE {name} ({', '.join(c + ' bigint' for c in columns)})")
    execute(postgres_dsn, schema, "INSERT INTO vocabulary VALUES ('colour', 'red', NULL, 0)")
    with pytest.raises(SourceError, match=r"vocabulary row \d+ \(colour 'red'\): unknown kind 'colour'"):
        read_postgres(postgres_dsn, schema=schema)

    # The vocabulary's own checks still run (a VocabularyError is a ValueError naming the problem).
    execute(postgres_dsn, schema, "UPDATE vocabulary SET kind = 'tag', parent = 'drinks' WHERE name = 'red'")
    with pytest.raises(VocabularyError, match="tag 'red' has unknown category 'drinks'"):
        read_postgres(postgres_dsn, schema=schema)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://recsys:s3cret-Passw0rd@127.0.0.1:{port}/world?connect_timeout=5",
        "host=127.0.0.1 port={port} user=recsys password=s3cret-Passw0rd dbname=world connect_timeout=5",
    ],
)
def test_unreachable_server_hides_the_password(dsn):
    with pytest.raises(SourceError, match="cannot connect") as raised:
        read_postgres(dsn.format(port=_free_port()))
    message = str(raised.value)
    assert "s3cret" not in message
    assert "password=***" in message
    assert "\n" not in message


def test_bad_dsn_hides_the_password():
    with pytest.raises(SourceError, match="not a valid PostgreSQL DSN") as raised:
        read_postgres("host=localhost password=s3cret Passw0rd")
    assert "s3cret" not in str(raised.value)
    assert "Passw0rd" not in str(raised.value)
