"""What every world source returns: a vocabulary and the tables as the source gives them."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from recsys_core.vocabulary import Vocabulary


class SourceError(ValueError):
    """A source's data cannot be read as a world; the message names the file, row or table."""


@dataclass(frozen=True)
class RawWorld:
    """A world as a source gives it: `tables` hold at least `contracts.REQUIRED_COLUMNS` of users,
    places and interactions, and optionally user_user_edges and friend_labels."""

    vocabulary: Vocabulary
    tables: dict[str, pa.Table]
