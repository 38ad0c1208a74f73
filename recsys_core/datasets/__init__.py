"""Public interaction datasets (Gowalla, LastFM) as project tables and featureless graphs."""

from recsys_core.datasets.base import InteractionDataset, carve_validation
from recsys_core.datasets.gowalla import load_gowalla
from recsys_core.datasets.lastfm import load_lastfm

LOADERS = {"gowalla": load_gowalla, "lastfm": load_lastfm}

__all__ = ["LOADERS", "InteractionDataset", "carve_validation", "load_gowalla", "load_lastfm"]
