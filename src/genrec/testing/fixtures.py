"""Tiny deterministic datasets for tests: small enough to check by hand.

:func:`tiny_dataset` is the 7-user, 10-item fixture every model test runs on. Its rows are
listed in user order and every id first appears in index order, so raw ``"u3"`` is dense
user 3 and raw ``"i7"`` is dense item 7. Dense histories, oldest first:

====  ===============
user  items
====  ===============
u0    0 1 2 3
u1    1 2 4 5
u2    0 2 6
u3    3 4 7 8
u4    1 5 8 9
u5    0 1 2 9 7
u6    6 4            (only two events: stays in train under leave-one-out)
====  ===============

Item counts: ``[3, 4, 4, 2, 3, 2, 2, 2, 2, 2]`` (26 interactions). Timestamps are
``1000 + 10 * position + user``: distinct, and interleaved across users so a global time
cut-off splits every user. Ratings are ``1 + (user + 2 * position) % 5``.

:func:`random_dataset` builds larger random datasets for property tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from genrec.data.interactions import Dataset

__all__ = ["TINY_HISTORIES", "TINY_ITEM_COUNTS", "crashing", "tiny_frame", "tiny_dataset",
           "random_dataset"]

TINY_HISTORIES: list[list[int]] = [
    [0, 1, 2, 3],
    [1, 2, 4, 5],
    [0, 2, 6],
    [3, 4, 7, 8],
    [1, 5, 8, 9],
    [0, 1, 2, 9, 7],
    [6, 4],
]
"""Dense item ids per dense user of :func:`tiny_dataset`, oldest first."""

TINY_ITEM_COUNTS: list[int] = [3, 4, 4, 2, 3, 2, 2, 2, 2, 2]
"""Interactions per dense item of :func:`tiny_dataset`."""


def tiny_frame(*, timestamps: bool = True, ratings: bool = True) -> pl.DataFrame:
    """The raw interaction table of :func:`tiny_dataset` (raw ids ``"u<k>"``, ``"i<k>"``).

    Args:
        timestamps: Include the ``timestamp`` column (without it the data is position-only).
        ratings: Include the ``rating`` column.

    Returns:
        One row per event, in user order then time order.

    """
    users, items, times, rates = [], [], [], []
    for u, hist in enumerate(TINY_HISTORIES):
        for pos, i in enumerate(hist):
            users.append(f"u{u}")
            items.append(f"i{i}")
            times.append(1000 + 10 * pos + u)
            rates.append(float(1 + (u + 2 * pos) % 5))
    cols: dict[str, list[object]] = {"user": users, "item": items}  # type: ignore[dict-item]
    if timestamps:
        cols["timestamp"] = times  # type: ignore[assignment]
    if ratings:
        cols["rating"] = rates  # type: ignore[assignment]
    return pl.DataFrame(cols)


def tiny_dataset(*, timestamps: bool = True, ratings: bool = True) -> Dataset:
    """The 7-user, 10-item fixture described in the module docstring.

    Args:
        timestamps: Keep real timestamps (``order="timestamp"``); without them the dataset is
            position-only (``order="position"``).
        ratings: Keep the rating column.

    Returns:
        A dataset named ``"tiny"`` with an item feature table (``title``, ``category``).

    """
    items = pl.DataFrame({
        "item": [f"i{i}" for i in range(10)],
        "title": [f"Item {i}" for i in range(10)],
        "category": ["even" if i % 2 == 0 else "odd" for i in range(10)],
    })
    return Dataset.from_raw("tiny", tiny_frame(timestamps=timestamps, ratings=ratings), items)


def random_dataset(n_users: int = 40, n_items: int = 30, *, min_len: int = 1, max_len: int = 12,
                   seed: int = 0, name: str = "random") -> Dataset:
    """A random dataset in which every one of ``n_users`` users and ``n_items`` items occurs.

    Each user gets ``min_len..max_len`` distinct items (items never drawn are then given to
    random users, so a history can be slightly longer). Timestamps are distinct and random.
    Rows are written in user order and items are numbered by first appearance, so dense ids
    are a permutation of the drawn ones; use the returned dataset's ids, not the draw's.

    Args:
        n_users: Number of users.
        n_items: Number of items.
        min_len: Shortest drawn history.
        max_len: Longest drawn history (capped at ``n_items``).
        seed: Seed of the draw.
        name: Dataset name.

    Returns:
        The dataset (``order="timestamp"``), ratings in ``1..5``.

    """
    rng = np.random.default_rng(seed)
    hists = [list(rng.choice(n_items, rng.integers(min_len, min(max_len, n_items) + 1),
                             replace=False)) for _ in range(n_users)]
    seen = {i for h in hists for i in h}
    for i in range(n_items):
        if i not in seen:
            hists[int(rng.integers(n_users))].append(i)
    users = [f"u{u}" for u, h in enumerate(hists) for _ in h]
    items = [f"i{i}" for h in hists for i in h]
    n = len(items)
    frame = pl.DataFrame({
        "user": users, "item": items,
        "timestamp": (1_000_000 + rng.permutation(n)).astype(np.int64),
        "rating": rng.integers(1, 6, n).astype(np.float32),
    })
    return Dataset.from_raw(name, frame)


def crashing(validate: Callable[[Any], float], at_call: int) -> Callable[[Any], float]:
    """``validate`` that "kills the process" (raises ``KeyboardInterrupt``) on its
    ``at_call``-th call: for checking that training resumes from its last checkpoint."""
    calls = {"n": 0}

    def wrapped(model: Any) -> float:
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt("simulated crash")
        return validate(model)

    return wrapped
