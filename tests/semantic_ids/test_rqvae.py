"""RQ-VAE: training reduces the loss, k-means init and dead-code reset keep codes alive."""

from __future__ import annotations

import numpy as np
import torch

from genrec.semantic_ids import RQVAETokenizer, codebook_health

from .conftest import clustered

SMALL = {"n_levels": 2, "codebook_size": 8, "latent_dim": 4, "hidden_dims": [32],
         "batch_size": 64, "lr": 3e-3}


def test_rqvae_trains_and_uses_every_code() -> None:
    x, labels = clustered(n_clusters=8, per=30)
    tok = RQVAETokenizer(**SMALL, epochs=25).fit(x)
    losses = [h["loss"] for h in tok.history_]
    assert losses[-1] < losses[0]
    assert tok.codebooks_.shape == (2, 8, 4)
    codes = tok.transform(x)
    assert codes.shape == (len(x), 2)
    # The last dead-code reset leaves every code of every level with an item.
    assert codebook_health(codes, 8).utilisation == [1.0, 1.0]
    # Well-separated clusters stay separated: no first-level code mixes two clusters much.
    purity = np.mean([np.bincount(labels[codes[:, 0] == c]).max() / (codes[:, 0] == c).sum()
                      for c in np.unique(codes[:, 0])])
    assert purity > 0.8


def test_dead_code_reset_revives_codes_that_random_init_leaves_unused() -> None:
    x, _ = clustered(n_clusters=8, per=30)
    cfg = SMALL | {"epochs": 3, "kmeans_init": False}
    dead = RQVAETokenizer(**cfg, dead_code_reset=False).fit(x)
    alive = RQVAETokenizer(**cfg, dead_code_reset=True).fit(x)
    used_dead = codebook_health(dead.transform(x), 8).utilisation
    used_alive = codebook_health(alive.transform(x), 8).utilisation
    assert used_alive == [1.0, 1.0]
    assert min(used_dead) < 1.0
    # The per-epoch history records usage before the reset.
    assert len(alive.history_) == 3 and len(alive.history_[0]["used"]) == 2


def test_rqvae_state_round_trip_and_determinism() -> None:
    x, _ = clustered(n_clusters=4, per=20)
    tok = RQVAETokenizer(**SMALL, epochs=3).fit(x)
    back = RQVAETokenizer.from_state(tok.config, tok.state())
    np.testing.assert_array_equal(back.transform(x), tok.transform(x))
    again = RQVAETokenizer(**SMALL, epochs=3).fit(x)
    torch.testing.assert_close(again.codebooks_, tok.codebooks_, rtol=0, atol=0)
