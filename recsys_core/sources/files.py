"""File sources: contract Parquet directories, LightGCN interaction lists, listens plus friendships,
and a generic events file. Each returns a `RawWorld`; `completion` fills in the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys_core.datasets.base import DatasetFormatError, InteractionDataset
from recsys_core.datasets.gowalla import load_gowalla
from recsys_core.datasets.lastfm import load_lastfm
from recsys_core.sources.base import RawWorld, SourceError
from recsys_core.vocabulary import BUILTIN, VOCABULARY_FILE, Vocabulary, slug

WORLD_TABLES = ("users", "places", "interactions", "user_user_edges", "friend_labels")
EVENT_COLUMNS = ("user_id", "item_id")  # required; optional: timestamp, count, city, category


def _one_city(name: str) -> Vocabulary:
    return Vocabulary(cities=(slug(name) or "world",))


def read_parquet_dir(directory: Path) -> RawWorld:
    """`<directory>/<table>.parquet` with any of the contract's columns (the required ones at least),
    and `vocabulary.json` (without one: the built-in vocabulary)."""
    directory = Path(directory)
    vocabulary = Vocabulary.load(directory) if (directory / VOCABULARY_FILE).exists() else BUILTIN
    tables: dict[str, pa.Table] = {}
    for name in WORLD_TABLES:
        path = directory / f"{name}.parquet"
        if path.exists():
            try:
                tables[name] = pq.read_table(path)
            except (pa.ArrowException, OSError) as exc:
                raise SourceError(f"{path} cannot be read as Parquet: {exc}") from exc
    return RawWorld(vocabulary, tables)


def _city_zero(n: int) -> pa.Array[Any]:
    return pa.array(np.zeros(n, np.int32))


def _from_dataset(dataset: InteractionDataset, city: str) -> RawWorld:
    """An interaction-only dataset as a one-city world: ids, the city, who interacted with what
    (with the count when the dataset has one) and declared friendships."""
    tables = dataset.to_tables()
    interactions, friendships = tables["interactions"], tables["user_user_edges"]
    # Only ids the files use: a loader's id universe (a dataset's published size) may hold more.
    user_ids = np.unique(np.concatenate([interactions["user_id"], friendships["user_u"], friendships["user_v"]]))
    place_ids = np.unique(interactions["place_id"].to_numpy())
    n_users, n_places = len(user_ids), len(place_ids)
    counts = interactions["weight"].to_numpy()
    events = {
        "user_id": pa.array(interactions["user_id"].to_numpy()),
        "place_id": pa.array(interactions["place_id"].to_numpy()),
    }
    if not np.all(counts == 1):
        events["count"] = pa.array(np.maximum(np.round(counts), 1).astype(np.int64))
    world = {
        "users": pa.table({"user_id": pa.array(user_ids.astype(np.int64)), "home_city_id": _city_zero(n_users)}),
        "places": pa.table({"place_id": pa.array(place_ids.astype(np.int64)), "city_id": _city_zero(n_places)}),
        "interactions": pa.table(events),
    }
    if dataset.friends is not None:
        world["user_user_edges"] = pa.Table.from_pandas(friendships, preserve_index=False)
    return RawWorld(_one_city(city), world)


def read_lightgcn(directory: Path) -> RawWorld:
    """A LightGCN-format directory (`train.txt`: `user item item ...` per line; optional
    `user_list.txt` / `item_list.txt` for the id universe), as one city named after the directory."""
    directory = Path(directory)
    try:
        return _from_dataset(load_gowalla(directory), directory.name)
    except DatasetFormatError as exc:
        raise SourceError(str(exc)) from exc


def read_listens(directory: Path) -> RawWorld:
    """Listens plus friendships (`listens_train.txt`: `user artist count`; `friends_train.txt`:
    `user user`, as in HetRec LastFM), as one city named after the directory."""
    directory = Path(directory)
    try:
        return _from_dataset(load_lastfm(directory), directory.name)
    except DatasetFormatError as exc:
        raise SourceError(str(exc)) from exc


def _read_table_file(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix in (".csv", ".tsv"):
            options = pcsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
            text = {c: pa.string() for c in ("timestamp", "city", "category")}
            return pcsv.read_csv(path, parse_options=options, convert_options=pcsv.ConvertOptions(column_types=text))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path} cannot be read: {exc}") from exc
    raise SourceError(f"{path}: an events file is .csv, .tsv or .parquet")


def _integer_ids(table: pa.Table, column: str, path: Path) -> np.ndarray:
    values = table.column(column).combine_chunks()
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise SourceError(f"{path}: {column} is empty in row {row}")
    if not pa.types.is_integer(values.type):
        try:
            values = values.cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = values.cast(pa.string()).to_numpy(zero_copy_only=False)
            bad = [i for i, v in enumerate(text) if not str(v).lstrip("-").isdigit()][:5]
            shown = ", ".join(f"row {i} ({text[i]!r})" for i in bad)
            raise SourceError(f"{path}: {column} must be integer ids; these are not: {shown}") from None
    ids = values.to_numpy(zero_copy_only=False).astype(np.int64)
    if (ids < 0).any():
        raise SourceError(f"{path}: {column} has negative ids, e.g. row {int(np.flatnonzero(ids < 0)[0])}")
    return ids


def _mode_per(keys: np.ndarray, values: np.ndarray) -> pd.Series:
    """The most frequent value per key (ties: the smallest value)."""
    frame = pd.DataFrame({"key": keys, "value": values})
    counts = frame.groupby(["key", "value"]).size().rename("n").reset_index()
    counts = counts.sort_values(["key", "n", "value"], ascending=[True, False, True])
    return counts.drop_duplicates("key").set_index("key")["value"]


def read_events(path: Path) -> RawWorld:
    """A generic events file (CSV, TSV or Parquet): `user_id`, `item_id`, and optionally `timestamp`
    (ISO 8601 or epoch seconds), `count`, `city` (the item's city, by name) and `category` (the
    item's, by name). Without `city` the world is one city named after the file. A user lives in
    the city of most of their events; an item is in (and of) its most frequent city (category)."""
    path = Path(path)
    table = _read_table_file(path)
    absent = [c for c in EVENT_COLUMNS if c not in table.column_names]
    if absent:
        raise SourceError(f"{path}: missing column(s) {', '.join(absent)} (an events file has user_id and item_id)")
    if table.num_rows == 0:
        raise SourceError(f"{path}: no events")
    users = _integer_ids(table, "user_id", path)
    items = _integer_ids(table, "item_id", path)
    events: dict[str, Any] = {"user_id": pa.array(users), "place_id": pa.array(items)}
    for optional in ("timestamp", "count"):
        if optional in table.column_names:
            events[optional] = table.column(optional)
    names = {c: _names(table, c) for c in ("city", "category") if c in table.column_names}
    if "city" in names:
        cities = tuple(sorted(set(names["city"])))
        city_of_event = pd.Index(cities).get_indexer(pd.Index(names["city"]))
    else:
        cities, city_of_event = (slug(path.stem) or "world",), np.zeros(len(users), np.int64)
    place_city = _mode_per(items, city_of_event)
    home_city = _mode_per(users, city_of_event)
    places: dict[str, Any] = {
        "place_id": pa.array(place_city.index.to_numpy(np.int64)),
        "city_id": pa.array(place_city.to_numpy().astype(np.int32)),
    }
    categories: tuple[str, ...] = ()
    if "category" in names:
        categories = tuple(sorted(set(names["category"])))
        category_of_event = pd.Index(categories).get_indexer(pd.Index(names["category"]))
        category = _mode_per(items, category_of_event).reindex(place_city.index)
        places["category_ids"] = pa.array([[int(c)] for c in category.to_numpy()], pa.list_(pa.int32()))
    vocabulary = Vocabulary(cities=cities, categories=categories, tag_category=())
    return RawWorld(
        vocabulary,
        {
            "users": pa.table(
                {
                    "user_id": pa.array(home_city.index.to_numpy(np.int64)),
                    "home_city_id": pa.array(home_city.to_numpy().astype(np.int32)),
                }
            ),
            "places": pa.table(places),
            "interactions": pa.table(events),
        },
    )


def _names(table: pa.Table, column: str) -> np.ndarray:
    values = pc.utf8_trim_whitespace(table.column(column).cast(pa.string()).fill_null(pa.scalar("")))
    names = np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
    empty = np.flatnonzero(names == "")
    if len(empty):
        raise SourceError(f"{column} is empty in row(s) {empty[:5].tolist()}; give every event its {column}")
    return names
