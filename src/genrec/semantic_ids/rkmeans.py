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
from genrec.semantic_ids._kmeans import kmeans, nearest

__all__ = ["RQKMeansConfig", "RQKMeansTokenizer"]

_log = logging.getLogger(__name__)


class RQKMeansConfig(TokenizerConfig):
    """Residual k-means settings."""

    kind: Literal["rqkmeans"] = "rqkmeans"
    n_iter: int = Field(50, ge=1)
    """Most Lloyd iterations per level."""
    max_train_points: int | None = Field(65_536, ge=1)
    """Fit each level's centres on at most this many items (a seeded sample, as faiss does
    with 256 points per centre), then assign every item to its nearest centre; None fits on
    all items. Catalogues up to this size are fitted on every item, so their codes do not
    depend on it; above it the fit costs one pass over the items per level instead of
    ``n_iter``."""


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
        n, cap = len(residual), c.max_train_points
        sample = None
        if cap is not None and n > cap:
            gen = torch.Generator().manual_seed(c.seed)
            sample = torch.randperm(n, generator=gen)[:cap].sort().values
            _log.info("rq-kmeans: fitting centres on %d of %d items", cap, n)
        books = []
        for level in range(c.n_levels):
            if sample is None:
                centres, labels = kmeans(residual, c.codebook_size, n_iter=c.n_iter,
                                         seed=c.seed + level)
            else:
                centres, _ = kmeans(residual[sample], c.codebook_size, n_iter=c.n_iter,
                                    seed=c.seed + level)
                labels = nearest(residual, centres)
            books.append(centres)
            residual -= centres[labels]
            _log.debug("rq-kmeans level %d: residual norm %.4f", level,
                       float(residual.norm(dim=1).mean()))
        self.codebooks_ = torch.stack(books)                           # (L, K, D)
        return self

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        return x
