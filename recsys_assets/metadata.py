"""Metadata a person wants to see in the Dagster UI: counts, previews, distributions, schemas, plots."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import MetadataValue, TableColumn, TableSchema
from dagster._core.definitions.metadata import RawMetadataValue  # the values Dagster accepts; not re-exported

from recsys_core import validation
from recsys_core.vocabulary import Vocabulary

PREVIEW_ROWS = 5
# Columns with at most this many distinct values get a value histogram, others quantiles
# (16 covers the 15 neighbourhoods of a city).
MAX_DISTINCT_FOR_COUNTS = 16

# Metadata as assets, outputs and checks take it (values: MetadataValue, TableSchema, str, int, ...).
Metadata: TypeAlias = dict[str, RawMetadataValue]


def _scalar_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if not pa.types.is_nested(f.type)]


def markdown_table(frame: pd.DataFrame, **kwargs: Any) -> MetadataValue:
    return MetadataValue.md(frame.to_markdown(index=False, **kwargs) if len(frame) else "(empty)")


def column_schema(schema: pa.Schema) -> TableSchema:
    """An Arrow schema as the `dagster/column_schema` the UI shows on an asset's Columns tab."""
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema])


def table_metadata(table: pa.Table, distributions: tuple[str, ...] = ()) -> Metadata:
    preview = table.select(_scalar_columns(table)).slice(0, PREVIEW_ROWS).to_pandas()
    meta: Metadata = {
        "dagster/row_count": table.num_rows,
        "preview": markdown_table(preview),
    }
    for column in distributions:
        values = pd.Series(table.column(column).to_numpy(zero_copy_only=False))
        if values.dtype == bool or values.nunique() <= MAX_DISTINCT_FOR_COUNTS:
            counts = values.value_counts().sort_index()
            meta[f"{column} distribution"] = MetadataValue.md(counts.to_frame("rows").to_markdown())
        else:
            q = values.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).to_numpy(dtype=float)
            frame = pd.DataFrame([q], columns=["min", "q25", "median", "q75", "max"])
            meta[f"{column} quantiles"] = markdown_table(frame, floatfmt=".4g")
    return meta


def rows_by_city(city_ids: np.ndarray, vocabulary: Vocabulary) -> MetadataValue:
    """A markdown table of row counts per city (cities by slug)."""
    cities, counts = np.unique(np.asarray(city_ids), return_counts=True)
    frame = pd.DataFrame({"city": [vocabulary.city_slugs[int(c)] for c in cities], "rows": counts.astype(int)})
    return markdown_table(frame)


def png_markdown(png: bytes, title: str) -> MetadataValue:
    """A PNG inline in a markdown metadata value (the UI renders data: images)."""
    return MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def plain_metadata(values: Mapping[str, object]) -> Metadata:
    """A summary of plain values (numbers, strings, lists, dicts, None) as metadata entries."""
    meta: Metadata = {}
    for key, value in values.items():
        if value is not None and not isinstance(value, int | float | str | list | dict):
            raise TypeError(f"metadata entry {key!r} is a {type(value).__name__}, not a plain value")
        meta[key] = value
    return meta


def violations_metadata(violations: pd.DataFrame) -> Metadata:
    summary = plain_metadata(validation.summarize(violations))
    by_rule = summary["by_rule"]
    if not isinstance(by_rule, dict):
        raise TypeError(f"the violation counts by rule are a {type(by_rule).__name__}, not a dict")
    meta: Metadata = {"violations": summary["violations"], "by_rule": MetadataValue.json(by_rule)}
    if len(violations):
        meta["offending_rows"] = MetadataValue.md(violations.head(20).to_markdown(index=False))
    return meta
