"""The model registry: one literal mapping from names to classes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from genrec.models.base import ModelConfig, Recommender
from genrec.models.ranker.two_stage import TwoStage, TwoStageConfig
from genrec.models.retrievers import RETRIEVERS, RetrieverConfig, load_from

__all__ = ["MODELS", "AnyModelConfig", "build_model", "model_config", "load_model"]

MODELS: dict[str, type[Recommender[Any]]] = {**RETRIEVERS, "two_stage": TwoStage}

AnyModelConfig = Annotated[RetrieverConfig | TwoStageConfig, Field(discriminator="kind")]
"""Discriminated union of every model config (the ``kind`` field picks the class)."""


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
    return load_from(MODELS, path)
