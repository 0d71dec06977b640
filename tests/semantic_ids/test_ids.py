"""Deduplication and the codebook-health report, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.semantic_ids import codebook_health, deduplicate


def test_deduplicate_ranks_items_within_collision_groups() -> None:
    codes = np.array([[1, 2], [0, 0], [1, 2], [0, 1], [1, 2], [0, 0]])
    out = deduplicate(codes)
    np.testing.assert_array_equal(out[:, :2], codes)
    np.testing.assert_array_equal(out[:, 2], [0, 0, 1, 0, 2, 1])
    assert len(np.unique(out, axis=0)) == len(codes)


def test_deduplicate_without_collisions_appends_zeros() -> None:
    out = deduplicate(np.array([[3], [1], [2]]))
    np.testing.assert_array_equal(out, [[3, 0], [1, 0], [2, 0]])


def test_deduplicate_makes_random_codes_unique() -> None:
    codes = np.random.default_rng(0).integers(0, 3, size=(500, 3))  # 27 codes, 500 items
    out = deduplicate(codes)
    assert len(np.unique(out, axis=0)) == 500
    assert out[:, -1].max() + 1 == np.unique(codes, axis=0, return_counts=True)[1].max()


def test_health_on_a_hand_case() -> None:
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 2]])
    h = codebook_health(codes, codebook_size=4)
    assert h.n_items == 4 and h.codebook_size == 4
    assert h.utilisation == [0.5, 0.75]                  # codes {0, 1}; codes {0, 1, 2}
    # level 1 counts 3, 1: -(.75 log2 .75 + .25 log2 .25); level 2 counts 2, 1, 1: 1.5 bits
    assert h.entropy_bits == pytest.approx([0.8112781, 1.5])
    assert h.normalised_entropy == pytest.approx([0.8112781 / 2, 0.75])
    assert h.collision_rate == pytest.approx(0.25)       # 3 distinct codes over 4 items
    assert h.colliding_items == pytest.approx(0.5)       # items 0 and 1
    assert h.max_prefix_items == [3, 2]
    assert h.min_utilisation() == 0.5
    assert h.to_dict()["max_prefix_items"] == [3, 2]
    text = h.format()
    assert "level 1: 50.0% of 4 codes used" in text and "25.00% of items" in text


def test_health_of_perfect_codes() -> None:
    codes = np.array([[a, b] for a in range(4) for b in range(4)])
    h = codebook_health(codes, 4)
    assert h.utilisation == [1.0, 1.0]
    assert h.normalised_entropy == pytest.approx([1.0, 1.0])
    assert h.collision_rate == 0.0 and h.colliding_items == 0.0
    assert h.max_prefix_items == [4, 1]
