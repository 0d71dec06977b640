"""The prefix trie and beam search against brute force on a fixed toy distribution."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
import torch

from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.generative import beam_risks
from genrec.semantic_ids import PrefixTrie, beam_search

CATALOGUE = Catalogue(pl.DataFrame({"item": list(range(5))}), 5)
"""The toy catalogue of CODES: items 0..4."""

CODES = np.array([[0, 1, 0], [0, 1, 1], [0, 2, 0], [2, 0, 0], [2, 2, 0]])  # 5 items
SIZES = [3, 3, 2]


def toy_log_probs(batch: int, seed: int = 0):
    """A fixed random next-code distribution per user that depends on the whole prefix."""
    gen = torch.Generator().manual_seed(seed)
    tables = [torch.log_softmax(torch.randn(batch, *([3] * t), v, generator=gen), -1)
              for t, v in enumerate(SIZES)]

    def log_probs(prefix: torch.Tensor) -> torch.Tensor:           # (B, W, t) -> (B, W, V)
        b, w, t = prefix.shape
        table = tables[t]
        idx = [torch.arange(b)[:, None].expand(b, w)] + [prefix[..., j] for j in range(t)]
        return table[tuple(idx)]

    def exact(code: tuple[int, ...]) -> torch.Tensor:             # (B,) log P(code)
        return sum(tables[t][(torch.arange(batch), *code[:t], code[t])]
                   for t in range(len(code)))

    return log_probs, exact


def test_trie_tables_masks_and_lookup() -> None:
    trie = PrefixTrie.from_codes(CODES, SIZES)
    assert trie.n_levels == 3 and trie.vocab_sizes == SIZES
    assert [t.shape[0] for t in trie.children] == [1, 2, 4]       # root; prefixes 0, 2; 4 pairs
    root = torch.zeros(1, dtype=torch.long)
    np.testing.assert_array_equal(trie.allowed(0, root).numpy(), [[True, False, True]])
    node = trie.advance(0, root, torch.tensor([0]))
    np.testing.assert_array_equal(trie.allowed(1, node).numpy(), [[False, True, True]])
    assert trie.advance(0, root, torch.tensor([1])).item() == -1
    assert not trie.allowed(1, torch.tensor([-1])).any()
    queries = torch.tensor([[0, 1, 1], [2, 2, 0], [1, 0, 0], [0, 1, 2], [2, 9, 0]])
    np.testing.assert_array_equal(trie.lookup(queries).numpy(), [1, 4, -1, -1, -1])
    all_items = trie.lookup(torch.from_numpy(CODES))
    np.testing.assert_array_equal(all_items.numpy(), np.arange(5))


def test_trie_rejects_duplicate_and_out_of_range_codes() -> None:
    with pytest.raises(ValueError, match="deduplicate"):
        PrefixTrie.from_codes(np.array([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="outside"):
        PrefixTrie.from_codes(np.array([[0, 3]]), [2, 2])


@pytest.mark.parametrize("beam", [1, 2, 3, 5, 8])
def test_constrained_beam_returns_items_with_exact_scores(beam: int) -> None:
    trie = PrefixTrie.from_codes(CODES, SIZES)
    log_probs, exact = toy_log_probs(batch=4)
    res = beam_search(log_probs, trie, 4, beam)
    assert res.items.shape == res.scores.shape == (4, beam)
    live = torch.isfinite(res.scores)
    assert (live.sum(1) == min(beam, 5)).all()                    # 5 items exist
    assert ((res.items >= 0) == live).all()
    exact_all = torch.stack([exact(tuple(c)) for c in CODES.tolist()], 1)  # (B, 5)
    torch.testing.assert_close(res.scores[live], exact_all.gather(1, res.items.clamp(min=0))[live])
    assert (res.scores[:, :-1] >= res.scores[:, 1:]).all()
    if beam >= 5:  # exhaustive: the beam is the exact ranking of all items
        np.testing.assert_array_equal(res.items[:, :5].numpy(),
                                      exact_all.argsort(1, descending=True).numpy())


def test_unconstrained_beam_is_exhaustive_over_all_codes() -> None:
    trie = PrefixTrie.from_codes(CODES, SIZES)
    log_probs, exact = toy_log_probs(batch=3, seed=1)
    n_codes = 3 * 3 * 2
    res = beam_search(log_probs, trie, 3, n_codes, constrained=False)
    assert torch.isfinite(res.scores).all()
    assert beam_risks(res, CATALOGUE)["hallucination_rate"] == pytest.approx(1 - 5 / n_codes)
    every = list(itertools.product(*(range(v) for v in SIZES)))
    brute = torch.stack([exact(c) for c in every], 1)              # (B, 18)
    torch.testing.assert_close(res.scores, brute.sort(1, descending=True).values)
    top = res.codes[:, 0]
    best = torch.tensor(every)[brute.argmax(1)]
    torch.testing.assert_close(top, best)


def test_banned_items_are_never_generated() -> None:
    trie = PrefixTrie.from_codes(CODES, SIZES)
    log_probs, _ = toy_log_probs(batch=2)
    banned = torch.zeros(2, 5, dtype=torch.bool)
    banned[0, [0, 3]] = True
    banned[1, :4] = True
    res = beam_search(log_probs, trie, 2, 5, banned=banned)
    assert set(res.items[0].tolist()) == {1, 2, 4, -1}
    assert res.items[1, 0] == 4 and (res.items[1, 1:] == -1).all()
    assert beam_risks(res, CATALOGUE)["hallucination_rate"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_banned_prefixes_do_not_eat_the_beam(seed: int) -> None:
    """A narrow beam still fills with allowed items when whole subtrees are banned: with
    beam 2 and items 0, 1 (the only ones under prefix 0-1) banned, the search must not
    spend its beams on prefix 0-1 and then come back empty."""
    trie = PrefixTrie.from_codes(CODES, SIZES)
    log_probs, exact = toy_log_probs(batch=3, seed=seed)
    banned = torch.zeros(3, 5, dtype=torch.bool)
    banned[:, [0, 1]] = True
    res = beam_search(log_probs, trie, 3, 2, banned=banned)
    assert (res.items >= 0).all(), "every beam ends in a real, allowed item"
    assert not banned.gather(1, res.items).any()
    # The beams are the best allowed items whenever the search keeps their prefixes.
    full = beam_search(log_probs, trie, 3, 5, banned=banned)          # exhaustive
    assert (full.items[:, :3] >= 0).all() and (full.items[:, 3:] == -1).all()
    np.testing.assert_array_equal(trie.open_nodes(1, banned.nonzero(as_tuple=True), 3)[0].numpy(),
                                  [False, True, True, True])  # depth-2 nodes 0-1, 0-2, 2-0, 2-2
