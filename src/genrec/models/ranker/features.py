"""The ranker's features for (user, candidate item) pairs, vectorised over a whole batch.

Sparse inputs (embedded by the ranker net): the user id, the item id, the item's categories /
genres (a multi-hot row of :func:`category_matrix`) and, when the items have text, the
item's MiniLM text embedding. Dense inputs, one row of :data:`DENSE_FEATURES` per pair
(:func:`pair_features`):

==================  ===========================================================================
retrieval_z         the retriever's score, standardised within the user's candidate list
retrieval_gap       the score minus the user's best candidate score
rank_frac           the candidate's retrieval rank / N (0 = first)
rank_discount       ``1 / log2(rank + 2)``
history_len         ``log1p`` of the user's history length
item_popularity     ``log1p`` of the item's interactions in the training data
item_recent_share   share of the item's interactions that are among their user's last 3
                    (items users are moving to, rather than from: a recency signal that also
                    works for data ordered by position only)
item_last_seen      the item's last interaction time, scaled to [0, 1] over the training data
genre_overlap       share of the user's last 10 items that share a category with the item
text_sim_last       cosine of the item's text embedding with the last history item's
text_sim_recent     cosine with the mean text embedding of the last 10 history items
==================  ===========================================================================

Item-side statistics come from the interactions the retriever was fitted on (the held-out
table for the ranker's training pairs, the full training table for inference), so a pair's
features never see the pair's label.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from genrec.data.interactions import Columns, Histories, Interactions

__all__ = ["CATEGORY_COLUMNS", "DENSE_FEATURES", "category_matrix", "item_stats",
           "pair_features"]

CATEGORY_COLUMNS = ("categories", "genres", "category")
"""Item-table columns read as categories (the first one present), as the serving bundle does."""

DENSE_FEATURES = ("retrieval_z", "retrieval_gap", "rank_frac", "rank_discount", "history_len",
                  "item_popularity", "item_recent_share", "item_last_seen", "genre_overlap",
                  "text_sim_last", "text_sim_recent")
"""Names of the dense feature columns, in order."""

_RECENT = 10
"""History items that the genre and text profiles of a user read."""


def item_stats(train: Interactions, recent: int = 3) -> torch.Tensor:
    """Per-item statistics of ``train``: ``(I, 3)`` = ``log1p`` popularity, recent share,
    last-seen time scaled to [0, 1]."""
    frame = train.frame.with_columns(
        (pl.len().over(Columns.user) - 1 - pl.int_range(pl.len()).over(Columns.user) < recent)
        .alias("recent"))  # the frame is sorted by user, then time
    agg = frame.group_by(Columns.item).agg(pl.len().alias("n"), pl.col("recent").sum(),
                                           pl.col(Columns.timestamp).max().alias("last"))
    items = agg[Columns.item].to_numpy()
    out = np.zeros((train.n_items, 3), dtype=np.float32)
    n = agg["n"].to_numpy().astype(np.float32)
    out[items, 0] = np.log1p(n)
    out[items, 1] = agg["recent"].to_numpy() / n
    if len(train):
        t = train.frame[Columns.timestamp]
        lo, hi = float(t.min()), float(t.max())  # type: ignore[arg-type]
        out[items, 2] = (agg["last"].to_numpy() - lo) / max(hi - lo, 1.0)
    return torch.from_numpy(out)


def category_matrix(items: pl.DataFrame | None, n_items: int, max_categories: int
                    ) -> tuple[torch.Tensor, list[str]]:
    """Binary item x category matrix ``(I, C)`` from the first of :data:`CATEGORY_COLUMNS`
    in ``items`` (a list or a string column), keeping the ``max_categories`` most frequent
    categories; ``(I, 0)`` when the items have none."""
    col = next((c for c in CATEGORY_COLUMNS if items is not None and c in items.columns), None)
    if col is None or items is None:
        return torch.zeros(n_items, 0), []
    s = items.select(Columns.item, pl.col(col).alias("cat"))
    if s.schema["cat"] != pl.List(pl.String):
        s = s.with_columns(pl.col("cat").cast(pl.String).str.split("|"))
    long = s.explode("cat").drop_nulls("cat").filter(pl.col("cat") != "")
    long = long.filter(pl.col(Columns.item) < n_items)
    top = (long.group_by("cat").len().sort(["len", "cat"], descending=[True, False])
           .head(max_categories))
    vocab = top["cat"].to_list()
    ids = pl.DataFrame({"cat": vocab, "cid": np.arange(len(vocab))})
    pairs = long.join(ids, on="cat", how="inner")
    out = torch.zeros(n_items, len(vocab))
    out[torch.from_numpy(pairs[Columns.item].to_numpy().copy()),
        torch.from_numpy(pairs["cid"].to_numpy().copy())] = 1.0
    return out, vocab


def pair_features(histories: Histories, cand: torch.Tensor, cand_scores: torch.Tensor,
                  stats: torch.Tensor, cats: torch.Tensor, text: torch.Tensor | None
                  ) -> torch.Tensor:
    """Dense features of every (user, candidate) pair: ``(B, N, F)`` (see the module
    docstring; F = ``len(DENSE_FEATURES)``).

    Args:
        histories: The users and their histories, ``B`` rows.
        cand: Candidate items ``(B, N)`` in retrieval order, ``-1`` for no candidate.
        cand_scores: Their retrieval scores ``(B, N)`` (anything where ``cand`` is -1).
        stats: :func:`item_stats` ``(I, 3)``.
        cats: :func:`category_matrix` ``(I, C)``.
        text: L2-normalised item text embeddings ``(I, T)``, or None.
    """
    b, n = cand.shape
    valid = cand >= 0
    safe = cand.clamp_min(0)
    sc = torch.where(valid, cand_scores.float(), torch.zeros(()))
    count = valid.sum(1, keepdim=True).clamp_min(1)
    mean = sc.sum(1, keepdim=True) / count
    std = (((sc - mean) ** 2 * valid).sum(1, keepdim=True) / count).sqrt().clamp_min(1e-6)
    rank = torch.arange(n, dtype=torch.float32).expand(b, n)
    lengths = torch.from_numpy(histories.lengths.astype(np.float32))
    feats = [(sc - mean) / std, sc - sc[:, :1], rank / n, 1.0 / torch.log2(rank + 2),
             torch.log1p(lengths)[:, None].expand(b, n)]
    feats += list(stats[safe].unbind(-1))                              # 3 x (B, N)
    recent = histories.padded(_RECENT)                                 # (B, L), ids + 1, 0 pad
    n_recent = (recent > 0).sum(1).clamp_min(1).float()                # (B,)
    if cats.shape[1]:
        cats_pad = torch.cat([torch.zeros(1, cats.shape[1]), cats])    # (I + 1, C)
        shared = torch.bmm(cats_pad[recent], cats[safe].transpose(1, 2)) > 0  # (B, L, N)
        feats.append(shared.float().sum(1) / n_recent[:, None])
    else:
        feats.append(torch.zeros(b, n))
    if text is not None:
        text_pad = torch.cat([torch.zeros(1, text.shape[1]), text])    # (I + 1, T)
        cand_text = text[safe]                                         # (B, N, T)
        last = text_pad[recent[:, -1]]                                 # (B, T)
        profile = text_pad[recent].sum(1) / n_recent[:, None]          # (B, T)
        profile = profile / profile.norm(dim=1, keepdim=True).clamp_min(1e-6)
        feats += [(cand_text @ last[:, :, None]).squeeze(-1),
                  (cand_text @ profile[:, :, None]).squeeze(-1)]
    else:
        feats += [torch.zeros(b, n), torch.zeros(b, n)]
    out = torch.stack(feats, -1)                                       # (B, N, F)
    return torch.where(valid[..., None], out, torch.zeros(()))
