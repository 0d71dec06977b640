"""The prefix trie and beam search against brute force on a fixed toy distribution, with
every level dense, every level sparse (edges only) and a mix: the layouts agree."""

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
LAYOUTS = {"dense": 1 << 24, "sparse": 0, "mixed": 3}
"""``dense_max_entries`` per layout ("mixed": only the root's 1 x 3 table is dense)."""


@pytest.fixture(params=list(LAYOUTS))
def make_trie(request: pytest.FixtureRequest):
    """``PrefixTrie.from_codes`` under one storage layout."""
    def make(codes: np.ndarray = CODES, sizes: list[int] | None = SIZES) -> PrefixTrie:
        return PrefixTrie.from_codes(codes, sizes, dense_max_entries=LAYOUTS[request.param])
    make.layout = request.param
    return make


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


def test_trie_tables_masks_and_lookup(make_trie) -> None:
    trie = make_trie()
    assert trie.n_levels == 3 and trie.vocab_sizes == SIZES
    assert trie.layout == {"dense": ["dense"] * 3, "sparse": ["sparse"] * 3,
                           "mixed": ["dense", "sparse", "sparse"]}[make_trie.layout]
    assert [trie.n_nodes(lv) for lv in range(3)] == [1, 2, 4]   # root; prefixes 0, 2; 4 pairs
    np.testing.assert_array_equal(trie.child_table(1, torch.tensor([0, 1])).numpy(),
                                  [[-1, 0, 1], [2, -1, 3]])      # 0-1, 0-2 | 2-0, 2-2
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


def test_trie_rejects_duplicate_and_out_of_range_codes(make_trie) -> None:
    with pytest.raises(ValueError, match="deduplicate"):
        make_trie(np.array([[0, 1], [0, 1]]), None)
    with pytest.raises(ValueError, match="outside"):
        make_trie(np.array([[0, 3]]), [2, 2])


@pytest.mark.parametrize("beam", [1, 2, 3, 5, 8])
def test_constrained_beam_returns_items_with_exact_scores(beam: int, make_trie) -> None:
    trie = make_trie()
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


def test_unconstrained_beam_is_exhaustive_over_all_codes(make_trie) -> None:
    trie = make_trie()
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


def test_banned_items_are_never_generated(make_trie) -> None:
    trie = make_trie()
    log_probs, _ = toy_log_probs(batch=2)
    banned = torch.zeros(2, 5, dtype=torch.bool)
    banned[0, [0, 3]] = True
    banned[1, :4] = True
    res = beam_search(log_probs, trie, 2, 5, banned=banned)
    assert set(res.items[0].tolist()) == {1, 2, 4, -1}
    assert res.items[1, 0] == 4 and (res.items[1, 1:] == -1).all()
    assert beam_risks(res, CATALOGUE)["hallucination_rate"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_banned_prefixes_do_not_eat_the_beam(seed: int, make_trie) -> None:
    """A narrow beam still fills with allowed items when whole subtrees are banned: with
    beam 2 and items 0, 1 (the only ones under prefix 0-1) banned, the search must not
    spend its beams on prefix 0-1 and then come back empty."""
    trie = make_trie()
    log_probs, _ = toy_log_probs(batch=3, seed=seed)
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
    every = torch.arange(4).expand(3, 4)
    np.testing.assert_array_equal(trie.open_children(1, banned.nonzero(as_tuple=True),
                                                     every).numpy(),
                                  [[False, True, True, True]] * 3)


def test_dense_and_sparse_layouts_decode_alike_on_a_real_sized_trie() -> None:
    """2,000 items, 3 levels of 16 codes + a dedup code: the same beams, scores and items
    from dense tables and from edges only, with and without a history ban."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 16, size=(2000, 3))
    _, inv = np.unique(base, axis=0, return_inverse=True)
    order = np.argsort(inv.reshape(-1), kind="stable")
    dedup = np.empty(len(base), dtype=np.int64)
    counts = np.bincount(inv.reshape(-1))
    dedup[order] = np.arange(len(base)) - np.repeat(np.cumsum(counts) - counts, counts)
    codes = np.column_stack([base, dedup])
    sizes = [16, 16, 16, int(dedup.max()) + 1]
    dense = PrefixTrie.from_codes(codes, sizes)
    sparse = PrefixTrie.from_codes(codes, sizes, dense_max_entries=0)
    assert dense.layout == ["dense"] * 4 and sparse.layout == ["sparse"] * 4
    assert sparse.nbytes < dense.nbytes                           # edges only vs 4 tables
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(8, 16 if t < 3 else sizes[3], generator=gen) for t in range(4)]

    def log_probs(prefix: torch.Tensor) -> torch.Tensor:
        t = prefix.shape[-1]
        mix = prefix.sum(-1, keepdim=True).float() if t else 0.0
        return torch.log_softmax(weights[t][:, None, :] + 0.1 * mix, -1).expand(
            prefix.shape[0], prefix.shape[1], -1)

    banned = torch.from_numpy(rng.random((8, 2000)) < 0.3)
    for ban in (None, banned):
        a = beam_search(log_probs, dense, 8, 20, banned=ban)
        b = beam_search(log_probs, sparse, 8, 20, banned=ban)
        torch.testing.assert_close(a.scores, b.scores)
        np.testing.assert_array_equal(a.items.numpy(), b.items.numpy())
        assert (a.items >= 0).all()
        if ban is not None:
            assert not ban.gather(1, a.items).any()
    np.testing.assert_array_equal(sparse.lookup(torch.from_numpy(codes)).numpy(),
                                  np.arange(2000))
