"""Recommendation models: one interface, one registry."""

from genrec.models.base import ModelConfig, NotFittedError, RecList, Recommender
from genrec.models.ease import EASE, EASEConfig
from genrec.models.itemknn import ItemKNN, ItemKNNConfig
from genrec.models.pop import PopConfig, Popularity
from genrec.models.registry import MODELS, build_model, load_model, model_config

__all__ = ["EASE", "EASEConfig", "ItemKNN", "ItemKNNConfig", "MODELS", "ModelConfig",
           "NotFittedError", "PopConfig", "Popularity", "RecList", "Recommender", "build_model",
           "load_model", "model_config"]
