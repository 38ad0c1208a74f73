"""The PostgreSQL world source: a world's tables and vocabulary read from one schema of a database.

`read_postgres(dsn, schema)` reads `users`, `places` and `interactions` (required),
`user_user_edges` and `friend_labels` (when the schema has them) with whatever columns each has,
and the world's names from a `vocabulary` table. Column types map to the contract's Arrow types
(bigint -> int64, integer -> int32, real -> float32, timestamptz -> timestamp[us, UTC], real[] ->
list<float32>, a jsonb object of int -> number -> map<int32, float32>, ...), so the same
completion and asset checks as for any other source decide whether the data is a world.

Tables stream through a server-side cursor in chunks, all in one read-only repeatable-read
transaction so the tables are one consistent snapshot even while the database is written to.

`write_world_to_postgres` is the inverse: it seeds a database from contract tables (tests, examples).

Errors are `SourceError`s with one-line messages; a DSN's password never appears in them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.postgres import types as pg_types
from psycopg.types.json import Jsonb

from recsys_core import contracts
from recsys_core.sources.base import RawWorld, SourceError
from recsys_core.vocabulary import N_DAY_OF_WEEK_BUCKETS, N_TIME_OF_DAY_BUCKETS, NO_CATEGORY, Vocabulary

logger = logging.getLogger(__name__)

REQUIRED_TABLES = ("users", "places", "interactions")
OPTIONAL_TABLES = contracts.OPTIONAL_TABLES
VOCABULARY_TABLE = "vocabulary"
VOCABULARY_COLUMNS = "kind text, name text, parent text NULL, position int NULL"
CHUNK_ROWS = 50_000  # rows fetched from the server at a time
CONNECT_TIMEOUT_S = 10  # unless the DSN sets connect_timeout

# vocabulary.kind: which list of the vocabulary a row names
_KINDS = ("city", "neighborhood", "category", "tag", "vibe", "price_band", "time_slot")
_BUCKET = re.compile(r"^(\d+):(\d+)$")

# ---------------------------------------------------------------------------- types


def _oid(name: str, array: bool = False) -> int:
    info = pg_types.get(name)
    if info is None:  # every name below is a built-in PostgreSQL type
        raise LookupError(name)
    return info.array_oid if array else info.oid


_SCALAR_TYPES: dict[int, pa.DataType] = {
    _oid("int8"): pa.int64(),
    _oid("int4"): pa.int32(),
    _oid("int2"): pa.int32(),
    _oid("float4"): pa.float32(),
    _oid("float8"): pa.float64(),
    _oid("numeric"): pa.float64(),
    _oid("bool"): pa.bool_(),
    _oid("timestamptz"): contracts.TIMESTAMP,
    _oid("timestamp"): contracts.TIMESTAMP,  # naive timestamps are taken as UTC
    _oid("date"): pa.date32(),
    **{_oid(name): pa.string() for name in ("text", "varchar", "bpchar", "name")},
}
_ARRAY_TYPES: dict[int, pa.DataType] = {
    _oid("int2", array=True): pa.list_(pa.int32()),
    _oid("int4", array=True): pa.list_(pa.int32()),
    _oid("int8", array=True): pa.list_(pa.int64()),
    _oid("float4", array=True): pa.list_(pa.float32()),
    _oid("float8", array=True): pa.list_(pa.float32()),
    _oid("bool", array=True): pa.list_(pa.bool_()),
    **{_oid(name, array=True): pa.list_(pa.string()) for name in ("text", "varchar", "bpchar")},
}
_NUMERIC_OID = _oid("numeric")  # Decimal values, read as float64
_JSON_OIDS = frozenset({_oid("json"), _oid("jsonb")})
AREA_MAP = pa.map_(pa.int32(), pa.float32())
_WIDE_MAP = pa.map_(pa.int32(), pa.float64())  # while reading: exact until the column is known to be a map


def _sql_type(name: str, arrow: pa.DataType) -> str:
    """The PostgreSQL column type a contract column is written as (the inverse of the reader's)."""
    if pa.types.is_map(arrow):
        if pa.types.is_integer(arrow.key_type) and pa.types.is_floating(arrow.item_type):
            return "jsonb"
    elif pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_fixed_size_list(arrow):
        inner = _scalar_sql_type(arrow.value_type)
        if inner is not None:
            return inner + "[]"
    else:
        scalar = _scalar_sql_type(arrow)
        if scalar is not None:
            return scalar
    raise SourceError(f"column {name}: cannot write Arrow type {arrow} to PostgreSQL")


def _scalar_sql_type(arrow: pa.DataType) -> str | None:
    if pa.types.is_int64(arrow) or pa.types.is_uint32(arrow):
        return "bigint"
    if pa.types.is_int32(arrow) or pa.types.is_uint16(arrow):
        return "integer"
    if pa.types.is_int16(arrow) or pa.types.is_int8(arrow) or pa.types.is_uint8(arrow):
        return "smallint"
    if pa.types.is_float32(arrow) or pa.types.is_float16(arrow):
        return "real"
    if pa.types.is_float64(arrow):
        return "double precision"
    if pa.types.is_boolean(arrow):
        return "boolean"
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return "text"
    if pa.types.is_timestamp(arrow):
        return "timestamptz" if arrow.tz else "timestamp"
    if pa.types.is_date(arrow):
        return "date"
    return None


# ---------------------------------------------------------------------------- DSNs and errors


def _secrets(dsn: str) -> list[str]:
    """What of `dsn` must not be shown: its password, or for a DSN libpq cannot parse, everything
    after a `password` keyword and between a URL's `user:` and `@`."""
    try:
        password = conninfo_to_dict(dsn).get("password")
        return [str(password)] if password else []
    except psycopg.Error:
        pass
    found = re.findall(r"://[^:/@\s]*:([^@\s]+)@", dsn)
    at = dsn.lower().find("password")
    if at >= 0:
        found.extend(t for t in re.split(r"[\s&=]+", dsn[at + len("password") :]) if t)
    return found


def _scrub(text: str, dsn: str) -> str:
    """`text` on one line with the DSN's secrets masked."""
    line = " ".join(str(text).split())
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        line = line.replace(secret, "***")
    return line


def _describe(dsn: str) -> str:
    """The DSN as shown in messages: its parameters with the password masked."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return _scrub(dsn, dsn)
    if "password" in params:
        params["password"] = "***"  # noqa: S105  # the mask, not a password
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}) or "(default connection)"


def _fail(dsn: str, what: str, exc: BaseException) -> NoReturn:
    raise SourceError(f"PostgreSQL {_describe(dsn)}: {what}: {_scrub(str(exc), dsn)}") from None


def _connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise SourceError(f"not a valid PostgreSQL DSN ({_scrub(str(exc), dsn)})") from None
    timeout = {} if "connect_timeout" in params else {"connect_timeout": str(CONNECT_TIMEOUT_S)}
    try:  # autocommit: each read or write is one explicit `conn.transaction()`
        conn = psycopg.connect(make_conninfo(dsn, **timeout), autocommit=True)
    except psycopg.Error as exc:
        _fail(dsn, "cannot connect", exc)
    try:
        conn.execute("SET TIME ZONE 'UTC'")  # timestamptz values arrive as UTC datetimes
    except psycopg.Error as exc:
        conn.close()
        _fail(dsn, "cannot set the session time zone", exc)
    return conn


def _relations(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> set[str] | None:
    """Names of the tables and views in `schema`, or None when there is no such schema."""
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        (schema,),
    ).fetchall()
    return {str(r[0]) for r in rows}


# ---------------------------------------------------------------------------- reading


def read_postgres(dsn: str, schema: str = "public") -> RawWorld:
    """The world in `schema` of the database at `dsn` (a libpq connection string or URL)."""
    conn = _connect(dsn)
    try:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            return _read_world(conn, dsn, schema)
    except psycopg.Error as exc:
        _fail(dsn, f"reading schema {schema!r}", exc)
    finally:
        conn.close()


def _read_world(conn: psycopg.Connection[tuple[Any, ...]], dsn: str, schema: str) -> RawWorld:
    where = f"PostgreSQL {_describe(dsn)} schema {schema!r}"
    relations = _relations(conn, schema)
    if relations is None:
        raise SourceError(f"{where}: no such schema")
    problems = []
    missing = [t for t in REQUIRED_TABLES if t not in relations]
    if missing:
        problems.append(f"no table {', '.join(missing)} (a world needs users, places and interactions)")
    if VOCABULARY_TABLE not in relations:
        problems.append(
            f"no {VOCABULARY_TABLE} table: a world needs one with columns {VOCABULARY_COLUMNS}"
            f" (kinds {', '.join(_KINDS)})"
        )
    if problems:
        raise SourceError(f"{where}: " + "; ".join(problems))
    vocabulary = _read_vocabulary(conn, schema, where)
    schemas = contracts.world_schemas(vocabulary)
    tables = {}
    for name in (*REQUIRED_TABLES, *OPTIONAL_TABLES):
        if name in relations:
            try:
                tables[name] = _read_table(conn, schema, name, schemas[name])
            except psycopg.Error as exc:
                raise SourceError(f"{where}: reading table {name}: {' '.join(str(exc).split())}") from None
    return RawWorld(vocabulary=vocabulary, tables=tables)


@dataclass
class _Column:
    """One column being read: its values converted chunk by chunk."""

    table: str
    name: str
    oid: int
    chunks: list[pa.Array[Any]] = field(default_factory=list)
    json_as_text: bool = False  # a json column that is not an int -> number object throughout

    @property
    def arrow_type(self) -> pa.DataType | None:
        if self.oid in _JSON_OIDS:
            return pa.string() if self.json_as_text else _WIDE_MAP
        return _SCALAR_TYPES.get(self.oid) or _ARRAY_TYPES.get(self.oid)

    def add(self, values: Sequence[Any]) -> None:
        try:
            if self.oid in _JSON_OIDS:
                self._add_json(values)
            elif self.oid == _NUMERIC_OID:
                self.chunks.append(pa.array([None if v is None else float(v) for v in values], pa.float64()))
            elif (known := self.arrow_type) is not None:
                self.chunks.append(pa.array(values, known))
            else:  # another type (uuid, interval, an enum ...): as Arrow infers it, else as text
                try:
                    self.chunks.append(pa.array(values))
                except (pa.ArrowException, TypeError, ValueError):
                    self.chunks.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise SourceError(f"{self.table}.{self.name}: cannot read as Arrow: {exc}") from None

    def _add_json(self, values: Sequence[Any]) -> None:
        if not self.json_as_text:
            entries = [_int_float_items(v) for v in values]
            if all(e is not False for e in entries):
                self.chunks.append(pa.array(entries, _WIDE_MAP))
                return
            self.json_as_text = True  # earlier chunks were maps: turn them back into JSON text
            self.chunks = [_maps_as_json(chunk) for chunk in self.chunks]
        self.chunks.append(pa.array([None if v is None else json.dumps(v) for v in values], pa.string()))

    def finish(self, fixed_width: int | None) -> pa.ChunkedArray[Any]:
        """The column; a contract vector column of equal-length rows as a fixed-size list."""
        arrow = self.arrow_type
        if arrow is None:  # inferred: one type if every chunk agrees, else text
            inferred = {c.type for c in self.chunks} - {pa.null()}
            arrow = inferred.pop() if len(inferred) == 1 else pa.string()
            self.chunks = [c if c.type == arrow else c.cast(arrow) for c in self.chunks]
        column: pa.ChunkedArray[Any] = pa.chunked_array(self.chunks, type=arrow)  # type: ignore[arg-type]
        if arrow == _WIDE_MAP:
            column = column.cast(AREA_MAP)
        if fixed_width is not None and arrow == pa.list_(pa.float32()):
            lengths = pc.unique(pc.list_value_length(column).drop_null()).to_pylist()
            width = lengths[0] if len(lengths) == 1 else fixed_width if not lengths else None
            if width is not None:
                column = column.cast(pa.list_(pa.float32(), width))
        return column


def _int_float_items(value: Any) -> list[tuple[int, float]] | None | bool:
    """A JSON object of int -> number as sorted map entries, None for NULL, False for anything else."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return False
    items = []
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float):
            return False
        try:
            items.append((int(key), float(item)))
        except ValueError:
            return False
    return sorted(items)


