"""Several semantic-ID assignments per item (MTGRec's multi-identifier tokenization).

MTGRec (Zheng et al., "Pre-training Generative Recommender with Multi-Identifier Item
Tokenization", 2025) gives every item several identifiers from semantically related
tokenizers (RQ-VAE checkpoints of adjacent epochs) and pre-trains one generative model on the
user sequences tokenized with each. Here the related tokenizers are the same tokenizer fitted
with ``G`` consecutive seeds on the same item vectors (``seed, seed + 1, ...``): the same
codebook shape and data, different k-means starts / initialisations, so the identifiers agree
on coarse structure and differ in detail. Group 0 uses the configured seed, so it is exactly
the single identifier a plain TIGER would use (and the one MTGRec fine-tunes and decodes on).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from genrec.semantic_ids.stage import SemanticIDs, SemanticIDsConfig

__all__ = ["identifier_groups", "stack_codes"]

_log = logging.getLogger(__name__)


def identifier_groups(item_vectors: np.ndarray, config: SemanticIDsConfig, n_groups: int, *,
                      source: Mapping[str, Any] | None = None,
                      collaborative: np.ndarray | None = None) -> list[SemanticIDs]:
    """Fit ``n_groups`` semantic-ID stages on the same vectors, tokenizer seeds
    ``seed + g``.

    Args:
        item_vectors: One vector per item ``(n_items, D)``.
        config: The stage settings of group 0.
        n_groups: Identifiers per item ``G`` (>= 1).
        source: How the vectors were made (recorded in each stage).
        collaborative: Collaborative vectors for tokenizers that use them.

    Returns:
        ``G`` fitted stages, group 0 first.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    stages = []
    for g in range(n_groups):
        tok = config.tokenizer.model_copy(update={"seed": config.tokenizer.seed + g})
        stage = SemanticIDs(SemanticIDsConfig(tokenizer=tok)).fit(
            item_vectors, source=source, collaborative=collaborative)
        stages.append(stage)
        _log.info("identifier group %d (tokenizer seed %d): %.1f%% of items need a dedup code",
                  g, tok.seed, 100 * stage.health_.collision_rate)
    return stages


def stack_codes(stages: list[SemanticIDs]) -> tuple[np.ndarray, list[int]]:
    """The codes of every group as one array, and the vocabulary sizes that cover them all.

    Returns:
        ``(codes (G, n_items, C) int64, per-level max of the groups' vocab sizes)``.

    Raises:
        ValueError: If the groups code different catalogues or code lengths.
    """
    shapes = {s.codes_.shape for s in stages}
    if len(shapes) != 1:
        raise ValueError(f"identifier groups disagree on (n_items, code length): {shapes}")
    codes = np.stack([s.codes_ for s in stages])
    vocab = [max(v) for v in zip(*(s.vocab_sizes_ for s in stages), strict=True)]
    return codes, vocab
