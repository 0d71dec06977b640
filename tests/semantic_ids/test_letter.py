"""LETTER tokenizer on ML-100K: the alignment term falls, the balance term spreads codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.data.recipes import load_dataset
from genrec.semantic_ids import (
    LETTERTokenizer,
    SemanticIDs,
    SemanticIDsConfig,
    balance_loss,
    codebook_health,
    collaborative_item_vectors,
)
from genrec.text import ItemTextConfig, item_embeddings

SMALL = {"n_levels": 2, "codebook_size": 16, "latent_dim": 16, "hidden_dims": [64],
         "batch_size": 256, "lr": 3e-3}


@pytest.fixture(scope="module")
def ml100k_vectors(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Text (hashing encoder) and collaborative vectors of the ML-100K items."""
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    text = item_embeddings(ds.items, ds.n_items, ItemTextConfig(encoder="hashing:64",
                                                                cache=False))
    return text, collaborative_item_vectors(ds.interactions, 32)


@pytest.mark.slow
def test_alignment_loss_decreases_and_cold_items_are_coded(ml100k_vectors) -> None:
    text, cf = ml100k_vectors
    cf = cf.copy()
    cf[:50] = 0.0                                      # 50 "cold" items: no collaborative vector
    tok = LETTERTokenizer(**SMALL, epochs=5, collab_weight=1.0, balance_weight=0.1).fit(
        text, collaborative=cf)
    align = [h["align"] for h in tok.history_]
    assert align[-1] < align[0] - 0.1, align
    assert {"recon", "balance"} <= set(tok.history_[0])
    codes = tok.transform(text)                        # text alone codes every item
    assert codes.shape == (len(text), 2) and codes.max() < 16
    # The stage passes the collaborative vectors through; the projection is not saved.
    stage = SemanticIDs(SemanticIDsConfig(tokenizer={"kind": "letter", **SMALL, "epochs": 1})
                        ).fit(text, collaborative=cf)
    assert stage.codes_.shape == (len(text), 3)
    assert not any(k.startswith("net.") and "proj" in k for k in stage.tokenizer_.state())


def test_letter_needs_collaborative_vectors(ml100k_vectors) -> None:
    text, _ = ml100k_vectors
    with pytest.raises(ValueError, match="collaborative"):
        LETTERTokenizer(**SMALL, epochs=1).fit(text)


def test_balance_loss_is_zero_when_even_and_positive_when_collapsed() -> None:
    books = torch.eye(4)[None] * 10.0                  # (1, 4, 4): 4 far-apart codewords
    even = books[0].repeat(8, 1)                        # every codeword used equally
    collapsed = books[0, :1].repeat(32, 1)              # everything on codeword 0
    assert balance_loss([even], books, 0.1) < 1e-3
    assert balance_loss([collapsed], books, 0.1) > np.log(4) - 0.1


def test_balance_term_spreads_codes(ml100k_vectors) -> None:
    text, _ = ml100k_vectors
    # No k-means start and no dead-code reset: RQ-VAE alone leaves codes unevenly used.
    cfg = SMALL | {"epochs": 6, "kmeans_init": False, "dead_code_reset": False,
                   "collab_weight": 0.0}
    plain = LETTERTokenizer(**cfg, balance_weight=0.0).fit(text)
    spread = LETTERTokenizer(**cfg, balance_weight=1.0).fit(text)
    h_plain = codebook_health(plain.transform(text), 16)
    h_spread = codebook_health(spread.transform(text), 16)
    assert np.mean(h_spread.normalised_entropy) > np.mean(h_plain.normalised_entropy) + 0.02, (
        h_plain.normalised_entropy, h_spread.normalised_entropy)