def _maps_as_json(chunk: pa.Array[Any]) -> pa.Array[Any]:
    rows = chunk.to_pylist()
    return pa.array([None if r is None else json.dumps({str(k): v for k, v in r}) for r in rows], pa.string())


def _fixed_widths(schema: pa.Schema) -> dict[str, int]:
    return {f.name: f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)}


def _read_table(conn: psycopg.Connection[tuple[Any, ...]], schema: str, name: str, contract: pa.Schema) -> pa.Table:
    widths = _fixed_widths(contract)
    query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, name))
    with conn.cursor(name=f"recsys_read_{name}") as cursor:  # server-side: rows stream in chunks
        cursor.execute(query)
        columns = [_Column(f"{schema}.{name}", d.name, d.type_code) for d in cursor.description or ()]
        n_rows = 0
        while rows := cursor.fetchmany(CHUNK_ROWS):
            for column, values in zip(columns, zip(*rows, strict=True), strict=True):
                column.add(values)
            n_rows += len(rows)
            logger.info("postgres %s.%s: %d rows read", schema, name, n_rows)
    table = pa.Table.from_arrays([c.finish(widths.get(c.name)) for c in columns], names=[c.name for c in columns])
    logger.info("postgres %s.%s: %d rows, %d columns", schema, name, table.num_rows, table.num_columns)
    return table


