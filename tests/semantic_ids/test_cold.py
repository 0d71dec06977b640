"""Cold-item fusion: prefixes of cold items, fused scores, catalogue items only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genrec.semantic_ids import BeamResult, ColdPrefixes, beam_search, deduplicate, fuse_cold


def test_cold_prefix_table_and_fusion() -> None:
    codes = deduplicate(np.array([[0, 0], [0, 0], [0, 1], [1, 0], [1, 0], [1, 1]]))
    cold = np.array([False, True, False, True, True, False])
    table = ColdPrefixes.build(codes, cold, [2, 2, 2])
    assert table is not None
    # Cold prefixes: (0, 0) holds item 1; (1, 0) holds items 3 and 4.
    assert table.counts.tolist() == [1, 2]
    assert sorted(table.items[1].tolist()) == [3, 4] and table.items[0].tolist() == [1, -1]
    # A uniform model over 2 codes per level: every prefix has log-probability 2 log(1/2).
    res = beam_search(lambda p: torch.full((*p.shape[:2], 2), math.log(0.5)), table.trie, 2, 4)
    assert sorted(res.items[0, :2].tolist()) == [0, 1] and (res.items[:, 2:] == -1).all()
    dense = torch.full((2, 6), float("-inf"))
    dense[:, 0] = -0.5                                  # a warm item already generated
    out = fuse_cold(dense, res, table, weight=0.5)
    assert out.shape == (2, 6) and out[0, 0] == -0.5
    finite = torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert finite == [0, 1, 3, 4]                       # only catalogue items, cold ones fused
    assert math.isclose(out[0, 1].item(), 2 * math.log(0.5) + math.log(0.5), rel_tol=1e-6)
    assert math.isclose(out[0, 3].item(), 2 * math.log(0.5) + math.log(0.5 / 2), rel_tol=1e-6)
    assert ColdPrefixes.build(codes, np.zeros(6, dtype=bool), [2, 2, 2]) is None


def test_fusion_keeps_the_higher_score() -> None:
    codes = deduplicate(np.array([[0], [1]]))
    table = ColdPrefixes.build(codes, np.array([True, True]), [2, 1])
    assert table is not None
    beams = BeamResult(torch.zeros(1, 1, 1, dtype=torch.long), torch.tensor([[-1.0]]),
                       torch.tensor([[0]]))
    dense = torch.tensor([[0.0, float("-inf")]])       # item 0 already scored higher
    out = fuse_cold(dense, beams, table, weight=1.0)
    assert out[0, 0] == 0.0 and torch.isinf(out[0, 1])


def test_shorter_prefixes_group_cold_items_with_their_text_neighbours() -> None:
    codes = deduplicate(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))
    cold = np.array([True, True, False, True])
    one = ColdPrefixes.build(codes, cold, [2, 2, 1], levels=1)
    assert one is not None and one.trie.n_levels == 1
    assert one.counts.tolist() == [2, 1]                # prefix (0,): items 0, 1; (1,): item 3
    assert sorted(one.items[0].tolist()) == [0, 1] and one.items[1].tolist() == [3, -1]
    with pytest.raises(ValueError, match="levels"):
        ColdPrefixes.build(codes, cold, [2, 2, 1], levels=3)
