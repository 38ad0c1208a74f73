"""User-user signals shared by the generator, the validators and the recommenders.

Interest overlap, co-attendance and neighbourhood overlap are defined once here so the
label rules checked downstream are exactly the rules the labels were made with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from recsys_core.contracts import NEGATIVE_OVERLAP, POSITIVE_CO_ATTENDANCE, POSITIVE_OVERLAP

SECONDS_PER_DAY = 86_400


def unit_rows(m: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    unit: NDArray[np.float32] = (m / np.maximum(norm, 1e-12)).astype(np.float32)
    return unit


def pair_cosine(unit: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of rows a[i] and b[i] of a row-normalized matrix."""
    cosine: NDArray[np.float32] = np.einsum("ij,ij->i", unit[a], unit[b]).astype(np.float32)
    return cosine


def top_similar_pairs(
    unit: np.ndarray, k: int, min_overlap: float, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's k most similar other rows with cosine >= min_overlap, as unique pairs a < b.

    Works in row blocks so a large city never materialises more than block x n scores.
    """
    n = len(unit)
    k = min(k, n - 1)
    heads, tails = [], []
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        rows = np.arange(start, min(start + block, n))
        sims[rows - start, rows] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k > 0 else np.empty((len(rows), 0), int)
        keep = np.take_along_axis(sims, top, axis=1) >= min_overlap
        heads.append(np.repeat(rows, k)[keep.ravel()])
        tails.append(top.ravel()[keep.ravel()])
    a, b = np.concatenate(heads), np.concatenate(tails)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    if len(pairs) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return pairs[:, 0], pairs[:, 1], pair_cosine(unit, pairs[:, 0], pairs[:, 1])


def co_attendance_counts(interactions: pa.Table) -> pd.DataFrame:
    """Pairs (user_u < user_v) that attended the same place on the same day, with the count of such days."""
    attended = interactions.filter(interactions.column("attended"))
    events = pd.DataFrame(
        {
            "user_id": attended.column("user_id").to_numpy(),
            "place_id": attended.column("place_id").to_numpy(),
            "day": attended.column("timestamp").cast(pa.int64()).to_numpy() // (SECONDS_PER_DAY * 1_000_000),
        }
    ).drop_duplicates()
    pairs = events.merge(events, on=["place_id", "day"], suffixes=("_u", "_v"))
    pairs = pairs[pairs["user_id_u"] < pairs["user_id_v"]]
    counts = pairs.groupby(["user_id_u", "user_id_v"], sort=True).size()
    return pd.DataFrame(
        {
            "user_u": counts.index.get_level_values(0).to_numpy(np.int64),
            "user_v": counts.index.get_level_values(1).to_numpy(np.int64),
            "co_attendance_count": counts.to_numpy(np.int32),
        }
    )


def lookup_pair_counts(counts: pd.DataFrame, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Co-attendance count of each (u[i], v[i]) pair, 0 where they never co-attended."""
    if len(counts) == 0 or len(u) == 0:
        return np.zeros(len(u), np.int32)
    key = pd.MultiIndex.from_arrays([counts["user_u"].to_numpy(), counts["user_v"].to_numpy()])
    pos = key.get_indexer(pd.MultiIndex.from_arrays([u, v]))
    return np.where(pos >= 0, counts["co_attendance_count"].to_numpy()[pos], 0).astype(np.int32)


def neighbourhood_overlap(area: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Histogram intersection of two users' neighbourhood frequencies, in [0, 1]."""
    overlap: NDArray[np.float32] = np.minimum(area[a], area[b]).sum(axis=1).astype(np.float32)
    return overlap


def compatibility_label(overlap: np.ndarray, co_attendance: np.ndarray) -> np.ndarray:
    """1 = compatible, 0 = incompatible, -1 = neither (such pairs get no label)."""
    positive = (overlap >= POSITIVE_OVERLAP) | (co_attendance >= POSITIVE_CO_ATTENDANCE)
    negative = (overlap < NEGATIVE_OVERLAP) & (co_attendance == 0)
    return np.where(positive, 1, np.where(negative, 0, -1)).astype(np.int32)


def attendance_probability(overlap: np.ndarray, co_attendance: np.ndarray) -> np.ndarray:
    """Chance a compatible pair comes along together: rises with overlap and co-attendance."""
    return np.clip(overlap * (1.0 + co_attendance / 10.0), 0.0, 0.95)
