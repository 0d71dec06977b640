"""The batched evaluator against a naive per-user Python loop."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from genrec.data.interactions import EvalSet, Histories, Interactions
from genrec.evaluation.evaluator import EvalResult, _sample_negatives, evaluate
from genrec.evaluation.protocol import Protocol

N_USERS, N_ITEMS = 30, 40


class TableScorer:
    """A fake model with fixed, tie-free scores per user; it records what it was given."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.from_numpy(table)
        self.calls: list[Histories] = []

    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
        self.calls.append(histories)
        out = self.table[torch.from_numpy(histories.users)].clone()  # (B, I), a fresh block
        return out if items is None else out[:, torch.from_numpy(items)]


def _interactions(rows: list[tuple[int, int, int]]) -> Interactions:
    u, i, t = zip(*rows, strict=True)
    frame = pl.DataFrame({"user": u, "item": i, "timestamp": t},
                         schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64})
    return Interactions(frame, N_USERS, N_ITEMS)


def _eval_set(seed: int = 0) -> EvalSet:
    """Random histories (0..12 events, repeats allowed) and 1..5 targets, some already seen."""
    rng = np.random.default_rng(seed)
    hist, tgt = [], []
    t = 0
    for u in range(N_USERS):
        for i in rng.integers(0, N_ITEMS, rng.integers(0, 13)):
            hist.append((u, int(i), t))
            t += 1
        if u % 6 != 5:  # every sixth user has no target and is not evaluated
            for i in rng.choice(N_ITEMS, rng.integers(1, 6), replace=False):
                tgt.append((u, int(i), t))
    return EvalSet.build(_interactions(hist), _interactions(tgt))


def _table(seed: int = 0) -> np.ndarray:
    """Integer-valued float32 scores: exactly representable, so no ties."""
    rng = np.random.default_rng(seed + 100)
    return rng.permutation(N_USERS * N_ITEMS).reshape(N_USERS, N_ITEMS).astype(np.float32)


def _rows(data: EvalSet) -> list[tuple[int, list[int], set[int]]]:
    """(user, full history, targets) per evaluated user, from plain Python slicing."""
    h = data.histories
    return [(int(h.users[r]), h.items[h.indptr[r]:h.indptr[r + 1]].tolist(),
             set(data.target_items[data.target_indptr[r]:data.target_indptr[r + 1]].tolist()))
            for r in range(len(data))]


