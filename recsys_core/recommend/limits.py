"""The limits of a recommendation request, in one place: the HTTP schemas, the query
parameters and the framework-free queries all import them from here."""

from __future__ import annotations

from recsys_core.taxonomy import N_TIME_SLOTS, TIME_SLOTS

# Ids are int64 in the tables, but no larger than the largest integer every JSON client holds
# exactly (a JavaScript number); bigger values are a 400 naming the field, not an overflow.
MAX_ID = 2**53 - 1
MIN_TOP_K = 1
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
MAX_LIST_ITEMS = 100  # desired categories, tags or activity tags per request: as many as there are fine tags
MAX_NAME_CHARS = 64  # a vocabulary name ("live_music"); longer text is not a name
TOP_K_HELP = f"{MIN_TOP_K}..{MAX_TOP_K}"
MAX_TIME_SLOT = N_TIME_SLOTS - 1
TIME_SLOT_HELP = ", ".join(f"{i}={name}" for i, name in enumerate(TIME_SLOTS))
