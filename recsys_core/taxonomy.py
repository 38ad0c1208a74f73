"""The product's fixed vocabulary: cities, neighbourhoods, categories, tags, time slots.

Training, feature building, serving and explanations must agree on every index here,
so this module is the single place that defines them. Names are human-readable because
explanations quote them ("You both like bouldering and jazz").
"""

from __future__ import annotations

from types import MappingProxyType

COARSE_CATEGORIES: tuple[str, ...] = (
    "entertainment",
    "sports",
    "clubs",
    "dining",
    "outdoors",
    "culture",
)
ENTERTAINMENT, SPORTS, CLUBS, DINING, OUTDOORS, CULTURE = range(6)

# Fine tag -> coarse category. The first 20 follow the specification's order.
_FINE_TAG_CATEGORY: tuple[tuple[str, int], ...] = (
    ("fishing", OUTDOORS),
    ("bouldering", SPORTS),
    ("techno", CLUBS),
    ("live_music", ENTERTAINMENT),
    ("board_games", ENTERTAINMENT),
    ("rooftop", CLUBS),
    ("brunch", DINING),
    ("karaoke", ENTERTAINMENT),
    ("jazz", ENTERTAINMENT),
    ("trivia", ENTERTAINMENT),
    ("wine_tasting", DINING),
    ("comedy", ENTERTAINMENT),
    ("art_gallery", CULTURE),
    ("theater", CULTURE),
    ("dance", CLUBS),
    ("pottery", CULTURE),
    ("yoga", SPORTS),
    ("crossfit", SPORTS),
    ("rock_climbing", OUTDOORS),
    ("cycling", SPORTS),
    # entertainment
    ("arcade", ENTERTAINMENT),
    ("escape_room", ENTERTAINMENT),
    ("bowling", ENTERTAINMENT),
    ("cinema", ENTERTAINMENT),
    ("open_mic", ENTERTAINMENT),
    ("magic_show", ENTERTAINMENT),
    ("billiards", ENTERTAINMENT),
    ("drag_show", ENTERTAINMENT),
    ("pub_quiz", ENTERTAINMENT),
    ("virtual_reality", ENTERTAINMENT),
    ("mini_golf", ENTERTAINMENT),
    ("darts", ENTERTAINMENT),
    # sports
    ("swimming", SPORTS),
    ("tennis", SPORTS),
    ("padel", SPORTS),
    ("running_club", SPORTS),
    ("boxing", SPORTS),
    ("martial_arts", SPORTS),
    ("pilates", SPORTS),
    ("basketball", SPORTS),
    ("football", SPORTS),
    ("volleyball", SPORTS),
    ("ice_skating", SPORTS),
    ("table_tennis", SPORTS),
    # clubs (nightlife)
    ("house_music", CLUBS),
    ("hip_hop", CLUBS),
    ("cocktail_bar", CLUBS),
    ("dive_bar", CLUBS),
    ("speakeasy", CLUBS),
    ("drum_and_bass", CLUBS),
    ("salsa_night", CLUBS),
    ("disco", CLUBS),
    ("lgbtq_club", CLUBS),
    ("afterparty", CLUBS),
    ("reggaeton", CLUBS),
    ("beer_garden", CLUBS),
    # dining
    ("ramen", DINING),
    ("tapas", DINING),
    ("vegan", DINING),
    ("street_food", DINING),
    ("sushi", DINING),
    ("pizza", DINING),
    ("fine_dining", DINING),
    ("coffee", DINING),
    ("craft_beer", DINING),
    ("bakery", DINING),
    ("food_market", DINING),
    ("barbecue", DINING),
    ("dumplings", DINING),
    ("tea_house", DINING),
    # outdoors
    ("hiking", OUTDOORS),
    ("kayaking", OUTDOORS),
    ("picnic", OUTDOORS),
    ("camping", OUTDOORS),
    ("birdwatching", OUTDOORS),
    ("surfing", OUTDOORS),
    ("sailing", OUTDOORS),
    ("stargazing", OUTDOORS),
    ("botanical_garden", OUTDOORS),
    ("mountain_biking", OUTDOORS),
    ("open_water_swimming", OUTDOORS),
    ("skateboarding", OUTDOORS),
    ("paddleboarding", OUTDOORS),
    ("foraging", OUTDOORS),
    # culture
    ("museum", CULTURE),
    ("opera", CULTURE),
    ("classical_music", CULTURE),
    ("poetry_reading", CULTURE),
    ("book_club", CULTURE),
    ("photography", CULTURE),
    ("street_art", CULTURE),
    ("film_club", CULTURE),
    ("history_tour", CULTURE),
    ("architecture_walk", CULTURE),
    ("ballet", CULTURE),
    ("language_exchange", CULTURE),
    ("life_drawing", CULTURE),
    ("design_market", CULTURE),
    ("philosophy_cafe", CULTURE),
    ("ceramics_studio", CULTURE),
)