def _naive(ranked: list[int], targets: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user at a time."""
    hits = [1 if i in targets else 0 for i in ranked[:k]]
    n = len(targets)
    first = next((r for r, x in enumerate(hits) if x), None)
    dcg = sum(x / math.log2(r + 2) for r, x in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(n, k)))
    return {
        "recall": sum(hits) / n,
        "precision": sum(hits) / k,
        "hit": float(any(hits)),
        "mrr": 0.0 if first is None else 1 / (first + 1),
        "map": sum(sum(hits[: r + 1]) / (r + 1) for r, x in enumerate(hits) if x) / n,
        "ndcg": dcg / idcg,
    }


def _reference(table: np.ndarray, data: EvalSet, protocol: Protocol,
               candidates: list[set[int]] | None = None) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {f"{m}@{k}": [] for m in protocol.metrics
                                   for k in protocol.cutoffs}
    for row, (u, hist, targets) in enumerate(_rows(data)):
        pool = set(range(N_ITEMS)) if candidates is None else candidates[row]
        if protocol.exclude_seen:
            pool -= set(hist)
        ranked = sorted(pool, key=lambda i: -table[u, i])
        for k in protocol.cutoffs:
            values = _naive(ranked, targets, k)
            for m in protocol.metrics:
                out[f"{m}@{k}"].append(values[m])
    return {name: np.array(v) for name, v in out.items()}


def _assert_same(result: EvalResult, ref: dict[str, np.ndarray]) -> None:
    assert set(result.per_user) == set(ref)
    for name, values in ref.items():
        np.testing.assert_allclose(result.per_user[name], values, rtol=0, atol=1e-9,
                                   err_msg=name)


# -- full ranking -----------------------------------------------------------------------------
def test_eval_set_has_the_hard_cases() -> None:
    rows = _rows(_eval_set())
    assert len(rows) == N_USERS - N_USERS // 6
    assert any(not hist for _, hist, _ in rows), "a user without history"
    assert any(targets & set(hist) for _, hist, targets in rows), "a target already seen"
    assert any(len(targets) > 1 for _, _, targets in rows), "several targets"
    assert any(len(hist) != len(set(hist)) for _, hist, _ in rows), "a repeated history item"


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_full_ranking_matches_naive_loop(exclude_seen: bool) -> None:
    data, table = _eval_set(), _table()
    protocol = Protocol(cutoffs=[1, 3, 10, 40, 50], exclude_seen=exclude_seen)
    result = evaluate(TableScorer(table), data, protocol, batch_size=7)
    np.testing.assert_array_equal(result.users, data.histories.users)
    _assert_same(result, _reference(table, data, protocol))


def test_results_do_not_depend_on_batch_size() -> None:
    data, table = _eval_set(1), _table(1)
    protocol = Protocol(cutoffs=[5, 20])
    results = [evaluate(TableScorer(table), data, protocol, batch_size=b, keep_top_items=True)
               for b in (1, 3, 1000)]
    for other in results[1:]:
        assert other.per_user.keys() == results[0].per_user.keys()
        for name in results[0].per_user:
            np.testing.assert_array_equal(other.per_user[name], results[0].per_user[name])
        np.testing.assert_array_equal(other.top_items, results[0].top_items)


def test_model_sees_users_in_chunks_of_batch_size() -> None:
    data = _eval_set()
    scorer = TableScorer(_table())
    evaluate(scorer, data, Protocol(), batch_size=4)
    assert [len(h) for h in scorer.calls] == [4] * (len(data) // 4) + (
        [len(data) % 4] if len(data) % 4 else [])
    np.testing.assert_array_equal(np.concatenate([h.users for h in scorer.calls]),
                                  data.histories.users)


def _favour_history(data: EvalSet) -> np.ndarray:
    """Scores that put every item of a user's full history above all other items."""
    table = _table()
    for u, hist, _ in _rows(data):
        table[u, hist] += 10_000
    return table


def test_seen_items_are_excluded_only_when_asked() -> None:
    data = _eval_set()
    scorer = TableScorer(_favour_history(data))
    kept = evaluate(scorer, data, Protocol(cutoffs=[5], exclude_seen=True), keep_top_items=True)
    free = evaluate(scorer, data, Protocol(cutoffs=[5], exclude_seen=False), keep_top_items=True)
    assert kept.top_items.shape == free.top_items.shape == (len(data), 5)
    for row, (_, hist, _) in enumerate(_rows(data)):
        assert not set(kept.top_items[row].tolist()) & set(hist)
        if hist:
            assert free.top_items[row, 0] in hist


def test_top_items_list_only_candidates() -> None:
    # K = 50 > 40 items: positions past the unseen items are -1, never a masked item.
    data = _eval_set()
    result = evaluate(TableScorer(_table()), data, Protocol(cutoffs=[50]), keep_top_items=True)
    assert result.top_items.shape == (len(data), N_ITEMS)
    for row, (_, hist, _) in enumerate(_rows(data)):
        listed = result.top_items[row]
        valid = listed[listed >= 0]
        assert sorted(valid.tolist()) == sorted(set(range(N_ITEMS)) - set(hist))
        assert (listed[len(valid):] == -1).all()


def test_max_history_length_truncates_input_but_masks_full_history() -> None:
    data = _eval_set()
    scorer = TableScorer(_favour_history(data))
    protocol = Protocol(cutoffs=[5, 10], max_history_length=2)
    result = evaluate(scorer, data, protocol, batch_size=8, keep_top_items=True)
    seen_by_model = [h.items[h.indptr[r]:h.indptr[r + 1]].tolist()
                     for h in scorer.calls for r in range(len(h))]
    rows = _rows(data)
    assert any(len(hist) > 2 for _, hist, _ in rows)
    for (_, hist, _), given, top in zip(rows, seen_by_model, result.top_items, strict=True):
        assert given == hist[-2:], "the model gets the most recent items, in order"
        assert not set(top.tolist()) & set(hist), "masking uses the whole history"
    _assert_same(result, _reference(scorer.table.numpy(), data, protocol))


# -- sampled candidates -----------------------------------------------------------------------
def _candidates(result: EvalResult) -> list[set[int]]:
    return [set(row[row >= 0].tolist()) for row in result.top_items]


def test_sampled_negatives_avoid_history_and_targets() -> None:
    data, n_neg = _eval_set(), 10
    protocol = Protocol(candidates="sampled", n_negatives=n_neg, cutoffs=[N_ITEMS])
    result = evaluate(TableScorer(_table()), data, protocol, keep_top_items=True)
    for (_, hist, targets), cand in zip(_rows(data), _candidates(result), strict=True):
        negatives = cand - targets
        assert len(negatives) == n_neg
        assert not negatives & set(hist)
        assert cand & targets == targets - set(hist), "unseen targets are always candidates"


def test_sampled_metrics_match_naive_loop_on_the_same_candidates() -> None:
    data, table = _eval_set(), _table()
    for exclude_seen in (True, False):
        protocol = Protocol(candidates="sampled", n_negatives=8, cutoffs=[1, 5, 10],
                            exclude_seen=exclude_seen)
        listed = evaluate(TableScorer(table), data,
                          protocol.model_copy(update={"cutoffs": [N_ITEMS]}), keep_top_items=True)
        result = evaluate(TableScorer(table), data, protocol)
        # Same seed, same chunks: the same negatives in both runs.
        cands = [c | t for c, (_, _, t) in zip(_candidates(listed), _rows(data), strict=True)]
        _assert_same(result, _reference(table, data, protocol, cands))


def test_sampling_is_seeded() -> None:
    data, table = _eval_set(), _table()

    def run(seed: int) -> EvalResult:
        protocol = Protocol(candidates="sampled", n_negatives=5, cutoffs=[N_ITEMS], seed=seed)
        return evaluate(TableScorer(table), data, protocol, keep_top_items=True)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.top_items, b.top_items)
    for name in a.per_user:
        np.testing.assert_array_equal(a.per_user[name], b.per_user[name])
    assert not np.array_equal(a.top_items, c.top_items)


