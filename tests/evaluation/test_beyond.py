"""Beyond-accuracy metrics: hand cases, RecBole's formulas, brute-force references."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import polars as pl
import pytest

from genrec.evaluation.beyond import (
    average_popularity,
    catalog_coverage,
    category_matrix,
    exposure_counts,
    gini,
    gini_index,
    hit_matrix,
    intra_list_diversity,
    long_tail_share,
    lorenz_curve,
    novelty,
    personalization,
    serendipity,
    tail_items,
    tail_percentage,
)

# -- RecBole's definitions, written out as plain loops (recbole/evaluator/metrics.py) --------
# ItemCoverage@K  = |unique items in the K-truncated matrix| / num_items
# GiniIndex@K     = sum((2 * idx - num_items - 1) * sorted_count) / total_num / num_items,
#                   sorted_count = ascending counts of the recommended items,
#                   idx = num_items - m + 1 .. num_items, total_num = U * K
# AveragePopularity@K = mean over users of (cumsum of train counts / rank) at rank K
# TailPercentage@K    = mean over users of (cumsum of tail flags / rank) at rank K; the tail is
#                   count <= tail_ratio (tail_ratio > 1) or the first max(int(n * r), 1) items
#                   of the train counter sorted by (count, id)


def rb_coverage(m: np.ndarray, num_items: int, k: int) -> float:
    return len(np.unique(m[:, :k])) / num_items


def rb_gini(m: np.ndarray, num_items: int, k: int) -> float:
    sub = m[:, :k]
    sorted_count = np.array(sorted(Counter(sub.flatten()).values()))
    idx = np.arange(num_items - len(sorted_count) + 1, num_items + 1)
    return float(np.sum((2 * idx - num_items - 1) * sorted_count) / sub.size / num_items)


def rb_average_popularity(m: np.ndarray, counter: dict[int, int], k: int) -> float:
    value = np.array([[counter.get(i, 0) for i in row] for row in m], dtype=np.float64)
    per_rank = value.cumsum(1) / np.arange(1, m.shape[1] + 1)
    return float(per_rank.mean(0)[k - 1])


def rb_tail_percentage(m: np.ndarray, counter: dict[int, int], k: int, tail: float) -> float:
    if tail > 1:
        tail_set = {i for i, c in counter.items() if c <= tail}
    else:
        ordered = sorted(counter.items(), key=lambda kv: (kv[1], kv[0]))
        tail_set = {i for i, _ in ordered[:max(int(len(ordered) * tail), 1)]}
    value = np.array([[1.0 if i in tail_set else 0.0 for i in row] for row in m])
    return float((value.cumsum(1) / np.arange(1, m.shape[1] + 1)).mean(0)[k - 1])


# The hand case used throughout: 3 users, 6 items, train counts below (item 3 never seen).
LISTS = np.array([[0, 1, 2], [0, 1, 3], [0, 4, 1]])
COUNTS = np.array([10, 5, 1, 0, 2, 3])
COUNTER = {i: int(c) for i, c in enumerate(COUNTS) if c > 0}  # RecBole's train item counter


def test_coverage_hand_case() -> None:
    assert catalog_coverage(LISTS, 6, 3) == pytest.approx(5 / 6)
    assert catalog_coverage(LISTS, 6, 1) == pytest.approx(1 / 6)
    assert catalog_coverage(LISTS, 6, 3) == pytest.approx(rb_coverage(LISTS, 6, 3))


def test_gini_hand_case() -> None:
    # counts 3,3,1,1,1 and one never-recommended item: (-3-1+1+9+15) / 9 / 6
    assert gini_index(LISTS, 6, 3) == pytest.approx(21 / 54)
    assert gini_index(LISTS, 6, 3) == pytest.approx(rb_gini(LISTS, 6, 3))
    assert gini(np.ones(5)) == 0.0
    assert gini(np.zeros(4)) == 0.0
    assert gini(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)  # (n - 1) / n when one has all


def test_average_popularity_hand_case() -> None:
    per_user = average_popularity(LISTS, COUNTS, 3)
    np.testing.assert_allclose(per_user, [16 / 3, 15 / 3, 17 / 3])
    assert per_user.mean() == pytest.approx(rb_average_popularity(LISTS, COUNTER, 3))
    assert average_popularity(LISTS, COUNTS, 2).mean() == pytest.approx(7.0)


def test_tail_items_follow_recbole() -> None:
    # Train counter sorted by (count, id): 2(1), 4(2), 5(3), 1(5), 0(10); item 3 is absent.
    assert np.flatnonzero(tail_items(COUNTS, 0.5)).tolist() == [2, 4]
    assert np.flatnonzero(tail_items(COUNTS, 0.1)).tolist() == [2]          # max(int(0.5), 1)
    assert np.flatnonzero(tail_items(COUNTS, 3)).tolist() == [2, 4, 5]     # count threshold
    assert np.flatnonzero(tail_items(COUNTS, 0.5, include_unseen=True)).tolist() == [2, 3, 4]
    ties = np.array([2, 2, 2, 9])
    assert np.flatnonzero(tail_items(ties, 0.5)).tolist() == [0, 1]       # ties: lower id
    with pytest.raises(ValueError):
        tail_items(COUNTS, 0)


def test_tail_percentage_hand_case() -> None:
    np.testing.assert_allclose(tail_percentage(LISTS, COUNTS, 3, 0.5), [1 / 3, 0, 1 / 3])
    for tail in (0.1, 0.5, 0.8, 3):
        for k in (1, 2, 3):
            assert tail_percentage(LISTS, COUNTS, k, tail).mean() == pytest.approx(
                rb_tail_percentage(LISTS, COUNTER, k, tail))


def test_aplt_counts_unseen_items_as_tail() -> None:
    # Head = top 20% of 6 items = int(6 * 0.8) = 4 tail items: 3 (0), 2 (1), 4 (2), 5 (3).
    np.testing.assert_allclose(long_tail_share(LISTS, COUNTS, 3), [1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError):
        long_tail_share(LISTS, COUNTS, 3, head_ratio=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_lists_agree_with_recbole(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, n_users, kmax = 50, 40, 10
    counts = rng.poisson(3, n_items) * rng.integers(0, 2, n_items)  # zeros included
    counter = {i: int(c) for i, c in enumerate(counts) if c > 0}
    lists = np.stack([rng.choice(n_items, kmax, replace=False) for _ in range(n_users)])
    for k in (1, 5, 10):
        assert catalog_coverage(lists, n_items, k) == pytest.approx(rb_coverage(lists, n_items, k))
        assert gini_index(lists, n_items, k) == pytest.approx(rb_gini(lists, n_items, k))
        assert average_popularity(lists, counts, k).mean() == pytest.approx(
            rb_average_popularity(lists, counter, k))
        for tail in (0.1, 0.2, 0.8, 2):
            assert tail_percentage(lists, counts, k, tail).mean() == pytest.approx(
                rb_tail_percentage(lists, counter, k, tail))


def test_padding_is_not_a_recommendation() -> None:
    lists = np.array([[0, 1, -1], [2, -1, -1]])
    counts = np.array([4, 2, 6, 0])
    assert catalog_coverage(lists, 4, 3) == pytest.approx(3 / 4)
    np.testing.assert_allclose(exposure_counts(lists, 4, 3), [1, 1, 1, 0])
    np.testing.assert_allclose(average_popularity(lists, counts, 3), [3, 6])
    empty = np.full((1, 3), -1)
    assert average_popularity(empty, counts, 3).tolist() == [0.0]


def test_exposure_log_weighting_and_lorenz() -> None:
    e = exposure_counts(np.array([[1, 0]]), 3, 2, weighting="log")
    np.testing.assert_allclose(e, [1 / np.log2(3), 1.0, 0.0])
    x, y = lorenz_curve(np.array([0.0, 1.0, 3.0]))
    np.testing.assert_allclose(x, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(y, [0, 0, 0.25, 1])
    with pytest.raises(ValueError):
        exposure_counts(LISTS, 6, 3, weighting="nope")
    with pytest.raises(ValueError):
        catalog_coverage(LISTS, 6, 4)


def test_novelty_is_mean_self_information() -> None:
    counts = np.array([8, 4, 1, 0])
    lists = np.array([[0, 1], [2, 3]])
    # p = count / 8 users; unseen items count once.
    np.testing.assert_allclose(novelty(lists, counts, 2, n_users=8), [(0 + 1) / 2, (3 + 3) / 2])


def test_personalization_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    lists = np.stack([rng.choice(12, 4, replace=False) for _ in range(25)])
    k = 4
    overlaps = [len(set(a) & set(b)) / k for a, b in itertools.combinations(lists.tolist(), 2)]
    assert personalization(lists, k) == pytest.approx(1 - np.mean(overlaps))
    assert personalization(np.tile([1, 2, 3], (5, 1)), 3) == pytest.approx(0.0)
    assert personalization(np.arange(9).reshape(3, 3), 3) == pytest.approx(1.0)
    assert personalization(np.array([[1, 2]]), 2) == 0.0


def _items_table() -> pl.DataFrame:
    return pl.DataFrame({"item": [0, 1, 2, 3, 4],
                         "genres": [["a", "b"], ["a"], ["c"], [], ["a", "b"]]})


def test_category_matrix_and_jaccard_diversity() -> None:
    m, vocab = category_matrix(_items_table(), "genres", 6)
    assert vocab == ["a", "b", "c"] and m.shape == (6, 3)
    lists = np.array([[0, 1, 2], [0, 4, -1], [3, 5, -1]])
    ild = intra_list_diversity(lists, 3, categories=m)
    # user 0: d(01) = 1 - 1/2, d(02) = 1, d(12) = 1 -> 5/6; user 1: identical sets -> 0;
    # user 2: neither item has a category -> no comparable pair -> 0.
    np.testing.assert_allclose(ild, [5 / 6, 0.0, 0.0])
    single = pl.DataFrame({"item": [0, 1], "brand": ["x", "y"]})
    m2, v2 = category_matrix(single, "brand", 2)
    assert v2 == ["x", "y"]
    np.testing.assert_allclose(intra_list_diversity(np.array([[0, 1]]), 2, categories=m2), [1.0])


def test_embedding_diversity_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8))
    lists = np.stack([rng.choice(20, 5, replace=False) for _ in range(7)])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    want = [np.mean([1 - unit[a] @ unit[b] for a, b in itertools.combinations(row, 2)])
            for row in lists]
    np.testing.assert_allclose(intra_list_diversity(lists, 5, embeddings=emb), want, rtol=1e-5)
    with pytest.raises(ValueError):
        intra_list_diversity(lists, 5)


def test_serendipity_and_hits() -> None:
    lists = np.array([[0, 1, 2], [3, 4, -1]])
    base = np.array([[0, 5, 6], [6, 5, 4]])
    indptr = np.array([0, 2, 4])
    targets = np.array([0, 2, 4, 3])
    assert hit_matrix(lists, indptr, targets, 3).tolist() == [[True, False, True],
                                                             [True, True, False]]
    # user 0: relevant {0, 2}, 0 is in the baseline -> 1/3; user 1: relevant {3, 4}, 4 is in
    # the baseline -> 1/3.
    np.testing.assert_allclose(serendipity(lists, base, indptr, targets, 3), [1 / 3, 1 / 3])
    np.testing.assert_allclose(serendipity(lists, base, indptr, targets, 1), [0.0, 1.0])
    with pytest.raises(ValueError):
        serendipity(lists, base[:1], indptr, targets, 3)
