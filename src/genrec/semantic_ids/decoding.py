"""Prefix-constrained beam search over semantic IDs.

The catalogue's codes form a trie, stored one level at a time. A level whose dense table
``children[node, code]`` (the node reached from a depth-``l`` node by ``code``, or ``-1``) is
small enough is kept dense: a valid-next-token mask for a whole batch of beams is then one
gather. A level whose table would be large and nearly empty (the deepest levels of a big
catalogue: at 1M items and 599 dedup codes the last table has 715,695 x 599 entries, 3.4 GB,
for 1M edges) keeps only its edges, sorted by ``(parent, code)``; its masks are one scatter
and its transitions one ``searchsorted``. Either way :func:`beam_search` runs as a handful of
tensor operations per level, with no Python walk per beam, and both layouts give the same
results.

Memory: a dense level costs ``nodes_l * V_l * 9`` bytes, a sparse one ``16`` bytes per edge
(edges at level ``l`` = nodes at depth ``l + 1``, at most ``n_items``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DENSE_MAX_ENTRIES", "BeamResult", "PrefixTrie", "beam_search"]

DENSE_MAX_ENTRIES = 1 << 24
"""A level is stored as a dense ``(nodes, V)`` table up to this many entries (134 MB of
int64 plus a 17 MB bool copy), and as sorted edges above it. Every catalogue up to about 65k
items with 256 codes per level stays dense, so its decoding is unchanged."""


class _DenseLevel:
    """``table[node, code]`` = child node or ``-1``; ``valid`` its bool copy (the per-step mask
    gathers 1 byte per entry, not 8)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.valid = table >= 0
        self.vocab = int(table.shape[1])

    def to(self, device: torch.device | str) -> _DenseLevel:
        return _DenseLevel(self.table.to(device))

    def n_parents(self) -> int:
        return int(self.table.shape[0])

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.valid[nodes]

    def child_table(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.table[nodes]

    def advance(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.table[nodes, codes]


class _SparseLevel:
    """The level's edges only: ``keys[e] = parent * V + code``, sorted, so edge ``e`` leads to
    child node ``e`` (children are numbered in ``(parent, code)`` order); ``starts[p]`` is the
    first edge of parent ``p`` (``n_parents + 1`` entries)."""

    def __init__(self, keys: torch.Tensor, starts: torch.Tensor, vocab: int) -> None:
        self.keys, self.starts, self.vocab = keys, starts, vocab

    def to(self, device: torch.device | str) -> _SparseLevel:
        return _SparseLevel(self.keys.to(device), self.starts.to(device), self.vocab)

    def n_parents(self) -> int:
        return len(self.starts) - 1

    def child_table(self, nodes: torch.Tensor) -> torch.Tensor:
        flat = nodes.reshape(-1)
        first = self.starts[flat]
        counts = self.starts[flat + 1] - first
        rows = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), counts)
        offset = torch.arange(len(rows), device=flat.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        edges = first[rows] + offset
        out = torch.full((len(flat), self.vocab), -1, dtype=torch.long, device=flat.device)
        out[rows, self.keys[edges] % self.vocab] = edges
        return out.view(*nodes.shape, self.vocab)

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.child_table(nodes) >= 0

    def advance(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        query = nodes * self.vocab + codes
        if not len(self.keys):
            return torch.full_like(query, -1)
        pos = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)
        return torch.where(self.keys[pos] == query, pos, -1)


@dataclass
class PrefixTrie:
    """The trie of every item's code, one transition structure per level.

    Attributes:
        levels: Level ``l`` maps (depth-``l`` node, code) to a depth-``l + 1`` node; dense
            or sorted-edge storage (see the module docstring). Depth 0 has one node, the
            root (id 0).
        leaf_items: Item id of each depth-``L`` node, shape ``(n_items,)``.
        item_nodes: ``item_nodes[l]`` is the depth-``l + 1`` node above each item,
            shape ``(n_items,)`` (so ``item_nodes[-1]`` inverts ``leaf_items``).
        node_sizes: ``node_sizes[l]`` counts the items below each depth-``l + 1`` node.
        dense_max_entries: The size above which a table (a level's transitions, or the
            per-user open-node counters of a decode) is replaced by a sorted list.
    """

    levels: list[_DenseLevel | _SparseLevel]
    leaf_items: torch.Tensor
    item_nodes: list[torch.Tensor]
    node_sizes: list[torch.Tensor]
    dense_max_entries: int = DENSE_MAX_ENTRIES

    @classmethod
    def from_codes(cls, codes: np.ndarray, vocab_sizes: list[int] | None = None, *,
                   dense_max_entries: int = DENSE_MAX_ENTRIES) -> PrefixTrie:
        """Build the trie of ``codes`` ``(n_items, L)`` (row ``i`` is item ``i``'s code).

        Args:
            codes: Unique codes per item (deduplicate first).
            vocab_sizes: Codes per level; default ``codes.max(0) + 1``.
            dense_max_entries: Levels with more ``nodes * V`` entries keep their edges only.

        Raises:
            ValueError: If two items share a code, or a code is outside its level's range.
        """
        codes = np.asarray(codes, dtype=np.int64)
        n, n_levels = codes.shape
        sizes = list(vocab_sizes) if vocab_sizes is not None else [
            int(v) + 1 for v in codes.max(0, initial=0)]
        if len(sizes) != n_levels or (n and ((codes < 0).any() or (codes >= sizes).any())):
            raise ValueError(f"codes outside the vocabulary sizes {sizes}")
        parent = np.zeros(n, dtype=np.int64)                           # every item at the root
        n_parents = 1
        levels: list[_DenseLevel | _SparseLevel] = []
        item_nodes, node_sizes = [], []
        for level in range(n_levels):
            _, child = np.unique(codes[:, : level + 1], axis=0, return_inverse=True)
            child = child.reshape(-1)
            n_children = int(child.max(initial=-1)) + 1
            if n_parents * sizes[level] <= dense_max_entries:
                table = np.full((n_parents, sizes[level]), -1, dtype=np.int64)
                table[parent, codes[:, level]] = child
                levels.append(_DenseLevel(torch.from_numpy(table)))
            else:
                # Child ids follow the (parent, code) order, so the key of child c sits at c.
                keys = np.empty(n_children, dtype=np.int64)
                keys[child] = parent * sizes[level] + codes[:, level]
                starts = np.searchsorted(keys, np.arange(n_parents + 1) * sizes[level])
                levels.append(_SparseLevel(torch.from_numpy(keys),
                                           torch.from_numpy(starts.astype(np.int64)),
                                           sizes[level]))
            item_nodes.append(torch.from_numpy(child.astype(np.int64)))
            node_sizes.append(torch.from_numpy(np.bincount(child, minlength=1)))
            parent, n_parents = child, n_children
        if n_parents != n:
            raise ValueError(f"{n - n_parents} items share a full code: deduplicate first")
        leaf_items = np.empty(n, dtype=np.int64)
        leaf_items[parent] = np.arange(n)
        return cls(levels, torch.from_numpy(leaf_items), item_nodes, node_sizes,
                   dense_max_entries)

    @property
    def n_levels(self) -> int:
        """Code length ``L``."""
        return len(self.levels)

    @property
    def vocab_sizes(self) -> list[int]:
        """Codes per level."""
        return [lv.vocab for lv in self.levels]

    @property
    def layout(self) -> list[str]:
        """``"dense"`` or ``"sparse"`` per level."""
        return ["dense" if isinstance(lv, _DenseLevel) else "sparse" for lv in self.levels]

    @property
    def nbytes(self) -> int:
        """Bytes held by the trie's tensors (tables or edges, and the per-item indexes)."""
        tensors = [*self.item_nodes, *self.node_sizes, self.leaf_items]
        for lv in self.levels:
            tensors += [lv.table, lv.valid] if isinstance(lv, _DenseLevel) else \
                [lv.keys, lv.starts]
        return sum(t.numel() * t.element_size() for t in tensors)

    def n_nodes(self, level: int) -> int:
        """Nodes at depth ``level`` (the parents of level ``level``'s transitions)."""
        return self.levels[level].n_parents()

    def to(self, device: torch.device | str) -> PrefixTrie:
        """The same trie on ``device`` (``self`` when already there)."""
        if self.leaf_items.device == torch.device(device):
            return self
        return PrefixTrie([lv.to(device) for lv in self.levels], self.leaf_items.to(device),
                          [t.to(device) for t in self.item_nodes],
                          [t.to(device) for t in self.node_sizes], self.dense_max_entries)

    def open_nodes(self, level: int, banned: tuple[torch.Tensor, torch.Tensor],
                   batch_size: int) -> torch.Tensor:
        """Which depth-``level + 1`` nodes still lead to an item that is not banned, per
        user: bool ``(batch_size, nodes)``, from the banned ``(rows, items)`` pairs (the
        ``nonzero`` of a ``(B, n_items)`` mask)."""
        rows, items = banned
        hits = torch.zeros(batch_size, len(self.node_sizes[level]), dtype=torch.int32,
                           device=rows.device)
        hits.index_put_((rows, self.item_nodes[level][items]),
                        torch.ones_like(rows, dtype=torch.int32), accumulate=True)
        return hits < self.node_sizes[level].to(torch.int32)

    def open_children(self, level: int, banned: tuple[torch.Tensor, torch.Tensor],
                      child: torch.Tensor) -> torch.Tensor:
        """:meth:`open_nodes` read at ``child`` ``(B, ...)`` (depth-``level + 1`` node ids
        per user, ``>= 0``): bool of ``child``'s shape.

        When the ``(B, nodes)`` table would exceed :attr:`dense_max_entries` (the deepest level
        of a big catalogue: 512 users x 1M nodes is 2 GB of counters), only the closed nodes
        are listed, as sorted ``user * nodes + node`` keys from the banned pairs, and each
        child is looked up among them; both ways give the same answer."""
        n_nodes = len(self.node_sizes[level])
        batch_size = child.shape[0]
        if batch_size * n_nodes <= self.dense_max_entries:
            return self.open_nodes(level, banned, batch_size).gather(
                1, child.flatten(1)).view_as(child)
        rows, items = banned
        keys, counts = torch.unique(rows * n_nodes + self.item_nodes[level][items],
                                    return_counts=True)
        closed = keys[counts >= self.node_sizes[level][keys % n_nodes]]
        query = torch.arange(batch_size, device=child.device).view(
            -1, *([1] * (child.dim() - 1))) * n_nodes + child
        if not len(closed):
            return torch.ones_like(child, dtype=torch.bool)
        pos = torch.searchsorted(closed, query).clamp(max=len(closed) - 1)
        return closed[pos] != query

    def allowed(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Valid next codes of depth-``level`` nodes: bool ``(*nodes.shape, V_level)``.

        A node id of ``-1`` (off the trie) allows nothing.
        """
        return self.levels[level].allowed(nodes.clamp(min=0)) & (nodes >= 0)[..., None]

    def child_table(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Depth-``level + 1`` node reached by every code from each of ``nodes`` (``-1``:
        none), ``(*nodes.shape, V_level)``; rows of ``-1`` nodes are meaningless."""
        return self.levels[level].child_table(nodes.clamp(min=0))

    def advance(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Nodes reached from ``nodes`` by ``codes`` (same shape); ``-1`` when invalid."""
        nxt = self.levels[level].advance(nodes.clamp(min=0), codes)
        return torch.where(nodes >= 0, nxt, -1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item of each full code ``(..., L)``, or ``-1`` where the code is not an item."""
        nodes = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for level, vocab in enumerate(self.vocab_sizes):
            c = codes[..., level]
            ok = (c >= 0) & (c < vocab)
            nodes = torch.where(ok, self.advance(level, nodes, c.clamp(0, vocab - 1)), -1)
        return torch.where(nodes >= 0, self.leaf_items[nodes.clamp(min=0)], -1)


@dataclass
class BeamResult:
    """The beams of a batch, best first.

    Attributes:
        codes: Generated codes, shape ``(B, W, L)``.
        scores: Sum of the log-probabilities of the codes, ``(B, W)``; ``-inf`` for empty
            beams (fewer than ``W`` valid codes exist).
        items: The item of each code, ``(B, W)``; ``-1`` for empty beams and for codes that
            are no item (possible only without constraints).
    """

    codes: torch.Tensor
    scores: torch.Tensor
    items: torch.Tensor

    # The share of beams that are no item (the hallucination rate) is defined once, for
    # every generative output, by genrec.evaluation.generative.beam_risks.


LogProbFn = Callable[[torch.Tensor], torch.Tensor]
"""``f(prefix_codes (B, W, t)) -> log-probabilities of the level-t code, (B, W, V_t)``."""


def beam_search(log_probs: LogProbFn, trie: PrefixTrie, batch_size: int, beam: int, *,
                constrained: bool = True, banned: torch.Tensor | None = None,
                device: torch.device | str = "cpu") -> BeamResult:
    """Beam search for the ``beam`` most likely codes, optionally only codes of items.

    At level ``t`` every beam is extended by every code; with ``constrained`` the codes that
    leave the trie are masked to ``-inf`` (one gather in :meth:`PrefixTrie.allowed` for all
    beams of all users), then the best ``beam`` extensions per user are kept. With
    ``beam >= n_items`` constrained search is exhaustive: every item is returned with its
    exact log-probability.

    Args:
        log_probs: The model's next-code log-probabilities given the codes so far.
        trie: Codes of the catalogue.
        batch_size: Users ``B``.
        beam: Beams per user ``W``.
        constrained: Mask codes that lead to no item.
        banned: Items each user must not get, bool ``(B, n_items)`` (e.g. the history). A
            prefix whose items are all banned is closed at every level, so no beam is spent
            on a path that can only end in a banned item. Only with ``constrained``.
        device: Where the search tensors live (the model's device).

    Returns:
        The beams, best first.
    """
    trie = trie.to(device)
    if banned is not None:
        banned = banned.to(device).nonzero(as_tuple=True)              # (rows, items), once
    scores = torch.full((batch_size, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0                                                 # one live beam at first
    codes = torch.zeros(batch_size, beam, 0, dtype=torch.long, device=device)
    nodes = torch.zeros(batch_size, beam, dtype=torch.long, device=device)
    for level in range(trie.n_levels):
        lp = log_probs(codes)                                          # (B, W, V)
        if constrained:
            # A model may know more codes than this trie's items use (MTGRec: the vocabulary
            # covers several identifier groups); those codes lead to no item.
            lp = lp[..., : trie.vocab_sizes[level]]
            if banned is None:
                ok = trie.allowed(level, nodes)                        # (B, W, V)
            else:
                child = trie.child_table(level, nodes)                 # (B, W, V) next nodes
                ok = (child >= 0) & (nodes >= 0)[..., None]
                ok &= trie.open_children(level, banned, child.clamp(min=0))
            lp = lp.masked_fill(~ok, float("-inf"))
        vocab = lp.shape[-1]
        cand = (scores[..., None] + lp).flatten(1)                     # (B, W * V)
        top = torch.topk(cand, beam, dim=1)
        parent, code = top.indices // vocab, top.indices % vocab       # (B, W) each
        scores = top.values
        codes = torch.cat([codes.gather(1, parent[..., None].expand(-1, -1, level)),
                           code[..., None]], dim=2)                    # (B, W, level + 1)
        nodes = trie.advance(level, nodes.gather(1, parent), code)
    items = torch.where((nodes >= 0) & torch.isfinite(scores),
                        trie.leaf_items[nodes.clamp(min=0)], -1)
    return BeamResult(codes, scores, items)