FINE_TAGS: tuple[str, ...] = tuple(name for name, _ in _FINE_TAG_CATEGORY)
FINE_TAG_CATEGORY: tuple[int, ...] = tuple(cat for _, cat in _FINE_TAG_CATEGORY)

VIBE_TAGS: tuple[str, ...] = (
    "introvert",
    "extrovert",
    "party",
    "fitness",
    "artsy",
    "night_owl",
    "early_bird",
    "foodie",
    "adventurous",
    "chill",
    "intellectual",
    "spontaneous",
    "planner",
    "social",
    "independent",
    "romantic",
    "competitive",
    "nature_lover",
    "music_lover",
    "bookworm",
    "trendsetter",
    "budget_conscious",
    "luxury",
    "family_oriented",
    "curious",
    "laid_back",
    "energetic",
    "creative",
    "outgoing",
    "mindful",
)

# Which vibes go with which coarse category: users who like a category lean to its vibes.
VIBE_CATEGORY_AFFINITY: MappingProxyType[int, tuple[str, ...]] = MappingProxyType(
    {
        ENTERTAINMENT: ("social", "spontaneous", "extrovert", "competitive", "outgoing"),
        SPORTS: ("fitness", "competitive", "early_bird", "energetic", "planner"),
        CLUBS: ("party", "night_owl", "extrovert", "music_lover", "trendsetter"),
        DINING: ("foodie", "social", "luxury", "romantic", "laid_back"),
        OUTDOORS: ("adventurous", "nature_lover", "early_bird", "independent", "mindful"),
        CULTURE: ("artsy", "intellectual", "bookworm", "curious", "creative"),
    }
)

CITIES: tuple[str, ...] = (
    "London",
    "Zurich",
    "Berlin",
    "Lisbon",
    "Barcelona",
    "Prague",
    "Montreal",
    "Melbourne",
)
EXPENSIVE_CITIES: frozenset[int] = frozenset({0, 1})  # London, Zurich

NEIGHBORHOODS: tuple[tuple[str, ...], ...] = (
    (
        "Shoreditch",
        "Camden",
        "Soho",
        "Brixton",
        "Hackney",
        "Islington",
        "Peckham",
        "Notting Hill",
        "Clapham",
        "Greenwich",
        "Dalston",
        "Kensington",
        "Bermondsey",
        "Stoke Newington",
        "Covent Garden",
    ),
    (
        "Altstadt",
        "Kreis 4",
        "Kreis 5",
        "Seefeld",
        "Wiedikon",
        "Oerlikon",
        "Enge",
        "Hottingen",
        "Wipkingen",
        "Altstetten",
        "Fluntern",
        "Hirslanden",
        "Wollishofen",
        "Schwamendingen",
        "Hongg",
    ),
    (
        "Kreuzberg",
        "Neukolln",
        "Friedrichshain",
        "Prenzlauer Berg",
        "Mitte",
        "Wedding",
        "Schoneberg",
        "Moabit",
        "Charlottenburg",
        "Tempelhof",
        "Treptow",
        "Pankow",
        "Lichtenberg",
        "Steglitz",
        "Wilmersdorf",
    ),
    (
        "Alfama",
        "Bairro Alto",
        "Chiado",
        "Baixa",
        "Principe Real",
        "Graca",
        "Belem",
        "Cais do Sodre",
        "Mouraria",
        "Campo de Ourique",
        "Alcantara",
        "Santos",
        "Estrela",
        "Lapa",
        "Marvila",
    ),
    (
        "Gracia",
        "El Born",
        "Gothic Quarter",
        "Eixample",
        "Raval",
        "Poblenou",
        "Barceloneta",
        "Sant Antoni",
        "Poble Sec",
        "Sants",
        "Les Corts",
        "Sarria",
        "Horta",
        "Sant Andreu",
        "Clot",
    ),
    (
        "Vinohrady",
        "Zizkov",
        "Karlin",
        "Holesovice",
        "Mala Strana",
        "Stare Mesto",
        "Nove Mesto",
        "Letna",
        "Smichov",
        "Vrsovice",
        "Dejvice",
        "Nusle",
        "Liben",
        "Bubenec",
        "Andel",
    ),
    (
        "Plateau",
        "Mile End",
        "Griffintown",
        "Old Montreal",
        "Verdun",
        "Rosemont",
        "Villeray",
        "Saint-Henri",
        "Outremont",
        "Westmount",
        "Hochelaga",
        "Little Italy",
        "Downtown",
        "Le Village",
        "Cote-des-Neiges",
    ),
    (
        "Fitzroy",
        "Collingwood",
        "St Kilda",
        "Brunswick",
        "Richmond",
        "Carlton",
        "Northcote",
        "Southbank",
        "South Yarra",
        "Footscray",
        "Prahran",
        "Docklands",
        "Abbotsford",
        "Williamstown",
        "Yarraville",
    ),
)

