"""Dagster project of the recommendation engine (thin wrappers around recsys_core)."""

from recsys_assets.definitions import defs

__all__ = ["defs"]