def test_popularity_sampling_needs_popularity() -> None:
    protocol = Protocol(candidates="sampled", negative_sampling="popularity")
    with pytest.raises(ValueError, match="item_popularity"):
        evaluate(TableScorer(_table()), _eval_set(), protocol)


def test_popularity_sampling_draws_popular_items() -> None:
    data = _eval_set()
    popularity = np.zeros(N_ITEMS)
    popular = np.arange(0, N_ITEMS, 2)  # 20 items; every user leaves >= 3 of them allowed
    popularity[popular] = 1000.0
    protocol = Protocol(candidates="sampled", negative_sampling="popularity", n_negatives=3,
                        cutoffs=[N_ITEMS])
    result = evaluate(TableScorer(_table()), data, protocol, item_popularity=popularity,
                      keep_top_items=True)
    for (_, hist, targets), cand in zip(_rows(data), _candidates(result), strict=True):
        assert len(set(popular) - set(hist) - targets) >= 3
        negatives = cand - targets
        assert len(negatives) == 3 and negatives <= set(popular.tolist())


def test_sample_negatives_without_enough_items() -> None:
    forbidden = torch.zeros((3, 6), dtype=torch.bool)
    forbidden[1, :4] = True   # 2 allowed items
    forbidden[2, :] = True    # none allowed
    neg = _sample_negatives(forbidden, 3, None, torch.Generator().manual_seed(0))
    assert neg.shape == (3, 3)
    assert len(set(neg[0].tolist())) == 3 and (neg[0] >= 0).all()
    assert sorted(x for x in neg[1].tolist() if x >= 0) == [4, 5]
    assert (neg[1] == -1).sum() == 1
    assert (neg[2] == -1).all()


# -- results ----------------------------------------------------------------------------------
def test_summary_is_the_mean_per_metric() -> None:
    result = EvalResult(np.arange(3), {"ndcg@10": np.array([0.0, 0.5, 1.0]),
                                       "recall@5": np.array([1.0, 0.0, 0.0])})
    assert result.summary() == pytest.approx({"ndcg@10": 0.5, "recall@5": 1 / 3})
    assert EvalResult(np.arange(0), {"ndcg@10": np.zeros(0)}).summary() == {"ndcg@10": 0.0}


