"""Metadata a person wants to see on a materialization: counts, previews, distributions."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from dagster import MetadataValue

from recsys_core import validation

PREVIEW_ROWS = 5


def _scalar_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if not pa.types.is_nested(f.type)]


def table_metadata(table: pa.Table, distributions: tuple[str, ...] = ()) -> dict[str, object]:
    preview = table.select(_scalar_columns(table)).slice(0, PREVIEW_ROWS).to_pandas()
    meta: dict[str, object] = {
        "dagster/row_count": table.num_rows,
        "preview": MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "(empty)"),
    }
    for column in distributions:
        values = pd.Series(table.column(column).to_numpy(zero_copy_only=False))
        if values.dtype == bool or values.nunique() <= 12:
            counts = values.value_counts().sort_index()
            meta[f"{column} distribution"] = MetadataValue.md(counts.to_frame("rows").to_markdown())
        else:
            q = values.quantile([0.0, 0.25, 0.5, 0.75, 1.0])
            meta[f"{column} quantiles"] = MetadataValue.json({f"q{int(k * 100)}": float(v) for k, v in q.items()})
    return meta


def violations_metadata(violations: pd.DataFrame) -> dict[str, object]:
    summary = validation.summarize(violations)
    meta: dict[str, object] = {"violations": summary["violations"], "by_rule": MetadataValue.json(summary["by_rule"])}
    if len(violations):
        meta["offending_rows"] = MetadataValue.md(violations.head(20).to_markdown(index=False))
    return meta

