"""Prefix-constrained beam search over semantic IDs.

The catalogue's codes form a trie. :class:`PrefixTrie` stores it as one dense transition
table per level: ``children[l][node, code]`` is the node reached from a depth-``l`` node by
``code``, or ``-1`` when no item continues that way. A valid-next-token mask for a whole
batch of beams is then one gather, ``children[l][nodes] >= 0``, so :func:`beam_search` runs
as a handful of tensor operations per level, with no Python walk per beam.

Memory is ``sum_l nodes_l * V_l`` entries, at most ``n_items * K`` per level (Beauty, 12k
items, K=256: about 3M entries at the deepest full level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BeamResult", "PrefixTrie", "beam_search"]


@dataclass
class PrefixTrie:
    """The trie of every item's code, as dense per-level transition tables.

    Attributes:
        children: ``children[l]`` has shape ``(nodes at depth l, V_l)``; entries are node ids
            at depth ``l + 1`` or ``-1``. Depth 0 has one node, the root (id 0).
        leaf_items: Item id of each depth-``L`` node, shape ``(n_items,)``.
        item_nodes: ``item_nodes[l]`` is the depth-``l + 1`` node above each item,
            shape ``(n_items,)`` (so ``item_nodes[-1]`` inverts ``leaf_items``).
        node_sizes: ``node_sizes[l]`` counts the items below each depth-``l + 1`` node.
    """

    children: list[torch.Tensor]
    leaf_items: torch.Tensor
    item_nodes: list[torch.Tensor]
    node_sizes: list[torch.Tensor]

    def __post_init__(self) -> None:
        # Bool copies of the tables: the per-step mask gathers 1 byte per entry, not 8.
        self._valid = [t >= 0 for t in self.children]

    @classmethod
    def from_codes(cls, codes: np.ndarray, vocab_sizes: list[int] | None = None) -> PrefixTrie:
        """Build the trie of ``codes`` ``(n_items, L)`` (row ``i`` is item ``i``'s code).

        Args:
            codes: Unique codes per item (deduplicate first).
            vocab_sizes: Codes per level; default ``codes.max(0) + 1``.

        Raises:
            ValueError: If two items share a code, or a code is outside its level's range.
        """
        codes = np.asarray(codes, dtype=np.int64)
        n, levels = codes.shape
        sizes = list(vocab_sizes) if vocab_sizes is not None else [
            int(v) + 1 for v in codes.max(0, initial=0)]
        if len(sizes) != levels or (n and ((codes < 0).any() or (codes >= sizes).any())):
            raise ValueError(f"codes outside the vocabulary sizes {sizes}")
        parent = np.zeros(n, dtype=np.int64)                           # every item at the root
        n_parents = 1
        children, item_nodes, node_sizes = [], [], []
        for level in range(levels):
            _, child = np.unique(codes[:, : level + 1], axis=0, return_inverse=True)
            child = child.reshape(-1)
            table = np.full((n_parents, sizes[level]), -1, dtype=np.int64)
            table[parent, codes[:, level]] = child
            children.append(torch.from_numpy(table))
            item_nodes.append(torch.from_numpy(child.astype(np.int64)))
            node_sizes.append(torch.from_numpy(np.bincount(child, minlength=1)))
            parent, n_parents = child, int(child.max(initial=-1)) + 1
        if n_parents != n:
            raise ValueError(f"{n - n_parents} items share a full code: deduplicate first")
        leaf_items = np.empty(n, dtype=np.int64)
        leaf_items[parent] = np.arange(n)
        return cls(children, torch.from_numpy(leaf_items), item_nodes, node_sizes)

    @property
    def n_levels(self) -> int:
        """Code length ``L``."""
        return len(self.children)

    @property
    def vocab_sizes(self) -> list[int]:
        """Codes per level."""
        return [t.shape[1] for t in self.children]

    def to(self, device: torch.device | str) -> PrefixTrie:
        """The same trie on ``device`` (``self`` when already there)."""
        if self.leaf_items.device == torch.device(device):
            return self
        return PrefixTrie([t.to(device) for t in self.children], self.leaf_items.to(device),
                          [t.to(device) for t in self.item_nodes],
                          [t.to(device) for t in self.node_sizes])

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

    def allowed(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Valid next codes of depth-``level`` nodes: bool ``(*nodes.shape, V_level)``.

        A node id of ``-1`` (off the trie) allows nothing.
        """
        return self._valid[level][nodes.clamp(min=0)] & (nodes >= 0)[..., None]

    def advance(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Nodes reached from ``nodes`` by ``codes`` (same shape); ``-1`` when invalid."""
        nxt = self.children[level][nodes.clamp(min=0), codes]
        return torch.where(nodes >= 0, nxt, -1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item of each full code ``(..., L)``, or ``-1`` where the code is not an item."""
        nodes = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for level in range(self.n_levels):
            c = codes[..., level]
            ok = (c >= 0) & (c < self.children[level].shape[1])
            nodes = torch.where(ok, self.advance(level, nodes, c.clamp(0, self.children[
                level].shape[1] - 1)), -1)
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
            lp = lp[..., : trie.children[level].shape[1]]
            ok = trie.allowed(level, nodes)                            # (B, W, V)
            if banned is not None:
                child = trie.children[level][nodes.clamp(min=0)]       # (B, W, V) next nodes
                open_ = trie.open_nodes(level, banned, batch_size)     # (B, nodes at l + 1)
                ok &= open_.gather(1, child.clamp(min=0).flatten(1)).view_as(ok)
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
