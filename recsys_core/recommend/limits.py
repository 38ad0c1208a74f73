"""The limits of a recommendation request, in one place: the HTTP schemas, the query
parameters and the framework-free queries all import them from here.

None of them depends on the world's vocabulary: the schema is the same whatever world is
served, and what the served vocabulary has (which time slots, tags and categories exist) is
checked per request against it (`queries.check_time_slot`, `queries.tag_ids`, ...)."""

from __future__ import annotations

# Ids are int64 in the tables, but no larger than the largest integer every JSON client holds
# exactly (a JavaScript number); bigger values are a 400 naming the field, not an overflow.
MAX_ID = 2**53 - 1
MIN_TOP_K = 1
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
MAX_LIST_ITEMS = 100  # desired categories, tags or activity tags per request (the built-in vocabulary has 100 tags)
MAX_NAME_CHARS = 64  # a vocabulary name ("live_music"); longer text is not a name
TOP_K_HELP = f"{MIN_TOP_K}..{MAX_TOP_K}"
MAX_TIME_SLOTS = 64  # the most time slots a served vocabulary may have
MAX_TIME_SLOT = MAX_TIME_SLOTS - 1
TIME_SLOT_HELP = (
    f"id of one of the served vocabulary's time slots (0..{MAX_TIME_SLOT}); "
    "an id it does not have is a 400 that lists the valid ids and their names"
)
