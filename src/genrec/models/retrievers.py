"""The retrieval models: one literal mapping from names to classes.

Every model that scores the whole catalogue by itself. :mod:`genrec.models.registry` adds the
models built on top of one of these (the two-stage ranker nests a retriever), so a composite
model imports this module, never the registry that lists it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from genrec.models.base import Recommender
from genrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from genrec.models.bprmf import BPRMF, BPRMFConfig
from genrec.models.ease import EASE, EASEConfig
from genrec.models.graph_heuristic import GraphHeuristic, GraphHeuristicConfig
from genrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.itemknn import ItemKNN, ItemKNNConfig
from genrec.models.lightgcn import LightGCN, LightGCNConfig
from genrec.models.pop import PopConfig, Popularity
from genrec.models.sasrec import SASRec, SASRecConfig
from genrec.models.simplex import SimpleX, SimpleXConfig
from genrec.models.tiger import TIGER, TIGERConfig

__all__ = ["RETRIEVERS", "AnyRetrieverConfig", "RetrieverConfig", "load_from"]

RETRIEVERS: dict[str, type[Recommender[Any]]] = {
    "pop": Popularity,
    "itemknn": ItemKNN,
    "ease": EASE,
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "bert4rec": BERT4Rec,
    "hstu": HSTU,
    "bprmf": BPRMF,
    "lightgcn": LightGCN,
    "simplex": SimpleX,
    "graph_heuristic": GraphHeuristic,
    "tiger": TIGER,
}

RetrieverConfig = (PopConfig | ItemKNNConfig | EASEConfig | SASRecConfig | GRU4RecConfig
                   | BERT4RecConfig | HSTUConfig | BPRMFConfig | LightGCNConfig | SimpleXConfig
                   | GraphHeuristicConfig | TIGERConfig)
"""Union of the retrieval models' configs."""

AnyRetrieverConfig = Annotated[RetrieverConfig, Field(discriminator="kind")]
"""A retrieval model's config (the ``kind`` field picks the class)."""


def load_from(models: dict[str, type[Recommender[Any]]], path: str | Path) -> Recommender[Any]:
    """Load a saved model whose kind (read from ``config.json``) is one of ``models``.

    Raises:
        ValueError: For a kind that ``models`` does not list.
    """
    kind = json.loads((Path(path) / "config.json").read_text())["kind"]
    if kind not in models:
        raise ValueError(f"{path}: unknown model kind {kind!r}")
    return models[kind].load(Path(path))
