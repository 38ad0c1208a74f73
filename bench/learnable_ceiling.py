"""What a learner could reach on world v2's test part, from what it could know (issue #17's "why").

Scored by the model benchmark's protocol (the time split's test part, full ranking in the home
city), each row a score built from the generator's own tables:
- `observed`: the observed part of the true preference alone (what the profile columns explain);
- `own`: plus the hidden part, with each place's true hidden appeal and quality and each user's
  hidden taste estimated from their training pairs (a shrunk, rescaled mean of the appeal they
  went to: one fixed estimator, not the best one);
- `social`: `own`, plus half the friends' mean estimate;
- `oracle`: the true preference on a day of the test window.
A model can do no better than `own` / `social` from the training pairs unless it learns place
appeal better than knowing it; the gap from `observed` to them is the graph's share to win.

    python -m bench.learnable_ceiling
"""

from __future__ import annotations

import json
import logging

import numpy as np

from recsys_core.evaluation import protocol
from recsys_core.evaluation.split import SplitPolicy
from recsys_core.graph import INTERACTS, build_from_world
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.hidden import CLOSED, TruePreference
from recsys_core.synthetic.world import generate_world

SHRINK = 2.0  # pseudo-pairs of a zero taste in each user's estimate
TASTE_SCALE = 3.0  # the estimate (a shrunk mean of appeal vectors) back to a taste's scale, a fixed guess
FRIENDS_WEIGHT = 0.5  # of the friends' mean estimate in `social`


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = WorldConfig()
    world = generate_world(config)
    bundle = build_from_world(world)
    policy = SplitPolicy()
    split = policy.apply(bundle)
    true = TruePreference(config, world["users"].sort_by("user_id"), world["places"].sort_by("place_id"))
    day = config.weeks * 7 - policy.held_out_days / 2  # the middle of the test window, as the oracle row
    user_city = bundle.data["user"].x[:, 0].long().numpy()
    place_city = bundle.data["place"].x[:, 0].long().numpy()
    truth = protocol.PlaceTruth.from_split(bundle, split, "test", user_city, place_city)
    edges = bundle.data[INTERACTS].edge_index.numpy()[:, split.train_edges]
    realism = config.realism
    appeal = true.appeal.vector / np.sqrt(realism.hidden_dim) * np.sqrt(1 - realism.quality_share)
    n_users = len(user_city)
    sums = np.zeros((n_users, realism.hidden_dim))
    np.add.at(sums, edges[0], appeal[edges[1]])
    own = sums / (np.bincount(edges[0], minlength=n_users)[:, None] + SHRINK)
    a = np.concatenate([pair[0] for pair in true.friends.values()])
    b = np.concatenate([pair[1] for pair in true.friends.values()])
    friends = np.zeros_like(own)
    np.add.at(friends, a, own[b])
    np.add.at(friends, b, own[a])
    degree = np.bincount(np.r_[a, b], minlength=n_users)
    social = own + FRIENDS_WEIGHT * friends / np.maximum(degree, 1)[:, None]

    def scorer(estimate: np.ndarray | None) -> protocol.BlockScorer:
        def score(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
            observed = true.observed(users, places)
            if estimate is None:
                total = observed
            else:
                quality = np.sqrt(realism.quality_share) * true.appeal.quality[places][None, :]
                taste = TASTE_SCALE * estimate[users] @ appeal[places].T
                total = observed + true.scale[users, None] * (taste + quality)
            return np.where(true.appeal.opens_day[places][None, :] <= day, total, CLOSED)

        return score

    def oracle(city: int, users: np.ndarray, places: np.ndarray) -> np.ndarray:
        return true.scores(users, places, day)

    table = protocol.evaluate_places(
        {"observed": scorer(None), "own": scorer(own), "social": scorer(social), "oracle": oracle}, truth
    )
    recall = table.pivot(index="model", columns="tier", values="recall@20").round(4)
    print(json.dumps({model: recall.loc[model].to_dict() for model in recall.index}))


if __name__ == "__main__":
    main()
