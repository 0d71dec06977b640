"""Generating items never seen in training from their text codes (cold-item fusion).

A generative model trained on warm items learns ``P(code | history)`` only for codes it saw
as targets; a cold item's full code (text codes + dedup code) gets almost no mass, so beam
search never reaches it (TIGER's cold-target Recall@10 on Beauty: 0.0004). TIGER's paper
(Sec. 4.2) retrieves cold items by their semantic-ID *prefix* instead. :class:`ColdPrefixes`
holds the distinct ``L``-code prefixes of the cold items as a trie, so a constrained beam
search over it (:func:`~genrec.semantic_ids.beam_search`, the same search and the same
model, ``L`` levels instead of ``L + 1``) finds the prefixes the model finds most likely;
:func:`fuse_cold` then gives each cold item below a generated prefix the score
``log P(prefix | history) + log(weight / n)``, ``n`` the cold items sharing that prefix, so a
cold item competes with the warm items of its prefix as if it held the share ``weight`` of
the prefix's mass. The prefix length is a setting: the full ``L`` text codes (TIGER's
choice) or fewer, since a prefix that only cold items have never was a training target and
gets almost no mass (on ML-100K with 3 x 32 codes, most items have a prefix of their own). Every fused item is a catalogue item (an index into the cold table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from genrec.semantic_ids.decoding import BeamResult, PrefixTrie

__all__ = ["ColdPrefixes", "fuse_cold"]


@dataclass
class ColdPrefixes:
    """The cold items grouped by their first ``L`` codes.

    Attributes:
        trie: Trie of the distinct prefixes (its leaf "items" are prefix ids).
        items: Cold items per prefix, ``(P, m)``, padded with ``-1``.
        counts: Cold items per prefix, ``(P,)``.
    """

    trie: PrefixTrie
    items: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def build(cls, codes: np.ndarray, cold: np.ndarray, vocab_sizes: list[int],
              levels: int | None = None) -> ColdPrefixes | None:
        """From every item's code ``(n_items, L + 1)`` and the cold mask ``(n_items,)``;
        None when no item is cold.

        Args:
            codes: Every item's code (last column: the dedup code).
            cold: Which items are cold.
            vocab_sizes: Codes per level.
            levels: Prefix length (default ``L``: every tokenizer code, no dedup code). A
                shorter prefix is shared with more warm items, whose training gives it mass:
                a prefix that only cold items have is one the model was never trained to emit.
        """
        cold_items = np.flatnonzero(cold)
        if not len(cold_items):
            return None
        n = codes.shape[1] - 1 if levels is None else levels
        if not 1 <= n <= codes.shape[1] - 1:
            raise ValueError(f"levels must be in [1, {codes.shape[1] - 1}], got {levels}")
        prefixes, prefix_of = np.unique(codes[cold_items, :n], axis=0, return_inverse=True)
        prefix_of = prefix_of.reshape(-1)
        counts = np.bincount(prefix_of, minlength=len(prefixes))
        order = np.argsort(prefix_of, kind="stable")
        rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
        items = np.full((len(prefixes), int(counts.max())), -1, dtype=np.int64)
        items[prefix_of[order], rank] = cold_items[order]
        trie = PrefixTrie.from_codes(prefixes, list(vocab_sizes[:n]))
        return cls(trie, torch.from_numpy(items), torch.from_numpy(counts))


def fuse_cold(dense: torch.Tensor, prefix_beams: BeamResult, cold: ColdPrefixes,
              weight: float) -> torch.Tensor:
    """Add the cold items of the generated prefixes to a dense score block.

    Args:
        dense: ``(B, n_items)`` scores (``-inf`` for items not generated).
        prefix_beams: Beams over ``cold.trie`` (``items`` are prefix ids or ``-1``).
        cold: The cold prefix table.
        weight: Share of a prefix's probability given to its cold items (0 < weight).

    Returns:
        ``(B, n_items)``: the max of ``dense`` and each cold item's fused score.
    """
    n_items = dense.shape[1]
    prefix = prefix_beams.items                                        # (B, W)
    ok = prefix >= 0
    p = prefix.clamp(min=0)
    cand = cold.items[p]                                               # (B, W, m)
    score = (prefix_beams.scores + math.log(weight)
             - torch.log(cold.counts[p].float()))[..., None].expand_as(cand)
    valid = ok[..., None] & (cand >= 0) & torch.isfinite(score)
    cols = torch.where(valid, cand, n_items).flatten(1)                # (B, W * m)
    out = torch.cat([dense, dense.new_full((len(dense), 1), float("-inf"))], 1)
    out.scatter_reduce_(1, cols, torch.where(valid, score, float("-inf")).flatten(1),
                        reduce="amax")
    return out[:, :-1]
