"""The rating-model registry: one literal mapping from names to classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from genrec.models.base import ModelConfig
from genrec.models.rating.autorec import AutoRec, AutoRecConfig
from genrec.models.rating.base import RatingModel
from genrec.models.rating.baseline import Biases, BiasesConfig, GlobalMean, GlobalMeanConfig
from genrec.models.rating.blend import Blend, BlendConfig
from genrec.models.rating.knn import KNNBaseline, KNNBaselineConfig
from genrec.models.rating.mf import BiasedMF, BiasedMFConfig
from genrec.models.rating.svdpp import SVDpp, SVDppConfig
from genrec.models.rating.text import TextRating, TextRatingConfig

__all__ = ["RATING_MODELS", "AnyRatingConfig", "build_rating_model", "load_rating_model"]

RATING_MODELS: dict[str, type[RatingModel[Any]]] = {
    "global_mean": GlobalMean,
    "biases": Biases,
    "biased_mf": BiasedMF,
    "svdpp": SVDpp,
    "autorec": AutoRec,
    "knn_baseline": KNNBaseline,
    "text_rating": TextRating,
    "blend": Blend,
}

AnyRatingConfig = Annotated[
    GlobalMeanConfig | BiasesConfig | BiasedMFConfig | SVDppConfig | AutoRecConfig
    | KNNBaselineConfig | TextRatingConfig | BlendConfig,
    Field(discriminator="kind"),
]
"""Discriminated union of every rating-model config."""


def build_rating_model(cfg: ModelConfig) -> RatingModel[Any]:
    """An unfitted rating model from its config."""
    return RATING_MODELS[cfg.kind](cfg)


def load_rating_model(path: str | Path) -> RatingModel[Any]:
    """Load a saved rating model of any kind (the kind is read from ``config.json``).

    Raises:
        ValueError: For a kind that is not a rating model.
    """
    kind = json.loads((Path(path) / "config.json").read_text())["kind"]
    if kind not in RATING_MODELS:
        raise ValueError(f"{path}: {kind!r} is not a rating model")
    return RATING_MODELS[kind].load(Path(path))
