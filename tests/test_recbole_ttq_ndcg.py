"""``benchmarks/_ttq_ndcg.py`` (the numpy NDCG@10 that scores RecBole's model in the
time-to-quality benchmark) agrees with genrec's evaluator, user by user."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from genrec.data.interactions import EvalSet, Histories
from genrec.data.splits import SplitConfig, split
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.protocol import Protocol
from genrec.testing.fixtures import random_dataset

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_ttq_ndcg.py"
_spec = importlib.util.spec_from_file_location("_ttq_ndcg", _PATH)
assert _spec is not None and _spec.loader is not None
ttq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ttq)


class RandomScorer:
    """Fixed random scores per user (no ties)."""

    def __init__(self, n_users: int, n_items: int, seed: int) -> None:
        self.table = torch.from_numpy(np.random.default_rng(seed).standard_normal(
            (n_users, n_items)))

    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
        return self.table[torch.from_numpy(histories.users)].clone()


def _ours(scorer: RandomScorer, es: EvalSet) -> np.ndarray:
    h = es.histories
    scores = scorer.score(h).numpy()
    return ttq.ndcg_single_target(scores, es.target_items, h.indptr, h.items, k=10)


def test_matches_genrec_evaluator_on_leave_one_out_validation() -> None:
    ds = random_dataset(n_users=200, n_items=60, min_len=3, max_len=40, seed=3)
    sp = split(ds, SplitConfig(kind="leave_one_out"))
    es = sp.valid_set()
    assert (np.diff(es.target_indptr) == 1).all()
    protocol = Protocol(candidates="full", exclude_seen=True, metrics=["ndcg"], cutoffs=[10])
    for seed in range(3):
        scorer = RandomScorer(ds.n_users, ds.n_items, seed)
        ref = evaluate(scorer, es, protocol).per_user["ndcg@10"]
        ours = _ours(scorer, es)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
        assert 0 < (ours > 0).sum() < len(ours)  # both hits and misses are exercised


def test_seen_target_scores_zero_and_invalid_columns_never_rank() -> None:
    scores = np.array([[0.0, 5.0, 4.0, 3.0], [9.0, 1.0, 2.0, 3.0]])
    # user 0: target 1 is in its history -> 0; user 1: column 0 is invalid, so target 3 is first
    out = ttq.ndcg_single_target(scores, np.array([1, 3]), np.array([0, 1, 1]), np.array([1]),
                                 k=10, invalid=np.array([0]))
    np.testing.assert_allclose(out, [0.0, 1.0])
    # without the invalid column, target 3 of user 1 is second: 1 / log2(3)
    out = ttq.ndcg_single_target(scores, np.array([1, 3]), np.array([0, 1, 1]), np.array([1]))
    np.testing.assert_allclose(out, [0.0, 1 / np.log2(3)])
