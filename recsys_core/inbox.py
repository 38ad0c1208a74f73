"""New interaction files dropped per city: read, validate against the contract, file away.

A file is accepted whole or not at all. Accepted files move to `accepted/<city>/` and are
appended by the next `interactions` materialization of that city; rejected ones move to
`rejected/<city>/` next to a `<name>.reason.txt` that says what is wrong (the first
violations, row by row). Nothing is ever partly applied.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_core import contracts, validation

SUFFIXES = (".parquet", ".csv")
ACCEPTED, REJECTED = "accepted", "rejected"


def read_interactions_file(path: Path) -> pa.Table:
    """A Parquet or CSV file in the interactions contract; ValueError names what does not fit."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        elif path.suffix == ".csv":
            options = pcsv.ConvertOptions(column_types={"timestamp": pa.timestamp("us", tz="UTC")})
            table = pcsv.read_csv(path, convert_options=options)
        else:
            raise ValueError(f"unsupported file type {path.suffix!r}; use .parquet or .csv")
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"cannot read {path.name}: {exc}") from exc
    return contracts.conform(table, "interactions")


def problems_of(table: pa.Table, user_ids: np.ndarray, place_ids: np.ndarray) -> list[str]:
    """Every contract violation, as readable lines (empty: the file may be appended)."""
    if table.num_rows == 0:
        return ["the file has no rows"]
    now = np.datetime64(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    violations = validation.validate_interactions(table, user_ids, place_ids, now=now)
    return [f"row {r.row} ({r.key}): {r.rule}: {r.reason}" for r in violations.itertuples()]


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
    directory = Path(inbox) / city
    return sorted(p for p in directory.glob("*") if p.suffix in SUFFIXES) if directory.exists() else []


def triage(path: Path, inbox: Path, city: str, user_ids: np.ndarray, place_ids: np.ndarray) -> Triage:
    """Validate one dropped file and move it to accepted/ or rejected/ (with a reason file)."""
    try:
        problems = problems_of(read_interactions_file(path), user_ids, place_ids)
    except ValueError as exc:
        problems = [str(exc)]
    folder = Path(inbox) / (REJECTED if problems else ACCEPTED) / city
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}-{path.name}"
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        (folder / f"{destination.name}.reason.txt").write_text(
            f"{path.name} was rejected and nothing of it was applied:\n" + "\n".join(shown) + "\n"
        )
    shutil.move(str(path), destination)
    return Triage(city, Path(path), destination, tuple(problems))


def append(existing: pa.Table, new: pa.Table) -> pa.Table:
    """The city's interactions with the new events added, in time order."""
    return pa.concat_tables([contracts.conform(existing, "interactions"), new]).sort_by("timestamp")
