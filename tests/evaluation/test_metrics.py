"""Ranking metrics: hand-computed values, then agreement with ranx per user.

ranx compiles its metrics with numba on first use (cached on disk afterwards), so the ranx
comparisons share one module-scoped warm-up and stay small.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from genrec.data.interactions import EvalSet, Histories, Interactions
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.metrics import (
    METRICS,
    hit_rate_at_k,
    map_at_k,
    metric_curve,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from genrec.evaluation.protocol import Protocol

ranx = pytest.importorskip("ranx")

RANX_NAMES = {"recall": "recall", "ndcg": "ndcg", "mrr": "mrr", "map": "map",
              "precision": "precision", "hit": "hit_rate"}

L2, L3, L4, L5 = (1 / math.log2(n) for n in (2, 3, 4, 5))  # discounts of ranks 1..4


def _t(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# Four users, top 5 each:
#   0: hits at ranks 2 and 4, 3 relevant items
#   1: no hit, 2 relevant items
#   2: hit at rank 1, 1 relevant item
#   3: hits at ranks 1, 3 and 5, 4 relevant items
HITS = _t([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 1, 0, 1]])
N_REL = torch.tensor([3, 2, 1, 4])

HAND = {  # metric -> k -> per-user values, worked out on paper
    "recall": {5: [2 / 3, 0, 1, 3 / 4], 3: [1 / 3, 0, 1, 2 / 4], 1: [0, 0, 1, 1 / 4]},
    "precision": {5: [2 / 5, 0, 1 / 5, 3 / 5], 3: [1 / 3, 0, 1 / 3, 2 / 3], 1: [0, 0, 1, 1]},
    "hit": {5: [1, 0, 1, 1], 3: [1, 0, 1, 1], 1: [0, 0, 1, 1]},
    "mrr": {5: [1 / 2, 0, 1, 1], 3: [1 / 2, 0, 1, 1], 1: [0, 0, 1, 1]},
    "map": {
        5: [(1 / 2 + 2 / 4) / 3, 0, 1, (1 + 2 / 3 + 3 / 5) / 4],
        3: [(1 / 2) / 3, 0, 1, (1 + 2 / 3) / 4],
        1: [0, 0, 1, 1 / 4],
    },
    "ndcg": {
        5: [(L3 + L5) / (L2 + L3 + L4), 0, 1,
            (L2 + L4 + 1 / math.log2(6)) / (L2 + L3 + L4 + L5)],
        3: [L3 / (L2 + L3 + L4), 0, 1, (L2 + L4) / (L2 + L3 + L4)],
        1: [0, 0, 1, 1],
    },
}


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("k", [1, 3, 5])
def test_hand_computed_values(name: str, k: int) -> None:
    out = METRICS[name](HITS, N_REL, k)
    assert out.shape == (4,)
    np.testing.assert_allclose(out.numpy(), HAND[name][k], rtol=0, atol=1e-12)


def test_metric_table_names_the_functions() -> None:
    assert METRICS == {"recall": recall_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k,
                       "map": map_at_k, "precision": precision_at_k, "hit": hit_rate_at_k}


def test_user_without_relevant_items_scores_zero_not_nan() -> None:
    hits, n_rel = _t([[0, 0, 0]]), torch.tensor([0])
    for name, fn in METRICS.items():
        assert fn(hits, n_rel, 3).item() == 0.0, name


def test_cutoff_beyond_the_ranked_list() -> None:
    # Only 2 items could be ranked (tiny catalogue) but K = 5: precision still divides by K,
    # NDCG's ideal list is capped by the number of relevant items.
    hits, n_rel = _t([[1, 1]]), torch.tensor([2])
    assert precision_at_k(hits, n_rel, 5).item() == pytest.approx(2 / 5)
    assert recall_at_k(hits, n_rel, 5).item() == pytest.approx(1.0)
    assert ndcg_at_k(hits, n_rel, 5).item() == pytest.approx(1.0)
    assert map_at_k(hits, n_rel, 5).item() == pytest.approx(1.0)


def test_one_target_recall_equals_hit_rate() -> None:
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(20, 10, dtype=torch.float64)
    hits[torch.arange(20), torch.randint(0, 10, (20,), generator=g)] = 1.0
    hits[::3] = 0.0  # some users miss
    n_rel = torch.ones(20, dtype=torch.long)
    for k in (1, 5, 10):
        torch.testing.assert_close(recall_at_k(hits, n_rel, k), hit_rate_at_k(hits, n_rel, k))


# -- agreement with ranx -----------------------------------------------------------------------
def _ranx_per_user(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                   names: list[str]) -> dict[str, dict[str, float]]:
    """Ranx's per-query values, ``{metric: {query: value}}``."""
    r = ranx.Run(run)
    ranx.evaluate(ranx.Qrels(qrels), r, names, return_mean=False)
    return {m: dict(r.scores[m]) for m in names}


