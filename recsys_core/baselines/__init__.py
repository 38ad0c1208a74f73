"""Baselines the GNN recommender is compared against.

Item recommenders share one interface::

    model = Cls(..., seed=0).fit(train)      # train: csr_matrix (n_users, n_items), nonzero = interaction
    scores = model.score(users)              # float32 (len(users), n_items), all items, nothing masked

Callers mask training items and restrict candidates (e.g. to a city) themselves.
Friend-link heuristics are plain functions on a symmetric binary user-user adjacency.
"""

from recsys_core.baselines.item_filter import ItemItemFilter
from recsys_core.baselines.lightgcn import LightGCN
from recsys_core.baselines.link_heuristics import (
    adamic_adar,
    adamic_adar_all,
    common_neighbours,
    common_neighbours_all,
    feature_cosine,
    feature_cosine_all,
)
from recsys_core.baselines.mf import MatrixFactorizationBPR
from recsys_core.baselines.popularity import Popularity

__all__ = [
    "Popularity",
    "MatrixFactorizationBPR",
    "LightGCN",
    "ItemItemFilter",
    "common_neighbours",
    "common_neighbours_all",
    "adamic_adar",
    "adamic_adar_all",
    "feature_cosine",
    "feature_cosine_all",
]
