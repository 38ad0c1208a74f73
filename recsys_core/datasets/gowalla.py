"""Gowalla check-ins as split by the LightGCN paper: ``train.txt`` lines ``user item item ...``.

Ids are the files' 0-based remapped ids. ``user_list.txt`` / ``item_list.txt`` (``org_id
remap_id``) define the id universe when present, so users or places that have no training
line still get an output row; otherwise the universe is 0..max id seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_core.datasets.base import DatasetFormatError, InteractionDataset


def _universe(path: Path, seen_max: int) -> int:
    if not path.exists():
        return seen_max + 1
    remap = []
    with path.open() as f:
        next(f, None)  # header: org_id remap_id
        for number, line in enumerate(f, start=2):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise DatasetFormatError(f"{path}:{number}: expected 'org_id remap_id', got {line.strip()!r}")
            remap.append(int(parts[1]))
    return max(max(remap, default=-1), seen_max) + 1


def load_gowalla(data_dir: str | Path) -> InteractionDataset:
    data_dir = Path(data_dir)
    train = data_dir / "train.txt"
    if not train.exists():
        raise FileNotFoundError(f"{train} not found (expected the LightGCN-split Gowalla train.txt)")
    users, items = [], []
    with train.open() as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = np.array(parts, dtype=np.int64)
            except ValueError:
                raise DatasetFormatError(f"{train}:{number}: expected integer ids, got {line.strip()[:80]!r}") from None
            if (ids < 0).any():
                raise DatasetFormatError(f"{train}:{number}: negative id")
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    u = np.concatenate(users) if users else np.zeros(0, np.int64)
    i = np.concatenate(items) if items else np.zeros(0, np.int64)
    n_users = _universe(data_dir / "user_list.txt", int(u.max(initial=-1)))
    n_items = _universe(data_dir / "item_list.txt", int(i.max(initial=-1)))
    matrix = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a check-in list: repeated ids are one place
    return InteractionDataset(
        name="gowalla",
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        interactions=matrix,
    )
