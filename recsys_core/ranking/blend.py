"""The place model: a weighted sum of per-user z-scored parts (graph filter, iALS, GraphRec).

`dense` is the definition (every place scored, each part z-scored over every place, summed with
the weights): what validation tunes and what evaluation measures. `queries` is the same function
in the form serving needs: per user one query vector against the concatenated item vectors of
the low-rank parts (what a city's ANN index holds), a sparse score (the linear filter's), and a
constant. ``query . item_vectors[i] + sparse[i] + offset`` equals ``dense[i]`` exactly, so the
served ranking differs from the measured one only where the ANN index misses a place.

A group (the iALS bag) averages its members' z-scores, as `BaggedALS.score` does.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys_core.baselines._common import row_standardize
from recsys_core.files import write_text_atomically
from recsys_core.ranking.parts import F32, FactorPart, FilterPart, SparseRow, UserStats

logger = logging.getLogger(__name__)

Part = FactorPart | FilterPart
GROUPS = ("graph_filter", "ials", "graphrec")  # the order of the report and of the item vectors
BLEND_FILE = "place_model.json"
ARRAYS_FILE = "place_model.npz"
STATS_BLOCK = 512  # users per block when every user's score statistics are precomputed
EMPTY_ROW: SparseRow = (np.zeros(0, np.int64), np.zeros(0, np.float64))


def _merged(rows: list[SparseRow]) -> SparseRow:
    """The sum of sparse rows (sorted indices, values)."""
    if len(rows) == 1:
        return rows[0]
    if not rows:
        return EMPTY_ROW
    cols, inverse = np.unique(np.concatenate([c for c, _ in rows]), return_inverse=True)
    values = np.bincount(inverse, np.concatenate([v for _, v in rows]), minlength=len(cols))
    return np.asarray(cols, np.int64), np.asarray(values, np.float64)


@dataclass
class BlendQuery:
    """Rows of users in serving form: ``vector @ item_vectors.T + sparse + offset[:, None]``."""

    vector: F32  # (rows, D)
    sparse: list[SparseRow]  # per row: (sorted item indices, weighted sparse scores)
    offset: NDArray[np.float64]  # (rows,)

    def scores(self, row: int, items: np.ndarray, item_vectors: np.ndarray) -> NDArray[np.float64]:
        """Exact blend scores of `items` for one row: what a served list is ordered by."""
        low = np.asarray(item_vectors[items], np.float64) @ self.vector[row].astype(np.float64)
        cols, vals = self.sparse[row]
        sparse = np.zeros(len(items), np.float64)
        if len(cols):
            pos = np.searchsorted(cols, items)
            hit = (pos < len(cols)) & (cols[np.minimum(pos, len(cols) - 1)] == items)
            sparse[hit] = vals[pos[hit]]
        out: NDArray[np.float64] = low + sparse + self.offset[row]
        return out

    def top_sparse(self, row: int, n: int, allowed: np.ndarray) -> np.ndarray:
        """The row's `n` items with the largest sparse score among `allowed` (a boolean mask)."""
        cols, vals = self.sparse[row]
        keep = allowed[cols]
        cols, vals = cols[keep], vals[keep]
        if len(cols) > n:
            pick = np.argpartition(-vals, n - 1)[:n]
            cols = cols[pick]
        out: np.ndarray = np.asarray(cols, np.int64)
        return out