TIME_SLOTS: tuple[str, ...] = (
    "morning",
    "afternoon",
    "evening",
    "night",
    "weekend_day",
    "weekend_night",
)
TIME_OF_DAY_BUCKETS: tuple[str, ...] = ("morning", "afternoon", "evening", "night")
DAY_OF_WEEK_BUCKETS: tuple[str, ...] = ("weekday", "weekend")
PRICE_BANDS: tuple[str, ...] = ("$", "$$", "$$$", "$$$$", "$$$$$")

N_CITIES = len(CITIES)
N_NEIGHBORHOODS_PER_CITY = len(NEIGHBORHOODS[0])
C_COARSE = len(COARSE_CATEGORIES)
C_FINE = len(FINE_TAGS)
C_VIBE = len(VIBE_TAGS)
N_TIME_SLOTS = len(TIME_SLOTS)
N_TIME_OF_DAY = len(TIME_OF_DAY_BUCKETS)
N_DAY_OF_WEEK = len(DAY_OF_WEEK_BUCKETS)
N_PRICE_BANDS = len(PRICE_BANDS)


def city_slug(city_id: int) -> str:
    """Partition key of a city: lower-case, no spaces ("london")."""
    return CITIES[city_id].lower().replace(" ", "_")


CITY_SLUGS: tuple[str, ...] = tuple(city_slug(c) for c in range(N_CITIES))


def city_id_from_slug(slug: str) -> int:
    try:
        return CITY_SLUGS.index(slug)
    except ValueError:
        raise ValueError(f"unknown city {slug!r}; known: {', '.join(CITY_SLUGS)}") from None


def neighborhood_name(city_id: int, neighborhood_id: int) -> str:
    return NEIGHBORHOODS[city_id][neighborhood_id]


def tags_of_category(category_id: int) -> tuple[int, ...]:
    return tuple(i for i, c in enumerate(FINE_TAG_CATEGORY) if c == category_id)


def time_slot_of(time_of_day_bucket: int, day_of_week_bucket: int) -> int:
    """Map an interaction's (time of day, weekday/weekend) to one of the six time slots."""
    if day_of_week_bucket == 1:
        return TIME_SLOTS.index("weekend_night" if time_of_day_bucket >= 2 else "weekend_day")
    return time_of_day_bucket


def _check_taxonomy() -> None:
    """Fail at import if the vocabulary is inconsistent (duplicates, wrong sizes)."""
    problems = []
    if C_FINE != 100 or len(set(FINE_TAGS)) != C_FINE:
        problems.append(f"need 100 distinct fine tags, have {len(set(FINE_TAGS))}")
    if C_VIBE != 30 or len(set(VIBE_TAGS)) != C_VIBE:
        problems.append(f"need 30 distinct vibe tags, have {len(set(VIBE_TAGS))}")
    if any(len(n) != N_NEIGHBORHOODS_PER_CITY or len(set(n)) != len(n) for n in NEIGHBORHOODS):
        problems.append("every city needs 15 distinct neighbourhoods")
    if len(NEIGHBORHOODS) != N_CITIES:
        problems.append("one neighbourhood list per city")
    for vibes in VIBE_CATEGORY_AFFINITY.values():
        problems.extend(f"unknown vibe {v}" for v in vibes if v not in VIBE_TAGS)
    if min(len(tags_of_category(c)) for c in range(C_COARSE)) < 8:
        problems.append("every category needs at least 8 fine tags")
    if problems:
        raise RuntimeError("taxonomy is inconsistent: " + "; ".join(problems))


_check_taxonomy()
