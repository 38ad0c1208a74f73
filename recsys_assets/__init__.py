"""Dagster project of the recommendation engine (thin wrappers around recsys_core).

The code location is `recsys_assets.definitions:defs`. Nothing is imported here, so the
`recsys` CLI (and `recsys serve`) start without loading Dagster.
"""
