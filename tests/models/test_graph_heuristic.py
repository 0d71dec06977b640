"""Graph heuristic (TGH): the contract, hand-computed rings and scores, the budget queue."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError

from genrec.data.interactions import Dataset, Histories
from genrec.models import graph_heuristic
from genrec.models.base import FitContext
from genrec.models.graph_heuristic import (
    GraphHeuristic,
    GraphHeuristicConfig,
    assemble_rings,
    transition_counts,
)
from genrec.testing import RecommenderContract


class TestGraphHeuristic(RecommenderContract):
    model_cls = GraphHeuristic


class TestGraphHeuristicOneSource(RecommenderContract):
    model_cls = GraphHeuristic
    params = {"budgets": [[7, 2, 1]], "similarity": "popularity"}


@pytest.fixture(scope="module")
def toy() -> Dataset:
    """Three users; items a=0, b=1, c=2, d=3, e=4 by first appearance.

    u0: a b c, u1: b c d, u2: c e. Transitions: a->b (1), b->c (2), c->d (1), c->e (1).
    """
    seqs = {"u0": "abc", "u1": "bcd", "u2": "ce"}
    frame = pl.DataFrame({"user": [u for u, s in seqs.items() for _ in s],
                          "item": [i for s in seqs.values() for i in s]})
    return Dataset.from_raw("toy", frame)


def test_transition_counts(toy: Dataset) -> None:
    expected = np.zeros((5, 5))
    expected[0, 1], expected[1, 2], expected[2, 3], expected[2, 4] = 1, 2, 1, 1
    np.testing.assert_array_equal(transition_counts(toy.interactions).toarray(), expected)


def test_hand_computed_scores(toy: Dataset) -> None:
    # History a, b: ring 1 of b = {c}; ring 2 = {d, e}. Co-occurrence cosines with b
    # (users of b: u0, u1): d (u1) 1/sqrt(2), e (no common user) 0, so ring 2 is d, e.
    # Budgets [1, 1]: the block is c, d; e is ring 2's surplus and follows the block.
    model = GraphHeuristic(budgets=[[1, 1]]).fit(toy.interactions)
    scores = model.score(Histories.from_lists([[0, 1]], n_items=5))[0]
    top = 3.0 * (5 + 2 + 1)
    pop = np.array([1, 2, 3, 1, 1]) / 3.0
    assert scores[2] == top and scores[3] == top - 1   # the block: c then d
    assert scores[4] == top - 2 - 2                     # e: list position 2, after the block
    # Seen items: similarity to b (a: 1/sqrt(2); b: no self-similarity), minus 4.
    torch.testing.assert_close(scores[:2], torch.tensor(
        [1 / np.sqrt(2) + 1e-6 * pop[0] - 4, 1e-6 * pop[1] - 4], dtype=torch.float32))
    assert model.recommend(Histories.from_lists([[0, 1]], 5), k=3).items.tolist() == [[2, 3, 4]]


def test_short_block_is_padded_by_similarity(toy: Dataset) -> None:
    # History d: d has no out-edges, so no rings; the list is padded by similarity to d
    # (users of d: u1 = {b, c, d}): b and c at 1/sqrt(2) and 1/sqrt(3).
    model = GraphHeuristic(budgets=[[1, 1]]).fit(toy.interactions)
    rec = model.recommend(Histories.from_lists([[3]], n_items=5), k=2)
    assert rec.items.tolist() == [[1, 2]]


def test_empty_history_ranks_by_popularity(toy: Dataset) -> None:
    model = GraphHeuristic().fit(toy.interactions)
    rec = model.recommend(Histories.from_lists([[]], n_items=5), k=5)
    assert rec.items[0, :2].tolist() == [2, 1]          # c (3 events), b (2 events)


def test_edge_weight_and_embeddings_order_ring_one(toy: Dataset, monkeypatch) -> None:
    # History b, c: ring 1 of c = {d, e}, equal transition counts. Text embeddings make e the
    # nearer item to c; with them ring 1 is e, d.
    emb = np.array([[1, 0], [1, 0], [0, 1], [1, 0.1], [0.1, 1]], dtype=np.float32)
    seen: list[tuple] = []

    def fake_text(items: pl.DataFrame, n_items: int, config) -> np.ndarray:
        seen.append((items, n_items, config))
        return emb

    monkeypatch.setattr(graph_heuristic, "item_embeddings", fake_text)
    model = GraphHeuristic(budgets=[[2]], similarity="text").fit(
        toy.interactions, FitContext(items=toy.items))
    assert len(seen) == 1 and seen[0][0] is toy.items and seen[0][1] == 5
    rec = model.recommend(Histories.from_lists([[1, 2]], n_items=5), k=2)
    assert rec.items.tolist() == [[4, 3]]
    with pytest.raises(ValueError, match="item features"):
        GraphHeuristic(similarity="text").fit(toy.interactions)


def test_text_similarity_from_item_features(toy: Dataset, tmp_path) -> None:
    titles = pl.DataFrame({"item": list("abcde"),
                           "title": ["red shoe", "blue shoe", "green hat", "red hat", "tea"]})
    ds = Dataset.from_raw("toy", toy.interactions.frame.select("user", "item").with_columns(
        pl.col("item").replace_strict(range(5), list("abcde"), return_dtype=pl.String)),
        items=titles)
    assert ds.items.height == 5
    text = {"encoder": "hashing:64", "cache": False}
    model = GraphHeuristic(similarity="text", text=text).fit(ds.interactions,
                                                             FitContext(items=ds.items))
    assert model.item_embeddings_.shape == (5, 64)
    torch.testing.assert_close(model.item_embeddings_.norm(dim=1), torch.ones(5))
    hist = Histories.from_lists([[1, 2]], n_items=5)
    model.save(tmp_path / "m")
    loaded = GraphHeuristic.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.recommend(hist, k=3).items,
                                  model.recommend(hist, k=3).items)


def test_second_source_skips_the_first_block(toy: Dataset) -> None:
    # History b, c with budgets [[1], [1]]: source 1 (c) picks its best ring-1 item; source 2
    # (b) has ring 1 = {c}, which is seen, so its block is padded with its most similar
    # free item (d: shares user u1 with b), unless source 1 already took it.
    model = GraphHeuristic(budgets=[[1], [1]]).fit(toy.interactions)
    rec = model.recommend(Histories.from_lists([[1, 2]], n_items=5), k=2).items[0].tolist()
    assert len(set(rec)) == 2 and set(rec) <= {0, 3, 4}


def test_queue_fills_shortfalls_like_the_reference() -> None:
    # Rings of sizes 10, 0, 1 with budgets 7, 2, 1: ring 2's shortfall takes ring 1's 8th
    # and 9th items, ring 3 its own item, then ring 1's 10th item follows.
    rows = [np.zeros(10, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64)]
    ranks = [np.arange(10), np.zeros(0, np.int64), np.arange(1)]
    pos, n = assemble_rings(rows, ranks, [7, 2, 1], 1)
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert pos[2].tolist() == [9] and n.tolist() == [11]


def test_queue_positions_are_a_permutation() -> None:
    rng = np.random.default_rng(0)
    budgets = [3, 2, 1]
    sizes = rng.integers(0, 6, size=(50, 3))
    rows = [np.repeat(np.arange(50), sizes[:, h]) for h in range(3)]
    ranks = [np.concatenate([np.arange(s) for s in sizes[:, h]]).astype(np.int64)
             for h in range(3)]
    pos, n = assemble_rings(rows, ranks, budgets, 50)
    for u in range(50):
        mine = np.concatenate([p[r == u] for p, r in zip(pos, rows, strict=True)])
        assert sorted(mine.tolist()) == list(range(n[u]))


def test_budgets_are_validated() -> None:
    with pytest.raises(ValidationError):
        GraphHeuristicConfig(budgets=[])
    with pytest.raises(ValidationError):
        GraphHeuristicConfig(budgets=[[0, 0]])