@pytest.fixture(scope="module")
def warm_ranx() -> None:
    """Compile ranx's metrics once (numba), outside any assertion."""
    _ranx_per_user({"q": {"a": 1}}, {"q": {"a": 1.0, "b": 0.5}},
                   [f"{RANX_NAMES[m]}@1" for m in METRICS])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_ranx_on_random_rankings(seed: int, warm_ranx: None) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 30
    cutoffs = [1, 3, 5, 10, 30, 40]  # 40 > n_items: the ranked list is shorter than K
    rankings = np.stack([rng.permutation(n_items) for _ in range(n_users)])  # (U, I)
    relevant = [rng.choice(n_items, rng.integers(1, 8), replace=False) for _ in range(n_users)]
    # The same rankings go to both: genrec as a hit matrix, ranx as tie-free scores.
    hits = torch.from_numpy(np.stack(
        [np.isin(rankings[u], relevant[u]) for u in range(n_users)]).astype(np.float64))
    n_rel = torch.tensor([len(r) for r in relevant])
    qrels = {f"q{u}": {f"d{i}": 1 for i in relevant[u]} for u in range(n_users)}
    run = {f"q{u}": {f"d{i}": float(n_items - r) for r, i in enumerate(rankings[u])}
           for u in range(n_users)}
    names = [f"{RANX_NAMES[m]}@{k}" for m in METRICS for k in cutoffs]
    ref = _ranx_per_user(qrels, run, names)
    for m, fn in METRICS.items():
        for k in cutoffs:
            ours = fn(hits, n_rel, k).numpy()
            theirs = np.array([ref[f"{RANX_NAMES[m]}@{k}"][f"q{u}"] for u in range(n_users)])
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6, err_msg=f"{m}@{k}")


class _TableScorer:
    """A fake model: fixed tie-free scores per user, whatever the history."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.from_numpy(table)

    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
        out = self.table[torch.from_numpy(histories.users)].clone()
        return out if items is None else out[:, torch.from_numpy(items)]


def test_evaluator_end_to_end_agrees_with_ranx(warm_ranx: None) -> None:
    rng = np.random.default_rng(11)
    n_users, n_items = 50, 25
    rows = [(u, i, t) for t, (u, i) in enumerate(
        zip(rng.integers(0, n_users, 300), rng.integers(0, n_items, 300), strict=True))]
    hist = Interactions(_frame(rows), n_users, n_items)
    tgt_rows = [(u, i, 0) for u in range(n_users) if u % 7 != 3  # some users have no target
                for i in rng.choice(n_items, rng.integers(1, 6), replace=False)]
    data = EvalSet.build(hist, Interactions(_frame(tgt_rows), n_users, n_items))
    # Integer-valued float32 scores: exactly representable, so there are no ties anywhere.
    table = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32)
    protocol = Protocol(cutoffs=[1, 5, 10, 20])
    result = evaluate(_TableScorer(table), data, protocol, batch_size=16)

    # Independent reference: per user, drop seen items, rank the rest by score (Python sort).
    qrels, run = {}, {}
    for row, u in enumerate(data.histories.users):
        seen = set(data.histories.items[data.histories.indptr[row]:
                                        data.histories.indptr[row + 1]].tolist())
        targets = data.target_items[data.target_indptr[row]:data.target_indptr[row + 1]]
        ranked = sorted((i for i in range(n_items) if i not in seen), key=lambda i: -table[u, i])
        qrels[f"q{row}"] = {f"d{i}": 1 for i in targets.tolist()}
        run[f"q{row}"] = {f"d{i}": float(n_items - r) for r, i in enumerate(ranked)}
    assert any(set(qrels[f"q{r}"]) - set(run[f"q{r}"]) for r in range(len(data))), \
        "the case must include targets already in the history"
    names = [f"{RANX_NAMES[m]}@{k}" for m in protocol.metrics for k in protocol.cutoffs]
    ref = _ranx_per_user(qrels, run, names)
    np.testing.assert_array_equal(result.users, data.histories.users)
    for m in protocol.metrics:
        for k in protocol.cutoffs:
            theirs = np.array([ref[f"{RANX_NAMES[m]}@{k}"][f"q{r}"] for r in range(len(data))])
            np.testing.assert_allclose(result.per_user[f"{m}@{k}"], theirs, rtol=0, atol=1e-6,
                                       err_msg=f"{m}@{k}")


def _frame(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    u, i, t = zip(*rows, strict=True) if rows else ((), (), ())
    return pl.DataFrame({"user": list(u), "item": list(i), "timestamp": list(t)},
                        schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64})


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_curve_equals_the_metric_at_every_cutoff(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    hits = (torch.rand(300, 25, generator=gen) < 0.08).double()
    n_rel = torch.randint(0, 6, (300,), generator=gen).double()
    n_rel = torch.maximum(n_rel, hits.sum(1))          # never fewer relevant than found
    curve = metric_curve(name, hits, n_rel)
    expected = torch.stack([METRICS[name](hits, n_rel, c).mean() for c in range(1, 26)])
    assert curve.shape == (25,)
    assert torch.allclose(curve, expected, atol=1e-12)
    assert metric_curve(name, hits[:, :0], n_rel).shape == (0,)
