"""How LastFM validation recall grows with training density (README, "Against the test targets").

The test runs train on 80 % of the data, the validation carve on 64 %. This scores the same
validation pairs from the carve's training part (64 %) and from a carve of it (51 %), with the
graph filter at the setting the benchmark chose (k=128, weight 0.3) and the filter + iALS blend
(iALS weight 1.5), for carve seeds 0 and 1. Usage: python -m bench.lastfm_density [DATA_DIR]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from recsys_core.baselines._common import row_standardize
from recsys_core.baselines.ials import BaggedALS
from recsys_core.baselines.item_filter import ItemItemFilter
from recsys_core.datasets import LOADERS
from recsys_core.datasets.base import carve_validation, relative_count_weights
from recsys_core.evaluation.topk import ranking_metrics, top_k


def main(data_dir: str = "../shared/datasets/lastfm") -> None:
    torch.set_num_threads(1)
    ds = LOADERS["lastfm"](data_dir)
    for seed in (0, 1):
        train, val = carve_validation(ds.binary(), 0.2, seed)
        sparser, _ = carve_validation(train, 0.2, seed + 7)
        users = np.flatnonzero(np.diff(val.indptr) > 0)
        for share, part in (("64%", train), ("51%", sparser)):
            counts = ds.counts_on(part)
            graph_filter = (
                ItemItemFilter(alpha=0.3, k=128, svd="randomized", seed=0)
                .fit(relative_count_weights(counts))
                .score(users)
            )
            ials = BaggedALS(seed=seed).fit(counts).score(users)
            recall = {}
            for name, s in (("filter", graph_filter), ("filter + iALS", row_standardize(graph_filter) + 1.5 * ials)):

                def score(rows: np.ndarray, s: np.ndarray = s) -> np.ndarray:
                    return s[rows]

                top = top_k(score, np.arange(len(users)), train[users], 20)
                recall[name] = ranking_metrics(top, val[users], 20)["recall@20"]
            print(f"seed {seed}, trained on {share} of the data: validation Recall@20 {recall}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
