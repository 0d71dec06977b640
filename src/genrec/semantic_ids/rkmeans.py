"""RQ-KMeans: residual k-means semantic IDs.

Level 1 clusters the item vectors into ``K`` groups; level ``l`` clusters what the previous
levels left unexplained (the residuals) into ``K`` more. An item's code is the list of its
cluster ids. No training beyond k-means, so it is fast, deterministic for a seed and does not
suffer the codebook collapse of RQ-VAE (k-means moves a cluster that empties onto the point
farthest from its centre, so codes stay in use).
"""

from __future__ import annotations

import logging
from typing import Literal, Self

import numpy as np
import torch
from pydantic import Field

from genrec.semantic_ids._base import Tokenizer, TokenizerConfig
from genrec.semantic_ids._kmeans import kmeans

__all__ = ["RQKMeansConfig", "RQKMeansTokenizer"]

_log = logging.getLogger(__name__)


class RQKMeansConfig(TokenizerConfig):
    """Residual k-means settings."""

    kind: Literal["rqkmeans"] = "rqkmeans"
    n_iter: int = Field(50, ge=1)
    """Most Lloyd iterations per level."""


class RQKMeansTokenizer(Tokenizer):
    """Residual k-means tokenizer: ``fit(item_emb) -> self``, ``transform(item_emb) -> codes``.

    Attributes:
        codebooks_: Cluster centres per level, shape ``(L, K, D)`` (in the input space).
    """

    config_cls = RQKMeansConfig
    config: RQKMeansConfig

    def fit(self, item_emb: np.ndarray | torch.Tensor) -> Self:
        """Learn ``L`` codebooks of ``K`` centres by residual k-means on ``(n, D)`` vectors."""
        c = self.config
        residual = torch.as_tensor(np.asarray(item_emb), dtype=torch.float32).clone()
        books = []
        for level in range(c.n_levels):
            centres, labels = kmeans(residual, c.codebook_size, n_iter=c.n_iter,
                                     seed=c.seed + level)
            books.append(centres)
            residual -= centres[labels]
            _log.debug("rq-kmeans level %d: residual norm %.4f", level,
                       float(residual.norm(dim=1).mean()))
        self.codebooks_ = torch.stack(books)                           # (L, K, D)
        return self

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        return x
