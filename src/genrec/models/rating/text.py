"""A text-aware rating regressor: biased MF (optionally SVD++) whose item factor and bias
add a learned map of the item's frozen text embedding (all-MiniLM-L6-v2 by default; see
:mod:`genrec.models.rating._net`). Items with few ratings borrow from items with similar text.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from genrec.data.interactions import Interactions
from genrec.models.base import FitContext
from genrec.models.rating._net import NetRatingConfig, NetRatingModel
from genrec.text import ItemTextConfig, item_embeddings

__all__ = ["TextRating", "TextRatingConfig"]


class TextRatingConfig(NetRatingConfig):
    """Text-aware regressor over item text embeddings."""

    kind: Literal["text_rating"] = "text_rating"
    implicit: bool = True
    """Add the SVD++ implicit-feedback term to the user vector."""
    text: ItemTextConfig = Field(default_factory=ItemTextConfig)
    """Item text template, encoder and embedding cache."""


class TextRating(NetRatingModel[TextRatingConfig]):
    """Biased MF / SVD++ with item text in the item factor and bias."""

    config_cls = TextRatingConfig

    def _implicit(self, train: Interactions) -> bool:
        return self.config.implicit

    def _text(self, train: Interactions, ctx: FitContext) -> torch.Tensor | None:
        emb = item_embeddings(ctx.items, train.n_items, self.config.text,
                              who="text_rating")                          # (I, T)
        return torch.from_numpy(emb)
