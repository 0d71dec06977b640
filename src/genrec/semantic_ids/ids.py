"""Semantic IDs of a catalogue: collision-free codes and a codebook-health report.

Two items can receive the same ``L`` codes (their vectors quantise identically).
:func:`deduplicate` appends one more code, the item's rank among the items sharing its codes
(in item id order), so every item gets a unique ``L + 1``-code ID, as in TIGER.
:func:`codebook_health` reports how well the codes use their codebooks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CodebookHealth", "codebook_health", "deduplicate"]


def _group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Id of each row's distinct code tuple ``(n,)``, and each group's size."""
    if codes.shape[1] == 0:
        return np.zeros(len(codes), dtype=np.int64), np.array([len(codes)])
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def deduplicate(codes: np.ndarray) -> np.ndarray:
    """Append a dedup code: each item's rank among the items with the same codes.

    Args:
        codes: Codes ``(n, L)`` (any integers).

    Returns:
        ``(n, L + 1)`` int64 codes, unique per row. The last column is 0 for the first item
        (lowest id) of every group, 1 for the second, and so on.
    """
    codes = np.asarray(codes, dtype=np.int64)
    group, _ = _group_ids(codes)
    order = np.argsort(group, kind="stable")                           # groups, ids ascending
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(order)) - first
    return np.concatenate([codes, rank[:, None]], axis=1)


@dataclass(frozen=True)
class CodebookHealth:
    """How well semantic IDs use their codebooks (computed before deduplication).

    Attributes:
        n_items: Items coded.
        codebook_size: Codes per level ``K``.
        utilisation: Per level, the share of the ``K`` codes used by at least one item.
        entropy_bits: Per level, the entropy of the code distribution over items, in bits.
        normalised_entropy: ``entropy_bits / log2(K)`` per level (1 = perfectly even).
        collision_rate: Share of items whose full code an earlier item already has, i.e.
            that need a non-zero dedup code: ``1 - distinct codes / n_items``.
        colliding_items: Share of items that share their full code with any other item.
        max_prefix_items: For prefix lengths ``1..L``, the most items sharing one prefix;
            the last entry is the largest collision group (the dedup level's size).
    """

    n_items: int
    codebook_size: int
    utilisation: list[float]
    entropy_bits: list[float]
    normalised_entropy: list[float]
    collision_rate: float
    colliding_items: float
    max_prefix_items: list[int]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def min_utilisation(self) -> float:
        """Lowest per-level utilisation."""
        return min(self.utilisation, default=0.0)

    def format(self) -> str:
        """One human-readable line per level, then the collision summary."""
        lines = [f"level {i + 1}: {u:.1%} of {self.codebook_size} codes used, entropy "
                 f"{h:.2f} bits ({nh:.1%} of max), max {m} items share a prefix"
                 for i, (u, h, nh, m) in enumerate(zip(
                     self.utilisation, self.entropy_bits, self.normalised_entropy,
                     self.max_prefix_items, strict=True))]
        lines.append(f"collisions before dedup: {self.collision_rate:.2%} of items need a dedup "
                     f"code ({self.colliding_items:.2%} share their code); largest group "
                     f"{self.max_prefix_items[-1] if self.max_prefix_items else 0}")
        return "\n".join(lines)


def codebook_health(codes: np.ndarray, codebook_size: int) -> CodebookHealth:
    """Codebook-health report of codes ``(n, L)`` before deduplication.

    Args:
        codes: Codes in ``0..codebook_size-1``, one row per item.
        codebook_size: Codes per level ``K``.

    Returns:
        The report (see :class:`CodebookHealth`).
    """
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    util, ent, nent, max_prefix = [], [], [], []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / max(n, 1)
        h = float(-(p * np.log2(p)).sum())
        util.append(float((counts > 0).sum() / codebook_size))
        ent.append(h)
        nent.append(h / float(np.log2(codebook_size)))
        _, sizes = _group_ids(codes[:, : level + 1])
        max_prefix.append(int(sizes.max(initial=0)))
    _, sizes = _group_ids(codes)
    collision = 1.0 - len(sizes) / n if n else 0.0
    colliding = float(sizes[sizes > 1].sum() / n) if n else 0.0
    return CodebookHealth(n, codebook_size, util, ent, nent, float(collision), colliding,
                          max_prefix)
