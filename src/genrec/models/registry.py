"""The model registry: one literal mapping from names to classes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from genrec.models.base import ModelConfig, Recommender
from genrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from genrec.models.bprmf import BPRMF, BPRMFConfig
from genrec.models.ease import EASE, EASEConfig
from genrec.models.graph_heuristic import GraphHeuristic, GraphHeuristicConfig
from genrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.itemknn import ItemKNN, ItemKNNConfig
from genrec.models.lightgcn import LightGCN, LightGCNConfig
from genrec.models.pop import PopConfig, Popularity
from genrec.models.ranker.two_stage import TwoStage, TwoStageConfig
from genrec.models.sasrec import SASRec, SASRecConfig
from genrec.models.simplex import SimpleX, SimpleXConfig
from genrec.models.tiger import TIGER, TIGERConfig

__all__ = ["MODELS", "AnyModelConfig", "build_model", "model_config", "load_model"]

MODELS: dict[str, type[Recommender[Any]]] = {
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
    "two_stage": TwoStage,
}

AnyModelConfig = Annotated[
    PopConfig | ItemKNNConfig | EASEConfig | SASRecConfig | GRU4RecConfig
    | BERT4RecConfig | HSTUConfig | BPRMFConfig | LightGCNConfig | SimpleXConfig
    | GraphHeuristicConfig | TIGERConfig | TwoStageConfig,
    Field(discriminator="kind"),
]
"""Discriminated union of every model config (the ``kind`` field picks the class)."""

# The two-stage config nests a retriever of any kind: its forward reference is resolved here,
# where the union exists (two_stage.py cannot import this module's names at import time).
TwoStageConfig.model_rebuild(_types_namespace={"AnyModelConfig": AnyModelConfig})


def model_config(kind: str, **params: Any) -> ModelConfig:
    """Validated config of model ``kind``.

    Raises:
        ValueError: For an unknown model name.
    """
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; known: {', '.join(MODELS)}")
    return MODELS[kind].config_cls.model_validate({"kind": kind, **params})


def build_model(cfg: ModelConfig) -> Recommender[Any]:
    """An unfitted model from its config."""
    return MODELS[cfg.kind](cfg)


def load_model(path: Any) -> Recommender[Any]:
    """Load a saved model of any kind (the kind is read from ``config.json``)."""
    import json
    from pathlib import Path

    kind = json.loads((Path(path) / "config.json").read_text())["kind"]
    if kind not in MODELS:
        raise ValueError(f"{path}: unknown model kind {kind!r}")
    return MODELS[kind].load(Path(path))