# ---------------------------------------------------------------------------- the vocabulary


@dataclass(frozen=True)
class _Entry:
    kind: str
    name: str
    parent: str | None
    position: int | None
    row: int

    def __str__(self) -> str:
        parent = f", parent {self.parent!r}" if self.parent is not None else ""
        return f"{VOCABULARY_TABLE} row {self.row + 1} ({self.kind} {self.name!r}{parent})"


def _read_vocabulary(conn: psycopg.Connection[tuple[Any, ...]], schema: str, where: str) -> Vocabulary:
    query = sql.SQL("SELECT kind, name, parent, position FROM {}").format(sql.Identifier(schema, VOCABULARY_TABLE))
    try:
        rows = conn.execute(query).fetchall()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.DatatypeMismatch) as exc:
        raise SourceError(
            f"{where}: the {VOCABULARY_TABLE} table needs columns {VOCABULARY_COLUMNS} ({' '.join(str(exc).split())})"
        ) from None
    entries = []
    for i, (kind, name, parent, position) in enumerate(rows):
        normalized = str(kind).strip().lower() if kind is not None else ""
        entry = _Entry(normalized, "" if name is None else str(name), parent, position, i)
        if normalized not in _KINDS:
            raise SourceError(f"{where}: {entry}: unknown kind {kind!r}; kinds: {', '.join(_KINDS)}")
        if not entry.name.strip():
            raise SourceError(f"{where}: {entry}: no name")
        if position is not None and not isinstance(position, int):
            raise SourceError(f"{where}: {entry}: position must be an integer")
        entries.append(entry)
    logger.info("postgres %s.%s: %d names", schema, VOCABULARY_TABLE, len(entries))
    return _vocabulary_from_entries(entries, where)


