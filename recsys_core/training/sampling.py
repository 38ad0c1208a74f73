"""What each training step draws: positive pairs, same-city negatives, contexts, friend labels.

Every draw comes from one seeded generator, in a fixed order, so a run is reproducible and a
resumed run (which restores the generator's state) continues exactly where it stopped.
"""

from __future__ import annotations

import torch

from recsys_core.evaluation.split import Split
from recsys_core.features import INTERACTION_EDGE_LAYOUT, FeatureLayouts
from recsys_core.graph import INTERACTS, GraphBundle
from recsys_core.model.heads import ANY_SLOT, PlaceContext
from recsys_core.model.inputs import GraphInputs
from recsys_core.training.config import TrainConfig
from recsys_core.vocabulary import Vocabulary


def engagement_weight(edge_attr: torch.Tensor) -> torch.Tensor:
    """attended > saved > liked > viewed: 4 / 3 / 2 / 1."""
    attended = edge_attr[:, INTERACTION_EDGE_LAYOUT["attended"]].squeeze(-1) > 0
    saved = edge_attr[:, INTERACTION_EDGE_LAYOUT["saves"]].squeeze(-1) > 0
    liked = edge_attr[:, INTERACTION_EDGE_LAYOUT["likes"]].squeeze(-1) > 0
    return torch.where(attended, 4.0, torch.where(saved, 3.0, torch.where(liked, 2.0, 1.0)))


def dominant_slot(attr: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
    """Each pair's most frequent time slot, from its time-of-day and day-of-week shares.

    The vocabulary says which slot a (time of day, day of week) bucket is; one without time
    slots gives ANY_SLOT throughout.
    """
    if not vocabulary.slot_of_bucket:
        return torch.full((len(attr),), ANY_SLOT)
    tod = attr[:, INTERACTION_EDGE_LAYOUT["time_of_day"]].argmax(-1)
    weekend = attr[:, INTERACTION_EDGE_LAYOUT["day_of_week"]].argmax(-1)
    table = torch.tensor(vocabulary.slot_of_bucket)
    return table[tod, weekend]


class TrainingSampler:
    """Training pairs, negatives from the user's city, friend-label batches; all seeded."""

    def __init__(self, bundle: GraphBundle, split: Split, inputs: GraphInputs, config: TrainConfig):
        self.g = torch.Generator().manual_seed(config.seed)
        self.config = config
        self.layouts = FeatureLayouts.for_vocabulary(bundle.vocabulary)
        store = bundle.data[INTERACTS]
        train_edges = torch.from_numpy(split.train_edges)
        self.users, self.places = store.edge_index[0, train_edges], store.edge_index[1, train_edges]
        attr = store.edge_attr[train_edges] if "edge_attr" in store else None
        if attr is not None and attr.shape[1] != INTERACTION_EDGE_LAYOUT.width:
            attr = None  # not the contract's edge layout (e.g. a public dataset's single weight column)
        self.weights = engagement_weight(attr) if config.engagement_weighted and attr is not None else None
        self.slot = (
            dominant_slot(attr, bundle.vocabulary) if attr is not None else torch.full((len(train_edges),), ANY_SLOT)
        )
        place_city = inputs.city["place"]
        order = torch.argsort(place_city, stable=True)
        self.places_by_city = order
        counts = torch.bincount(place_city, minlength=int(place_city.max()) + 1)
        self.city_start = torch.cumsum(counts, 0) - counts
        self.city_count = counts
        self.user_city = inputs.city["user"]
        self.labels = torch.from_numpy(split.train_labels)
        self.n_places = inputs.num_nodes["place"]
        # Expected number of times each place is a candidate of a row: uniform same-city
        # pool draws plus popularity-proportional in-batch draws.
        uniform = config.city_pool / counts.clamp_min(1)[place_city]
        popularity = torch.bincount(self.places, minlength=self.n_places).float() / max(len(self.places), 1)
        expected = uniform + config.in_batch_negatives * popularity
        self.log_q = torch.log(expected.clamp_min(1e-12))

    def pairs(self) -> torch.Tensor:
        n = len(self.users)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.config.batch_size, replacement=True, generator=self.g)
        return torch.randint(0, n, (self.config.batch_size,), generator=self.g)

    def isolated_places(self) -> torch.Tensor:
        """The places this step isolates (`isolate_place_share` of them; none draws nothing)."""
        share = self.config.isolate_place_share
        if share <= 0:
            return torch.zeros(0, dtype=torch.long)
        return torch.nonzero(torch.rand(self.n_places, generator=self.g) < share).flatten()

    def city_pool(self, city: int) -> torch.Tensor:
        """A shared random sample of the city's places (with replacement)."""
        count = max(int(self.city_count[city]), 1)
        offset = torch.randint(0, count, (self.config.city_pool,), generator=self.g)
        return self.places_by_city[self.city_start[city] + offset]

    def negatives(self, users: torch.Tensor, k: int) -> torch.Tensor:
        city = self.user_city[users]
        count = self.city_count[city].clamp_min(1)
        offset = (torch.rand(len(users), k, generator=self.g) * count[:, None]).long()
        same_city = self.places_by_city[self.city_start[city][:, None] + offset]
        anywhere = torch.randint(0, self.n_places, (len(users), k), generator=self.g)
        hard = torch.rand(len(users), k, generator=self.g) < self.config.hard_negative_share
        return torch.where(hard, same_city, anywhere)

    def friend_batch(self) -> torch.Tensor:
        n = len(self.labels)
        return self.labels[torch.randint(0, n, (min(self.config.friend_batch, n),), generator=self.g)]

    def context(self, batch: torch.Tensor, inputs: GraphInputs, users: torch.Tensor) -> PlaceContext:
        """The context of a training pair, randomly dropped so neutral requests are covered too.

        A kept context asks for the positive place's time slot, categories and (some of) its
        tags; negatives are scored under the same context, so the head learns to favour places
        that fit what was asked.
        """
        n = len(batch)
        city = self.user_city[users]
        place_x = inputs.x["place"]
        pos = self.places[batch]
        if place_x.shape[1] == 0:
            return PlaceContext.neutral(city, self.layouts)
        ctx = PlaceContext.neutral(city, self.layouts)
        keep_slot = torch.rand(n, generator=self.g) > self.config.context_dropout
        keep_wish = torch.rand(n, generator=self.g) > self.config.context_dropout
        ctx.time_slot = torch.where(keep_slot, self.slot[batch], torch.full((n,), ANY_SLOT))
        cats = (place_x[pos][:, self.layouts.place["category_one_hot"]] > 0).float()
        tags = (place_x[pos][:, self.layouts.place["fine_tag_vector"]] > 0).float()
        tags = tags * (torch.rand(tags.shape, generator=self.g) < 0.5)
        ctx.categories = cats * keep_wish[:, None]
        ctx.tags = tags * keep_wish[:, None]
        return ctx
