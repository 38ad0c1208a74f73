import pytest

from recsys_core import taxonomy as tx


def _category_of(tag: str) -> str:
    return tx.COARSE_CATEGORIES[tx.FINE_TAG_CATEGORY[tx.FINE_TAGS.index(tag)]]


def _distinct_nonempty(names) -> bool:
    return len(set(names)) == len(names) and all(isinstance(n, str) and n.strip() for n in names)


def test_eight_distinct_named_cities():
    assert len(tx.CITIES) == tx.N_CITIES == 8
    assert _distinct_nonempty(tx.CITIES)


def test_every_city_has_fifteen_distinct_named_neighbourhoods():
    assert len(tx.NEIGHBORHOODS) == 8
    for city_id, names in enumerate(tx.NEIGHBORHOODS):
        assert len(names) == 15, tx.CITIES[city_id]
        assert _distinct_nonempty(names), tx.CITIES[city_id]
    assert tx.neighborhood_name(0, 0) == tx.NEIGHBORHOODS[0][0]


def test_six_distinct_coarse_categories():
    assert len(tx.COARSE_CATEGORIES) == tx.C_COARSE == 6
    assert _distinct_nonempty(tx.COARSE_CATEGORIES)


def test_hundred_distinct_fine_tags():
    assert len(tx.FINE_TAGS) == tx.C_FINE == 100
    assert _distinct_nonempty(tx.FINE_TAGS)


def test_thirty_distinct_vibes():
    assert len(tx.VIBE_TAGS) == tx.C_VIBE == 30
    assert _distinct_nonempty(tx.VIBE_TAGS)


def test_every_fine_tag_has_exactly_one_valid_category():
    assert len(tx.FINE_TAG_CATEGORY) == len(tx.FINE_TAGS)
    assert all(0 <= c < tx.C_COARSE for c in tx.FINE_TAG_CATEGORY)


@pytest.mark.parametrize(
    "tag, category",
    [
        ("fishing", "outdoors"),
        ("techno", "clubs"),
        ("bouldering", "sports"),
        ("yoga", "sports"),
        ("brunch", "dining"),
        ("sushi", "dining"),
        ("hiking", "outdoors"),
        ("kayaking", "outdoors"),
        ("house_music", "clubs"),
        ("karaoke", "entertainment"),
        ("bowling", "entertainment"),
        ("museum", "culture"),
        ("art_gallery", "culture"),
        ("opera", "culture"),
    ],
)
def test_fine_tag_category_map_makes_sense(tag, category):
    assert _category_of(tag) == category


def test_tags_of_category_partition_the_fine_tags():
    groups = [set(tx.tags_of_category(c)) for c in range(tx.C_COARSE)]
    assert set().union(*groups) == set(range(tx.C_FINE))
    assert sum(len(g) for g in groups) == tx.C_FINE
    for c, group in enumerate(groups):
        assert len(group) >= 8, tx.COARSE_CATEGORIES[c]
        assert all(tx.FINE_TAG_CATEGORY[t] == c for t in group)


def test_vibe_affinities_name_known_vibes_for_every_category():
    assert set(tx.VIBE_CATEGORY_AFFINITY) == set(range(tx.C_COARSE))
    for vibes in tx.VIBE_CATEGORY_AFFINITY.values():
        assert vibes and set(vibes) <= set(tx.VIBE_TAGS)


def test_city_slugs_round_trip():
    assert len(set(tx.CITY_SLUGS)) == 8
    for city_id, slug in enumerate(tx.CITY_SLUGS):
        assert slug == slug.lower() and " " not in slug
        assert tx.city_id_from_slug(slug) == city_id
    assert tx.city_slug(0) == "london"


def test_unknown_city_slug_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="atlantis.*london"):
        tx.city_id_from_slug("atlantis")


@pytest.mark.parametrize("time_of_day", range(4))
def test_weekday_time_slot_is_the_time_of_day(time_of_day):
    slot = tx.time_slot_of(time_of_day, 0)
    assert tx.TIME_SLOTS[slot] == tx.TIME_OF_DAY_BUCKETS[time_of_day]


@pytest.mark.parametrize(
    "time_of_day, slot",
    [
        ("morning", "weekend_day"),
        ("afternoon", "weekend_day"),
        ("evening", "weekend_night"),
        ("night", "weekend_night"),
    ],
)
def test_weekend_time_slots(time_of_day, slot):
    assert tx.TIME_SLOTS[tx.time_slot_of(tx.TIME_OF_DAY_BUCKETS.index(time_of_day), 1)] == slot


def test_bucket_vocabularies_have_the_contract_sizes():
    assert (tx.N_TIME_SLOTS, tx.N_TIME_OF_DAY, tx.N_DAY_OF_WEEK, tx.N_PRICE_BANDS) == (6, 4, 2, 5)