def _vocabulary_from_entries(entries: Iterable[_Entry], where: str = VOCABULARY_TABLE) -> Vocabulary:
    """The vocabulary of `vocabulary` rows: each kind in `position` order (then row order)."""
    by_kind: dict[str, list[_Entry]] = {kind: [] for kind in _KINDS}
    for entry in entries:
        by_kind[entry.kind].append(entry)
    for kind in by_kind:
        by_kind[kind].sort(key=lambda e: (e.position is None, e.position or 0, e.row))

    def names(kind: str) -> list[str]:
        return [e.name for e in by_kind[kind]]

    neighborhoods: dict[str, list[str]] = {}
    for entry in by_kind["neighborhood"]:
        if entry.parent is None:
            raise SourceError(f"{where}: {entry}: a neighborhood needs its city's name as parent")
        neighborhoods.setdefault(entry.parent, []).append(entry.name)
    raw: dict[str, object] = {
        "cities": names("city"),
        "neighborhoods": neighborhoods,
        "categories": names("category"),
        "tags": [{"name": e.name, "category": e.parent} for e in by_kind["tag"]],
        "vibes": names("vibe"),
        "time_slots": names("time_slot"),
        "slot_of_bucket": _slot_of_bucket(by_kind["time_slot"], where),
        "price_bands": names("price_band"),
    }
    return Vocabulary.from_dict(raw)


def _slot_of_bucket(slots: Sequence[_Entry], where: str) -> list[list[int]]:
    """[time_of_day][day_of_week] -> slot, from each slot's `parent`: its buckets as "T:W" pairs."""
    if not slots:
        return []
    covered: dict[tuple[int, int], list[int]] = {}
    for index, entry in enumerate(slots):
        for token in (entry.parent or "").split():
            match = _BUCKET.match(token)
            bucket = (int(match.group(1)), int(match.group(2))) if match else None
            if bucket is None or not (
                0 <= bucket[0] < N_TIME_OF_DAY_BUCKETS and 0 <= bucket[1] < N_DAY_OF_WEEK_BUCKETS
            ):
                raise SourceError(
                    f"{where}: {entry}: bucket {token!r} is not T:W with time of day T"
                    f" in 0..{N_TIME_OF_DAY_BUCKETS - 1} (morning, afternoon, evening, night)"
                    f" and W in 0..{N_DAY_OF_WEEK_BUCKETS - 1} (weekday, weekend)"
                )
            covered.setdefault(bucket, []).append(index)
    every = [(t, w) for t in range(N_TIME_OF_DAY_BUCKETS) for w in range(N_DAY_OF_WEEK_BUCKETS)]
    uncovered = [f"{t}:{w}" for t, w in every if (t, w) not in covered]
    repeated = [
        f"{t}:{w} ({', '.join(slots[i].name for i in covered[t, w])})"
        for t, w in every
        if len(covered.get((t, w), ())) > 1
    ]
    if uncovered or repeated:
        problems = ([f"uncovered {', '.join(uncovered)}"] if uncovered else []) + (
            [f"covered more than once {', '.join(repeated)}"] if repeated else []
        )
        raise SourceError(
            f"{where}: time slots must cover each time-of-day:weekday bucket T:W exactly once"
            f" (as space-separated T:W in parent): {'; '.join(problems)}"
        )
    return [[covered[t, w][0] for w in range(N_DAY_OF_WEEK_BUCKETS)] for t in range(N_TIME_OF_DAY_BUCKETS)]


