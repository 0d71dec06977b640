"""Multi-identifier tokenization (MTGRec) on ML-100K: G distinct valid IDs per item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genrec.data.recipes import load_dataset
from genrec.semantic_ids import (
    PrefixTrie,
    RQKMeansConfig,
    SemanticIDs,
    SemanticIDsConfig,
    identifier_groups,
    stack_codes,
)
from genrec.text import ItemTextConfig, item_embeddings


@pytest.fixture(scope="module")
def text_vectors(data_dir: Path) -> np.ndarray:
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    return item_embeddings(ds.items, ds.n_items, ItemTextConfig(encoder="hashing:64",
                                                                cache=False))


def test_each_item_gets_g_distinct_valid_identifiers(text_vectors) -> None:
    cfg = SemanticIDsConfig(tokenizer=RQKMeansConfig(n_levels=2, codebook_size=16, n_iter=10))
    stages = identifier_groups(text_vectors, cfg, 3)
    codes, vocab = stack_codes(stages)
    n = len(text_vectors)
    assert codes.shape == (3, n, 3)
    # Group 0 is the single identifier a plain TIGER gets (same tokenizer seed).
    np.testing.assert_array_equal(codes[0], SemanticIDs(cfg).fit(text_vectors).codes_)
    assert [s.config.tokenizer.seed for s in stages] == [0, 1, 2]
    for g in range(3):  # each group: unique, in-vocabulary codes (a valid trie)
        assert len(np.unique(codes[g], axis=0)) == n
        assert (codes[g] < np.array(vocab)).all()
        PrefixTrie.from_codes(codes[g], vocab)
    # The groups are different tokenizations: nearly every item has 3 distinct identifiers.
    distinct = np.array([len({tuple(codes[g, i]) for g in range(3)}) for i in range(n)])
    assert (distinct == 3).mean() > 0.9
    assert vocab[:2] == [16, 16] and vocab[2] == max(s.vocab_sizes_[2] for s in stages)


def test_stack_codes_refuses_mismatched_groups(text_vectors) -> None:
    a = SemanticIDs(tokenizer=RQKMeansConfig(n_levels=2, codebook_size=8, n_iter=5)
                    ).fit(text_vectors)
    b = SemanticIDs(tokenizer=RQKMeansConfig(n_levels=1, codebook_size=8, n_iter=5)
                    ).fit(text_vectors)
    with pytest.raises(ValueError, match="disagree"):
        stack_codes([a, b])
    with pytest.raises(ValueError, match="n_groups"):
        identifier_groups(text_vectors, SemanticIDsConfig(), 0)