class PlaceBlend:
    """Parts by group and the blend's weight of each group (0: not part of the served model).

    A plain class, not a dataclass: the service's dependency signatures are introspected, and a
    dataclass field typed as a union of dataclasses is refused there."""

    def __init__(
        self, groups: dict[str, list[Part]], weights: dict[str, float], settings: dict[str, object] | None = None
    ):
        self.groups, self.weights = groups, weights
        self.settings = settings or {}  # how the parts were fit (for the report)
        unknown = set(self.groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown place-model parts {sorted(unknown)}; known: {GROUPS}")
        if not any(self.weights.get(g, 0.0) > 0 and self.groups.get(g) for g in GROUPS):
            raise ValueError(f"a place model needs a part with a positive weight; weights {self.weights}")

    def active(self) -> list[tuple[str, float, Part]]:
        """(group, weight of this member, member) of every served part, in GROUPS order."""
        out = []
        for group in GROUPS:
            members, weight = self.groups.get(group, []), self.weights.get(group, 0.0)
            if weight > 0 and members:
                out += [(group, weight / len(members), m) for m in members]
        return out

    def non_finite_parts(self) -> list[str]:
        """Parts holding a NaN or an infinity (a blend that must not be served)."""
        bad = []
        for group, members in self.groups.items():
            for j, part in enumerate(members):
                arrays = (
                    (part.weights.data, part.normalized.data, part.low_left, part.low_right)
                    + ((part.spread.data,) if part.spread is not None else ())
                    if isinstance(part, FilterPart)
                    else (part.user, part.item)
                )
                if not all(np.isfinite(a).all() for a in arrays):
                    bad.append(f"{group}/{j}")
        return bad

    @property
    def n_items(self) -> int:
        part = self.active()[0][2]
        return part.n_items if isinstance(part, FilterPart) else len(part.item)

    @property
    def n_users(self) -> int:
        part = self.active()[0][2]
        return int(part.weights.shape[0]) if isinstance(part, FilterPart) else len(part.user)

    def dense(self, rows: np.ndarray) -> F32:
        """The definition: (len(rows), n_items) blend scores."""
        total = np.zeros((len(rows), self.n_items), np.float32)
        for _, weight, part in self.active():
            total += weight * row_standardize(part.dense(rows))
        return total

    def item_vectors(self) -> F32:
        """(n_items, D): the low-rank parts' item vectors side by side (what ANN indices hold)."""
        out: F32 = np.ascontiguousarray(np.hstack([p.item_vectors for _, _, p in self.active()]), np.float32)
        return out

    def queries(self, rows: np.ndarray, sparse: bool = True) -> BlendQuery:
        """The serving form of `rows` (`sparse=False`: query vectors only, the sparse rows empty)."""
        rows = np.asarray(rows, np.int64)
        vectors, offset = [], np.zeros(len(rows), np.float64)
        scaled: list[list[SparseRow]] = [[] for _ in rows]
        for _, weight, part in self.active():
            terms = part.terms(rows, sparse)
            scale = weight / terms.std  # (rows,)
            vectors.append(terms.query * scale[:, None].astype(np.float32))
            offset -= scale * terms.mean
            for j, (cols, values) in enumerate(terms.sparse or []):
                scaled[j].append((cols, values * scale[j]))
        return BlendQuery(np.ascontiguousarray(np.hstack(vectors), np.float32), [_merged(r) for r in scaled], offset)

    def precompute_user_stats(self, block: int = STATS_BLOCK) -> None:
        """Every user's score mean and std per served part, so a request needs neither the closed
        forms' item moments nor the filter's block products (a served model does this once)."""
        parts = self.active()
        for j, (group, _, part) in enumerate(parts):
            started, part.stats = time.perf_counter(), None
            means, stds = [], []
            for start in range(0, self.n_users, block):
                terms = part.terms(np.arange(start, min(start + block, self.n_users)), sparse=False)
                means.append(terms.mean)
                stds.append(terms.std)
                done = min(start + block, self.n_users)
                if done == self.n_users or (start // block) % 20 == 19:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    logger.info(
                        "place model: score statistics of part %d/%d (%s), %d/%d users, %.0f users/s",
                        j + 1,
                        len(parts),
                        group,
                        done,
                        self.n_users,
                        rate,
                    )
            part.stats = UserStats(np.concatenate(means), np.concatenate(stds))

    def seen(self) -> sp.csr_matrix | None:
        """Users x places: the interactions the graph filter was fit on (None without a filter)."""
        filters = [p for _, _, p in self.active() if isinstance(p, FilterPart)]
        return filters[0].weights if filters else None

    def sample_users(self, items: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
        """A seeded sample of the users who interacted with `items` (every user where no part records
        interactions)."""
        seen = self.seen()
        if seen is not None:
            users = np.flatnonzero(np.diff(sp.csr_matrix(seen[:, items]).indptr) > 0)
        else:
            users = np.arange(self.n_users)
        if len(users) > n:
            users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
        out: np.ndarray = users
        return out

    def sample_queries(self, items: np.ndarray, n: int, seed: int = 0) -> F32:
        """Query vectors of a seeded sample of the users who interacted with `items` (a city's places;
        every user where no part records interactions): what an index of those items is asked."""
        users = self.sample_users(items, n, seed)
        return self.queries(users, sparse=False).vector

    # -- storage: arrays in one .npz (no pickle), the structure in JSON ----------------------------

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        layout: dict[str, list[dict[str, object]]] = {}
        for group, members in self.groups.items():
            layout[group] = []
            for j, part in enumerate(members):
                key = f"{group}/{j}"
                if isinstance(part, FilterPart):
                    matrices = {"weights": part.weights, "normalized": part.normalized}
                    if part.spread is not None:
                        matrices["spread"] = part.spread
                    for name, matrix in matrices.items():
                        arrays |= {
                            f"{key}/{name}/data": matrix.data,
                            f"{key}/{name}/indices": matrix.indices,
                            f"{key}/{name}/indptr": matrix.indptr,
                        }
                    arrays |= {f"{key}/low_left": part.low_left, f"{key}/low_right": part.low_right}
                    layout[group].append(
                        {
                            "kind": "filter",
                            "alpha": part.alpha,
                            "shape": list(part.weights.shape),
                            "matrices": list(matrices),
                        }
                    )
                else:
                    arrays |= {f"{key}/user": part.user, f"{key}/item": part.item}
                    layout[group].append({"kind": "factors"})
                if part.stats is not None:
                    arrays |= {f"{key}/stats/mean": part.stats.mean, f"{key}/stats/std": part.stats.std}
        path = directory / ARRAYS_FILE
        np.savez(path, allow_pickle=False, **arrays)
        meta = {"groups": layout, "weights": self.weights, "settings": self.settings}
        write_text_atomically(directory / BLEND_FILE, json.dumps(meta, indent=2, default=float))
        return path

    @classmethod
    def load(cls, directory: Path) -> PlaceBlend:
        directory = Path(directory)
        meta = json.loads((directory / BLEND_FILE).read_text())
        groups: dict[str, list[Part]] = {}
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
            for group, members in meta["groups"].items():
                groups[group] = []
                for j, spec in enumerate(members):
                    key = f"{group}/{j}"
                    if spec["kind"] == "filter":
                        shape = tuple(spec["shape"])
                        matrices = {
                            name: sp.csr_matrix(
                                (
                                    arrays[f"{key}/{name}/data"],
                                    arrays[f"{key}/{name}/indices"],
                                    arrays[f"{key}/{name}/indptr"],
                                ),
                                shape=shape,
                            )
                            for name in spec.get("matrices", ("weights", "normalized"))  # older blends: these two
                        }
                        groups[group].append(
                            FilterPart(
                                matrices["weights"],
                                matrices["normalized"],
                                arrays[f"{key}/low_left"],
                                arrays[f"{key}/low_right"],
                                float(spec["alpha"]),
                                spread=matrices.get("spread"),
                            )
                        )
                    else:
                        groups[group].append(FactorPart(arrays[f"{key}/user"], arrays[f"{key}/item"]))
                    if f"{key}/stats/mean" in arrays:
                        groups[group][-1].stats = UserStats(arrays[f"{key}/stats/mean"], arrays[f"{key}/stats/std"])
        return cls(groups, {k: float(v) for k, v in meta["weights"].items()}, meta.get("settings", {}))