def vocabulary_rows(vocabulary: Vocabulary) -> list[tuple[str, str, str | None, int]]:
    """The `vocabulary` table's rows (kind, name, parent, position) of a vocabulary."""
    rows: list[tuple[str, str, str | None, int]] = [("city", c, None, i) for i, c in enumerate(vocabulary.cities)]
    for city, names in zip(vocabulary.cities, vocabulary.neighborhoods, strict=True):
        rows.extend(("neighborhood", n, city, i) for i, n in enumerate(names))
    rows.extend(("category", c, None, i) for i, c in enumerate(vocabulary.categories))
    rows.extend(
        ("tag", t, vocabulary.categories[c] if c != NO_CATEGORY else None, i)
        for i, (t, c) in enumerate(zip(vocabulary.tags, vocabulary.tag_category, strict=True))
    )
    rows.extend(("vibe", v, None, i) for i, v in enumerate(vocabulary.vibes))
    rows.extend(("price_band", p, None, i) for i, p in enumerate(vocabulary.price_bands))
    for i, slot in enumerate(vocabulary.time_slots):
        buckets = [f"{t}:{w}" for t, row in enumerate(vocabulary.slot_of_bucket) for w, s in enumerate(row) if s == i]
        rows.append(("time_slot", slot, " ".join(buckets) or None, i))
    return rows


# ---------------------------------------------------------------------------- writing


def write_world_to_postgres(
    dsn: str, tables: Mapping[str, pa.Table], vocabulary: Vocabulary, schema: str = "public"
) -> None:
    """Seed `schema` with `tables` and the vocabulary, replacing tables of the same names, in one
    transaction; `read_postgres` reads back the same tables."""
    if VOCABULARY_TABLE in tables:
        raise SourceError(f"a world table cannot be called {VOCABULARY_TABLE!r}: that table holds the vocabulary")
    conn = _connect(dsn)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for name, table in tables.items():
                _write_table(conn, schema, name, table)
            _write_rows(
                conn,
                schema,
                VOCABULARY_TABLE,
                [("kind", "text"), ("name", "text"), ("parent", "text"), ("position", "integer")],
                vocabulary_rows(vocabulary),
            )
    except psycopg.Error as exc:
        _fail(dsn, f"writing schema {schema!r}", exc)
    finally:
        conn.close()


def _python_values(column: pa.ChunkedArray[Any] | pa.Array[Any]) -> Callable[[], list[Any]]:
    """A column's values as COPY takes them (maps as jsonb objects)."""
    if pa.types.is_map(column.type):
        return lambda: [None if r is None else Jsonb({str(k): v for k, v in r}) for r in column.to_pylist()]
    if pa.types.is_timestamp(column.type) and column.type.unit != "us":
        column = column.cast(pa.timestamp("us", tz=column.type.tz))
    return column.to_pylist


def _write_table(conn: psycopg.Connection[tuple[Any, ...]], schema: str, name: str, table: pa.Table) -> None:
    columns = [(f.name, _sql_type(f"{name}.{f.name}", f.type)) for f in table.schema]
    batches = table.to_batches(max_chunksize=CHUNK_ROWS)
    rows = (row for batch in batches for row in zip(*(_python_values(c)() for c in batch.columns), strict=True))
    _write_rows(conn, schema, name, columns, rows)
    logger.info("postgres %s.%s: %d rows written", schema, name, table.num_rows)


def _write_rows(
    conn: psycopg.Connection[tuple[Any, ...]],
    schema: str,
    name: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
) -> None:
    target = sql.Identifier(schema, name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))  # t: one of _sql_type's names
        for c, t in columns
    )
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(target, definitions))
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, names)
    with conn.cursor() as cursor, cursor.copy(copy_in) as copy:
        copy.set_types([t for _, t in columns])
        for row in rows:
            copy.write_row(row)
