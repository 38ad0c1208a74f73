"""HetRec LastFM as distributed with LightGCN-PyTorch: listens plus an undirected friend graph.

``listens_train.txt``: tab-separated ``user artist listen_count`` (1-based ids; counts may be
written as floats such as ``3.2466e+05``). ``friends_train.txt``: ``user user`` per
undirected friendship. The id universe is 1..1892 users and 1..4489 artists (the dataset's
published size) or larger if the files say so; row i is user id i + 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_core.datasets.base import DatasetFormatError, InteractionDataset, symmetric_pairs

N_USERS = 1892
N_ARTISTS = 4489


def _read(path: Path, names: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    frame = pd.read_csv(path, sep=r"\s+", header=None, names=names, dtype=str, engine="python")
    out = {}
    for name in names:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetFormatError(f"{path}:{row + 1}: column {name!r} is not a number: {frame[name].iloc[row]!r}")
        out[name] = values.to_numpy(dtype=np.float64)
    for name in names[:2]:  # ids: 1-based integers
        ids = out[name]
        if (ids < 1).any() or (ids != np.round(ids)).any():
            row = int(np.flatnonzero((ids < 1) | (ids != np.round(ids)))[0])
            raise DatasetFormatError(f"{path}:{row + 1}: {name} must be a positive integer id, got {ids[row]!r}")
    return pd.DataFrame(out)


def load_lastfm(data_dir: str | Path) -> InteractionDataset:
    data_dir = Path(data_dir)
    listens = _read(data_dir / "listens_train.txt", ["user", "artist", "count"])
    friends_path = data_dir / "friends_train.txt"
    friends = _read(friends_path, ["u", "v"]) if friends_path.exists() else pd.DataFrame({"u": [], "v": []})
    if (listens["count"] <= 0).any():
        raise DatasetFormatError(f"{data_dir / 'listens_train.txt'}: listen counts must be positive")
    n_users = int(
        max(
            N_USERS,
            listens["user"].max(),
            friends["u"].max() if len(friends) else 0,
            friends["v"].max() if len(friends) else 0,
        )
    )
    n_items = int(max(N_ARTISTS, listens["artist"].max()))
    u = listens["user"].to_numpy(np.int64) - 1
    i = listens["artist"].to_numpy(np.int64) - 1
    matrix = sp.csr_matrix((listens["count"].to_numpy(np.float32), (u, i)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    social = symmetric_pairs(friends["u"].to_numpy(np.int64) - 1, friends["v"].to_numpy(np.int64) - 1, n_users)
    return InteractionDataset(
        name="lastfm",
        user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        item_ids=np.arange(1, n_items + 1, dtype=np.int64),
        interactions=matrix,
        friends=social,
    )
