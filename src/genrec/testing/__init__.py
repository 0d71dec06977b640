"""Reusable test helpers: the model contract and tiny synthetic datasets (needs pytest)."""

from genrec.testing.contract import RecommenderContract
from genrec.testing.fixtures import (
    TINY_HISTORIES,
    TINY_ITEM_COUNTS,
    crashing,
    random_dataset,
    tiny_dataset,
    tiny_frame,
)

__all__ = ["RecommenderContract", "TINY_HISTORIES", "TINY_ITEM_COUNTS", "crashing", "tiny_dataset",
           "tiny_frame", "random_dataset"]