def test_empty_eval_set() -> None:
    data = _eval_set().slice(0, 0)
    result = evaluate(TableScorer(_table()), data, Protocol(cutoffs=[5]))
    assert len(result.users) == 0
    assert all(len(v) == 0 for v in result.per_user.values())
    assert result.summary()["ndcg@5"] == 0.0


def test_ties_are_not_broken_by_item_id() -> None:
    # Item ids follow first appearance, so low ids are the popular items. torch.topk settles
    # ties towards low ids: a model scoring everything alike once scored hit@10 = 1.0 when
    # every target had id 0. Ties now follow a fixed pseudo-random item order.
    n_items, n_users = 500, 200
    frame = pl.DataFrame({"user": list(range(n_users)), "item": [0] * n_users,
                          "timestamp": list(range(n_users))},
                         schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64})
    targets = Interactions(frame, n_users, n_items)
    empty = Interactions(frame.clear(), n_users, n_items)
    data = EvalSet.build(empty, targets)

    class Constant:
        def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
            return torch.zeros(len(histories.users), n_items if items is None else len(items))

    full = evaluate(Constant(), data, Protocol(cutoffs=[10], metrics=["hit"]),
                    keep_top_items=True)
    assert full.summary()["hit@10"] == 0.0  # item 0 is not among the first ten of the order
    top = full.top_items[0].tolist()
    assert top != list(range(10)) and len(set(top)) == 10
    assert (full.top_items == full.top_items[0]).all()  # one fixed order for every user
    # Untied scores rank exactly as torch.topk ranks them.
    from genrec.models.ranking import rank

    scores = torch.randn(16, n_items, generator=torch.Generator().manual_seed(0))
    items, values = rank(scores.clone(), None, 20, exclude_seen=False)
    assert torch.equal(items, torch.topk(scores, 20).indices)
    assert torch.equal(values, torch.topk(scores, 20).values)


@pytest.mark.parametrize("k", [1, 5, 40, 60])
def test_ties_rank_in_the_fixed_tie_order(k: int) -> None:
    # Equal scores rank in the order of _tie_order, exactly (torch.topk's own tie order, even
    # on permuted columns, is unspecified and differs between devices); untied rows rank as
    # a plain top-k. Reference: a lexicographic sort by (score descending, tie position).
    from genrec.models.ranking import _tie_order, rank

    g = torch.Generator().manual_seed(1)
    n_items = 60
    scores = torch.randn(32, n_items, generator=g)
    scores[::3] = torch.randint(0, 4, (11, n_items), generator=g).float()  # ItemKNN-like ties
    scores[1, :] = 0.0                      # a constant row
    scores[2, 10:] = float("-inf")          # fewer than k finite items, untied
    scores[5, 20:] = float("-inf")          # fewer than k finite items, tied
    scores[5, :20] = torch.randint(0, 3, (20,), generator=g).float()
    scores[4, 7] = scores[4].max() + 1      # a tie only past the first place ...
    scores[4, 8] = scores[4, 7] - 0.5
    scores[4, 9] = scores[4, 8]             # ... at second and third
    pos = np.empty(n_items, dtype=np.int64)
    pos[_tie_order(n_items, scores.device).numpy()] = np.arange(n_items)
    ref = np.stack([np.lexsort((pos, -row))[:k] for row in scores.numpy()])
    ref_values = np.take_along_axis(scores.numpy(), ref, axis=1)
    ref[~np.isfinite(ref_values)] = -1
    items, values = rank(scores.clone(), None, k, exclude_seen=False)
    assert items.tolist() == ref.tolist()
    assert values.tolist() == ref_values.tolist()
    every_row_tied = rank(scores[::3].clone(), None, k, exclude_seen=False)[0]
    assert every_row_tied.tolist() == ref[::3].tolist()
    plain = torch.topk(scores, k)  # untied rows: exactly torch.topk
    plain_items = torch.where(torch.isfinite(plain.values), plain.indices, -1)
    untied = [i for i in range(32) if i % 3 and i not in (1, 4, 5)]
    assert torch.equal(items[untied], plain_items[untied])
