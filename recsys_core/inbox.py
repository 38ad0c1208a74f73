"""New interaction files dropped per city: read, validate against the contract, file away.

A file is accepted whole or not at all. Accepted files move to `accepted/<city>/` and are
appended by the next `interactions` materialization of that city; rejected ones move to
`rejected/<city>/` next to a `<name>.reason.txt` that says what is wrong (the first
violations, row by row). Nothing is ever partly applied.

Refused: a file that is not Parquet/CSV (or is empty, or cannot be read), a missing column,
a value that is not of its column's type, nulls and NaN, unknown user or place ids, a row
repeated exactly, a timestamp in the future, and every other contract rule of
`validation.validate_interactions`. Rows are numbered from 0, the first data row (a CSV's
header line is not a row). Hidden files (`.name.parquet`) are left alone, so a writer can
upload under a hidden name and rename when complete.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_core import completion, contracts, validation

SUFFIXES = (".parquet", ".csv")
ACCEPTED, REJECTED = "accepted", "rejected"


MAX_ROWS_NAMED = 20  # offending rows named per column whose values do not convert
CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def read_interactions_file(path: Path, given: Collection[str] | None = None) -> pa.Table:
    """A Parquet or CSV file in the interactions contract; ValueError names what does not fit.

    `given`: the columns the world's interactions were given (`given_columns`); a file must carry
    those, and the rest is filled in as the source's were (`completion`). None: every column."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        elif path.suffix == ".csv":
            # Timestamps as text: cast below, so a bad one is reported with its row.
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"timestamp": pa.string()}))
        else:
            raise ValueError(f"unsupported file type {path.suffix!r}; use .parquet or .csv")
    except (pa.ArrowException, OSError) as exc:
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        detail = "".join(c if c.isprintable() else "?" for c in str(exc))[:300]  # no binary junk in the reason
        raise ValueError(f"cannot read {path.name} as {kind} (empty, truncated or another format): {detail}") from exc
    return conform(table, given)


def _uncastable_rows(column: pa.ChunkedArray[Any], target: pa.DataType, chunk: int = 4096) -> list[int]:
    """The first rows whose value does not convert to `target` (casting chunk by chunk, then
    row by row inside a failing chunk, so a large valid file costs one cast)."""
    values = column.combine_chunks()
    rows: list[int] = []
    for start in range(0, len(values), chunk):
        part = values.slice(start, chunk)
        try:
            part.cast(target)
            continue
        except CAST_ERRORS:
            pass
        for i in range(len(part)):
            try:
                part.slice(i, 1).cast(target)
            except CAST_ERRORS:
                rows.append(start + i)
                if len(rows) >= MAX_ROWS_NAMED:
                    return rows
    return rows


def given_columns(interactions: pa.Table) -> frozenset[str]:
    """The columns a world's interactions were given by its source (not filled in), which every new
    file must carry too. A count is never required (one event per row), nor what was derived from
    the others (time buckets from the timestamp)."""
    made = contracts.filled_columns(interactions) | contracts.derived_columns(interactions)
    return frozenset(interactions.column_names) - made - {"count"}


def conform(table: pa.Table, given: Collection[str] | None = None) -> pa.Table:
    """`contracts.conform` for interactions, with the rows named when a column's values do not
    convert to the contract's type. Columns outside `given` (default: all but the count) may be
    left out and are filled in as `completion` fills a source's."""
    schema = contracts.SCHEMAS["interactions"]
    required = (
        set(schema.names) - {"count"} if given is None else set(given) | set(contracts.REQUIRED_COLUMNS["interactions"])
    )
    missing = [f.name for f in schema if f.name in required and f.name not in table.column_names]
    if missing:
        raise ValueError(f"interactions: missing column(s) {', '.join(missing)}")
    problems = []
    for field in schema:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name)
        if column.type == field.type:
            continue
        try:
            column.cast(field.type)
            continue
        except CAST_ERRORS:
            rows = _uncastable_rows(column, field.type)
        if not rows or len(rows) == len(column):
            problems.append(f"column {field.name} is {column.type}, which does not convert to {field.type}")
        else:
            shown = ", ".join(f"row {r} ({column[r].as_py()!r})" for r in rows[:5])
            more = f" (first {len(rows)} named)" if len(rows) >= MAX_ROWS_NAMED else ""
            problems.append(
                f"column {field.name} must be {field.type}; these values are not{more}: {shown}"
                + (f"; rows {rows}" if len(rows) > 5 else "")
            )
    if problems:
        raise ValueError("interactions: " + "; ".join(problems))
    present = [f for f in schema if f.name in table.column_names]
    typed = pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in present], schema=pa.schema(present))
    return completion.complete_interactions(typed)


def problems_of(table: pa.Table, user_ids: np.ndarray, place_ids: np.ndarray) -> list[str]:
    """Every contract violation, as readable lines (empty: the file may be appended)."""
    if table.num_rows == 0:
        return ["the file has no rows"]
    now = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None))
    violations = validation.validate_interactions(table, user_ids, place_ids, now=now, unique_rows=True)
    return [f"row {r.row} (user:place {r.key}): {r.rule}: {r.reason}" for r in violations.itertuples()]


@dataclass(frozen=True)
class Triage:
    city: str
    source: Path
    destination: Path
    problems: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.problems


def pending_files(inbox: Path, city: str) -> list[Path]:
    """The city's dropped files, oldest name first; hidden files (uploads in progress) wait."""
    directory = Path(inbox) / city
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


def triage(
    path: Path,
    inbox: Path,
    city: str,
    user_ids: np.ndarray,
    place_ids: np.ndarray,
    given: Collection[str] | None = None,
) -> Triage:
    """Validate one dropped file and move it to accepted/ or rejected/ (with a reason file);
    `given` as in `read_interactions_file`."""
    try:
        problems = problems_of(read_interactions_file(path, given), user_ids, place_ids)
    except ValueError as exc:
        problems = [str(exc)]
    folder = Path(inbox) / (REJECTED if problems else ACCEPTED) / city
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{path.name}"
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        (folder / f"{destination.name}.reason.txt").write_text(
            f"{path.name} was rejected and nothing of it was applied "
            f"(rows are numbered from 0, the first data row):\n" + "\n".join(shown) + "\n"
        )
    shutil.move(str(path), destination)
    return Triage(city, Path(path), destination, tuple(problems))


def append(existing: pa.Table, new: pa.Table) -> pa.Table:
    """The city's interactions with the new events added, in time order (keeping what the existing
    ones record of their provenance)."""
    return pa.concat_tables(
        [contracts.conform(existing, "interactions"), new.replace_schema_metadata(existing.schema.metadata)]
    ).sort_by("timestamp")
