"""Item-item models past EASE's dense limit: EASE refuses clearly, ItemKNN stays sparse (and its
sparse path agrees with the dense one) at many items, on small generated data."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from genrec.data.interactions import Interactions
from genrec.data.sources import DataConfig, load_data
from genrec.data.splits import split
from genrec.data.synth import SynthConfig, dataset_config, generate
from genrec.models import ease as ease_module
from genrec.models import itemknn as itemknn_module
from genrec.models.base import FitContext
from genrec.models.ease import EASE, EASEMemoryError, ease_memory_bytes
from genrec.models.itemknn import ItemKNN
from genrec.testing import random_dataset

N_ITEMS = 50_000


@pytest.fixture(scope="module")
def many_items(tmp_path_factory: pytest.TempPathFactory) -> Interactions:
    """Training rows of 150k generated interactions over a 50k-item catalogue (flat
    popularity, so that most items occur)."""
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n_interactions=150_000, n_items=N_ITEMS, item_alpha=0.2, seed=5)
    generate(cfg, out)
    return split(load_data(DataConfig(**dataset_config(Path(out), cfg)))).train


def _neighbours(model: ItemKNN) -> list[np.ndarray]:
    """Per item, its kept similarity values sorted (the same up to tie order)."""
    w = model.similarity_.T.tocsr()
    return [np.sort(w.data[w.indptr[j]:w.indptr[j + 1]]) for j in range(w.shape[0])]


def test_ease_refuses_clearly_when_items_squared_does_not_fit(monkeypatch) -> None:
    train = random_dataset(n_users=30, n_items=25, seed=1).interactions
    monkeypatch.setattr(ease_module, "available_memory_bytes", lambda: 1000)
    with pytest.raises(EASEMemoryError, match=r"25 items needs about .* GiB .* itemknn"):
        EASE().fit(train)
    assert isinstance(EASEMemoryError("x"), MemoryError)
    # Enough memory: it fits as before.
    monkeypatch.setattr(ease_module, "available_memory_bytes", lambda: 10**12)
    assert EASE().fit(train).weights_.shape == (25, 25)


def test_ease_memory_estimate() -> None:
    # 200k items: two dense float32 items^2 matrices, 320 GB: far past any 24 GB box.
    assert ease_memory_bytes(200_000) == 2 * 4 * 200_000**2
    assert ease_memory_bytes(1_000) == 8_000_000
    avail = ease_module.available_memory_bytes()
    assert avail is None or avail > 0


@pytest.mark.slow
def test_itemknn_stays_sparse_at_many_items(many_items: Interactions) -> None:
    assert many_items.n_items > 45_000
    tracemalloc.start()
    try:
        model = ItemKNN(k=20).fit(many_items, FitContext())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n = many_items.n_items
    assert 2048 * n > itemknn_module._CHUNK_PAIRS  # the sparse path ran
    assert isinstance(model.similarity_, sp.csr_matrix)
    assert model.similarity_.shape == (n, n) and model.similarity_.nnz <= 20 * n
    # A dense (items, items) float32 matrix would be 10 GB; the fit stays far below it.
    assert peak < n * n * 4 / 50, peak
    # Scoring a chunk of users gives (chunk, items) without any (items, items) block.
    hist = many_items.histories(np.arange(32))
    assert tuple(model.score(hist).shape) == (32, n)


def test_itemknn_sparse_path_equals_dense_path(monkeypatch) -> None:
    train = random_dataset(n_users=300, n_items=400, min_len=3, max_len=40, seed=6).interactions
    dense = ItemKNN(k=20, shrink=5.0, chunk_size=64).fit(train)
    # A tiny chunk budget sends the same fit down the sparse path, in many chunks.
    monkeypatch.setattr(itemknn_module, "_CHUNK_PAIRS", 2_000)
    assert 64 * train.n_items > itemknn_module._CHUNK_PAIRS
    sparse = ItemKNN(k=20, shrink=5.0, chunk_size=64).fit(train)
    assert sparse.similarity_.nnz == dense.similarity_.nnz
    for a, b in zip(_neighbours(sparse), _neighbours(dense), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_max_user_items_counts_only_recent_items() -> None:
    train = random_dataset(n_users=40, n_items=30, min_len=8, max_len=20, seed=4).interactions
    capped = ItemKNN(k=5, max_user_items=6).fit(train)
    # The same as an uncapped fit on each user's last 6 rows.
    recent = train.frame.filter(pl.int_range(pl.len()).over("user")
                                >= pl.len().over("user").cast(pl.Int64) - 6)
    ref = ItemKNN(k=5).fit(Interactions(recent, train.n_users, train.n_items))
    for a, b in zip(_neighbours(capped), _neighbours(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.array_equal(capped.similarity_.toarray(),
                              ItemKNN(k=5).fit(train).similarity_.toarray())
