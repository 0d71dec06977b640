"""TGH, the training-free transition-graph heuristic of Han et al. (2026).

From "An Embarrassingly Simple Graph Heuristic Reveals Shortcut-Solvable Benchmarks for
Sequential Recommendation" (arXiv 2605.07125) and its reference code (``src/tgh.py`` of
github.com/haoyuhan1/GraphRec). Nothing is learned; ``fit`` only counts.

The graph
    A directed item graph with an edge ``a -> b`` for every pair of consecutive items
    ``(a, b)`` in a training sequence, weighted by how often the pair occurs.

Rings
    For a source item ``s``, ring ``h`` holds the items exactly ``h`` hops from ``s``
    (breadth-first: reachable in ``h`` steps and not earlier; ``s`` itself is in no ring).

Ranking inside a ring
    By the similarity of each candidate to the source item; in ring 1 the transition
    strength is added: ``+ edge_weight * log1p(count(s, j)) / max_k log1p(count(s, k))``.

The list
    Each ring ``h`` gets a budget of ``budgets[h]`` slots, filled by its best items in ring
    order (TGH-1, ``[[7, 2, 1]]``: 7 slots for ring 1, 2 for ring 2, 1 for ring 3 around the
    last item). A ring with too few items takes its shortfall from the queue of the earlier
    rings' surplus items (best first) before its own items; what remains of the queue follows
    the budgeted slots. TGH-2 (``[[5, 1], [3, 1]]``) adds a second source, the second-to-last
    item: its rings skip the items of the first source's block, and its block comes next.
    A source block shorter than its budget is padded with the source's most similar
    non-ring items (the reference code's ``--semantic_pad``; its default is a random pad).

How this implementation differs from the paper, and why:

* Similarity. The paper uses cosine similarity of flan-t5-xl embeddings of the item text.
  ``similarity: text`` does exactly that with the all-MiniLM-L6-v2 embeddings of the item
  text (``FitContext.items``; ``text`` sets template and encoder). The default is a
  training-free stand-in that needs no text: ``cooccurrence``, the cosine of two items'
  user vectors in the training matrix; ``popularity`` is the other one.
* Full ranking. ``score`` ranks the whole catalogue: the source blocks first, then the rest
  of the first source's rings in assembly order, then the remaining items by similarity to
  the last item (by popularity for an empty history), seen items last. The scores encode
  ranks, exact in float32 for catalogues below about 5 million items.
* Seen items never enter a ring or a block, so they never take a budgeted slot (genrec's
  protocol masks them anyway; the reference code evaluates without masking).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender
from genrec.text import ItemTextConfig, item_embeddings

__all__ = ["GraphHeuristic", "GraphHeuristicConfig", "assemble_rings", "transition_counts"]

_log = logging.getLogger(__name__)

_TIE = 1e-6
"""Weight of normalised popularity added to every similarity: breaks ties (e.g. the many
zero co-occurrence similarities) towards popular items without reordering real scores."""


class GraphHeuristicConfig(ModelConfig):
    """Graph heuristic settings (defaults: the paper's TGH-2, which beat its TGH-1 on Amazon
    Beauty validation, NDCG@10 0.0604 against 0.0586)."""

    kind: Literal["graph_heuristic"] = "graph_heuristic"
    budgets: list[list[int]] = Field(default_factory=lambda: [[5, 1], [3, 1]])
    """Per source (the last history item, then the second-to-last, ...), the list slots of
    each hop ring, nearest ring first. ``[[7, 2, 1]]`` is TGH-1; ``[[5, 1], [3, 1]]`` TGH-2.
    The number of entries of a source is its number of rings."""
    edge_weight: float = Field(0.5, ge=0)
    """Weight of the normalised ``log1p`` transition count added to ring-1 similarities."""
    similarity: Literal["cooccurrence", "popularity", "text"] = "cooccurrence"
    """What ranks items inside a ring and pads short blocks: cosine similarity of the items'
    training user vectors, popularity, or cosine similarity of the items' text embeddings
    (as in the paper; needs item features)."""
    text: ItemTextConfig = Field(default_factory=ItemTextConfig)
    """Item text template and encoder (``similarity: text`` only)."""

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[list[int]]) -> list[list[int]]:
        if not v or any(not b or min(b) < 0 or sum(b) < 1 for b in v):
            raise ValueError("budgets: one non-empty list of non-negative slots per source, "
                             "each summing to at least 1")
        return v


def transition_counts(train: Interactions) -> sp.csr_matrix:
    """Counts of consecutive item pairs ``a -> b`` within users, shape ``(I, I)``.

    Repeats of the same item (``a -> a``) are dropped: an item is never its own neighbour.
    """
    users, items = train.users, train.items  # sorted by user, then time
    same = (users[1:] == users[:-1]) & (items[1:] != items[:-1])
    a, b = items[:-1][same], items[1:][same]
    n = train.n_items
    counts = sp.csr_matrix((np.ones(len(a), dtype=np.float32), (a, b)), shape=(n, n))
    counts.sum_duplicates()
    return counts


def assemble_rings(rows: list[np.ndarray], ranks: list[np.ndarray], budgets: list[int],
                   n_rows: int) -> tuple[list[np.ndarray], np.ndarray]:
    """List positions of ring members under per-ring budgets with a surplus queue.

    Vectorised over users (the loop runs over the few rings). Per user, ring ``h`` first
    takes ``min(shortfall, queue)`` items from the front of the queue of earlier rings'
    surplus, then its own best ``min(n_h, budget_h)`` items; its remaining items join the
    back of the queue. After the last ring the rest of the queue follows.

    Args:
        rows: Per ring, the user (row) of each member, shape ``(n_entries_h,)``.
        ranks: Per ring, each member's 0-based rank within its user's ring.
        budgets: Slots per ring.
        n_rows: Number of users ``B``.

    Returns:
        Per ring, each member's 0-based position in its user's list (per user the positions
        of all ring members are a permutation of ``0..n_members-1``), and the number of ring
        members per user ``(B,)``.
    """
    sizes = [np.bincount(r, minlength=n_rows) for r in rows]
    filled = np.zeros(n_rows, dtype=np.int64)     # next free list position
    queued = np.zeros(n_rows, dtype=np.int64)     # surplus items waiting in the queue
    taken = np.zeros(n_rows, dtype=np.int64)      # queue items consumed so far
    enqueued = np.zeros(n_rows, dtype=np.int64)   # queue items ever added
    windows, own_start, surplus_start = [], [], []
    for size, budget in zip(sizes, budgets, strict=True):
        own = np.minimum(size, budget)
        take = np.minimum(queued, budget - own)
        windows.append((taken.copy(), filled.copy(), take))  # queue slice -> list slice
        taken += take
        queued -= take
        filled += take
        own_start.append(filled.copy())
        filled += own
        surplus_start.append(enqueued.copy())
        enqueued += size - own
        queued += size - own
    positions = []
    for h, (r, k) in enumerate(zip(rows, ranks, strict=True)):
        pos = own_start[h][r] + k
        surplus = k >= budgets[h]
        if surplus.any():
            rs = r[surplus]
            q = surplus_start[h][rs] + k[surplus] - budgets[h]  # index in the user's queue
            out = filled[rs] + q - taken[rs]                     # the tail, by default
            for q0, p0, n in windows:
                inside = (q >= q0[rs]) & (q < q0[rs] + n[rs])
                out[inside] = p0[rs][inside] + q[inside] - q0[rs][inside]
            pos[surplus] = out
        positions.append(pos)
    return positions, np.sum(sizes, axis=0) if sizes else np.zeros(n_rows, dtype=np.int64)


def _csr_state(m: sp.csr_matrix, name: str) -> dict[str, torch.Tensor]:
    return {f"{name}.indptr": torch.from_numpy(m.indptr.astype(np.int64)),
            f"{name}.indices": torch.from_numpy(m.indices.astype(np.int64)),
            f"{name}.data": torch.from_numpy(m.data.astype(np.float32))}


def _csr_load(state: dict[str, torch.Tensor], name: str, n: int) -> sp.csr_matrix:
    return sp.csr_matrix((state[f"{name}.data"].numpy(), state[f"{name}.indices"].numpy(),
                          state[f"{name}.indptr"].numpy()), shape=(n, n))


class GraphHeuristic(Recommender[GraphHeuristicConfig]):
    """Training-free ring retrieval over the item-transition graph (see the module docstring)."""

    config_cls = GraphHeuristicConfig
    seed_dependent = False  # nothing is drawn at random: every seed fits the same model

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        """Count transitions (and co-occurrences); nothing is trained. With
        ``similarity: text`` the items' text embeddings (from ``ctx.items``) give the
        similarity, as in the paper.

        Raises:
            ValueError: If ``similarity`` is ``text`` and ``ctx.items`` is missing.
        """
        emb = None
        if self.config.similarity == "text":
            if ctx.items is None:
                raise ValueError("similarity='text' needs item features: "
                                 "fit(train, FitContext(items=dataset.items))")
            emb = F.normalize(torch.from_numpy(np.asarray(
                item_embeddings(ctx.items, train.n_items, self.config.text),
                dtype=np.float32)), dim=1)
        self.item_embeddings_ = emb
        self.transitions_ = transition_counts(train)                       # (I, I) counts
        counts = train.item_counts().astype(np.float32)
        self.popularity_ = torch.from_numpy(counts / max(counts.max(initial=0.0), 1.0))  # (I,)
        self.similarity_: sp.csr_matrix | None = None
        if self.item_embeddings_ is None and self.config.similarity == "cooccurrence":
            x = train.to_csr()                                             # (U, I) binary
            co = (x.T @ x).tocsr()                                         # (I, I)
            inv = 1.0 / np.sqrt(np.maximum(co.diagonal(), 1.0))
            sim = sp.diags(inv) @ co @ sp.diags(inv)
            sim.setdiag(0.0)
            sim.eliminate_zeros()
            self.similarity_ = sim.tocsr().astype(np.float32)
        _log.info("graph heuristic: %d items, %d transition edges", train.n_items,
                  self.transitions_.nnz)

    # -- scoring ------------------------------------------------------------------------------
    def _similarity(self, src: np.ndarray, has: np.ndarray) -> torch.Tensor:
        """Similarity of every item to each row's source item, ``(B, I)``; 0 without source."""
        if self.item_embeddings_ is not None:
            emb = self.item_embeddings_
            sim = emb[torch.from_numpy(src)] @ emb.T                       # (B, I)
        elif self.similarity_ is not None:
            sim = torch.from_numpy(self.similarity_[src].toarray())       # (B, I)
        else:
            sim = self.popularity_.expand(len(src), -1).clone()           # (B, I)
        sim[torch.from_numpy(~has)] = 0.0
        return sim + _TIE * self.popularity_

    def _rings(self, src: np.ndarray, n_rings: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Breadth-first hop rings around each row's source: (rows, items) of each ring."""
        b, n = len(src), self.n_items_
        adj = self.transitions_.copy()
        adj.data[:] = 1.0
        visited = torch.zeros(b, n, dtype=torch.bool)                      # (B, I)
        visited[torch.arange(b), torch.from_numpy(src)] = True
        r, c = np.arange(b), src
        rings = []
        for _ in range(n_rings):
            frontier = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(b, n))
            reach = (frontier @ adj).tocoo()
            rt = torch.from_numpy(reach.row.astype(np.int64))
            ct = torch.from_numpy(reach.col.astype(np.int64))
            new = ~visited[rt, ct]
            rt, ct = rt[new], ct[new]
            visited[rt, ct] = True
            rings.append((rt, ct))
            r, c = rt.numpy(), ct.numpy()
        return rings

    def _ring_one_bonus(self, src: np.ndarray) -> sp.csr_matrix:
        """``edge_weight * log1p(count) / row max`` of each source's out-edges, ``(B, I)``."""
        w = self.transitions_[src].tocsr()
        w.data = np.log1p(w.data)
        row_max = np.asarray(w.max(axis=1).todense()).ravel()
        w = sp.diags(self.config.edge_weight / np.where(row_max > 0, row_max, 1.0)) @ w
        return w.tocsr()

    def _score(self, histories: Histories) -> torch.Tensor:
        b, n = len(histories), self.n_items_
        lengths = histories.lengths
        rows_seen = torch.from_numpy(np.repeat(np.arange(b), lengths))
        seen = torch.zeros(b, n, dtype=torch.bool)
        seen[rows_seen, torch.from_numpy(histories.items.astype(np.int64))] = True
        placed = seen.clone()  # seen items and the items of earlier source blocks
        top = 3.0 * (n + sum(sum(x) for x in self.config.budgets) + 1)
        out: torch.Tensor | None = None
        offset = 0  # list positions taken by earlier source blocks
        rest: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        block_writes = []
        for s, budgets in enumerate(self.config.budgets):
            has = lengths > s
            src = np.zeros(b, dtype=np.int64)
            src[has] = histories.items[histories.indptr[1:][has] - 1 - s]
            key = self._similarity(src, has)                               # (B, I)
            if out is None:  # what ranks everything outside the rings and blocks
                out = key.clone()
                out[seen] -= 4.0
            size = sum(budgets)
            # Like the reference code, keep each ring's best `size` members: no member beyond
            # them can reach the block (a longer ring fills it alone).
            rows, cols, ranks = [], [], []
            blocked = placed | torch.from_numpy(~has)[:, None]            # (B, I)
            for h, (r, c) in enumerate(self._rings(src, len(budgets))):
                in_ring = torch.full((b, n), float("-inf"))                # (B, I)
                in_ring[r, c] = key[r, c]
                if h == 0 and self.config.edge_weight > 0:
                    w = self._ring_one_bonus(src).tocoo()
                    in_ring[torch.from_numpy(w.row.astype(np.int64)),
                            torch.from_numpy(w.col.astype(np.int64))] += torch.from_numpy(w.data)
                best = torch.topk(in_ring.masked_fill_(blocked, float("-inf")), min(size, n))
                pr, pj = np.nonzero(torch.isfinite(best.values).numpy())  # rank pj in row pr
                rows.append(pr)
                cols.append(best.indices.numpy()[pr, pj])
                ranks.append(pj)
            positions, n_members = assemble_rings(rows, ranks, budgets, b)
            r, c, p = np.concatenate(rows), np.concatenate(cols), np.concatenate(positions)
            if s == 0:
                rest = (r, c, p)
            # Pad short blocks with the most similar items outside the rings.
            need = np.where(has, np.maximum(size - n_members, 0), 0)
            if need.any():
                free = key.masked_fill(placed, float("-inf"))
                free[torch.from_numpy(r), torch.from_numpy(c)] = float("-inf")
                best = torch.topk(free, min(size, n), dim=1)
                j = np.arange(best.indices.shape[1])
                ok = (j[None] < need[:, None]) & torch.isfinite(best.values).numpy()
                pr, pj = np.nonzero(ok)
                r = np.concatenate([r, pr])
                c = np.concatenate([c, best.indices.numpy()[pr, pj]])
                p = np.concatenate([p, n_members[pr] + pj])
            in_block = p < size
            r, c, p = r[in_block], c[in_block], p[in_block]
            block_writes.append((r, c, top - (offset + p)))
            placed[torch.from_numpy(r), torch.from_numpy(c)] = True
            offset += size
        assert out is not None and rest is not None
        r, c, p = rest
        out[torch.from_numpy(r), torch.from_numpy(c)] = torch.from_numpy(
            (top - offset - p).astype(np.float32))
        for r, c, v in block_writes:
            out[torch.from_numpy(r), torch.from_numpy(c)] = torch.from_numpy(v.astype(np.float32))
        return out

    # -- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        state: dict[str, Any] = _csr_state(self.transitions_, "transitions")
        state["popularity"] = self.popularity_
        if self.similarity_ is not None:
            state |= _csr_state(self.similarity_, "similarity")
        if self.item_embeddings_ is not None:
            state["item_embeddings"] = self.item_embeddings_
        return state

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        n = self.n_items_
        self.transitions_ = _csr_load(state, "transitions", n)
        self.popularity_ = state["popularity"]
        self.similarity_ = (_csr_load(state, "similarity", n)
                            if "similarity.data" in state else None)
        self.item_embeddings_ = state.get("item_embeddings")
