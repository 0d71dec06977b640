"""Recommendation models: one interface, one registry."""

from genrec.models.base import ModelConfig, NotFittedError, RecList, Recommender
from genrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from genrec.models.bprmf import BPRMF, BPRMFConfig
from genrec.models.ease import EASE, EASEConfig
from genrec.models.graph_heuristic import GraphHeuristic, GraphHeuristicConfig
from genrec.models.hstu import HSTU, HSTUConfig
from genrec.models.itemknn import ItemKNN, ItemKNNConfig
from genrec.models.lightgcn import LightGCN, LightGCNConfig
from genrec.models.pop import PopConfig, Popularity
from genrec.models.registry import MODELS, build_model, load_model, model_config
from genrec.models.simplex import SimpleX, SimpleXConfig

__all__ = ["EASE", "HSTU", "MODELS", "BERT4Rec", "BERT4RecConfig", "EASEConfig", "HSTUConfig",
           "ItemKNN", "ItemKNNConfig", "ModelConfig", "NotFittedError", "PopConfig", "Popularity",
           "RecList", "Recommender", "build_model", "load_model", "model_config",
           "BPRMF", "BPRMFConfig", "LightGCN", "LightGCNConfig", "SimpleX", "SimpleXConfig",
           "GraphHeuristic", "GraphHeuristicConfig"]
