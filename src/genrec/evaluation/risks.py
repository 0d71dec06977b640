"""Generative risks of recommendation outputs: hallucination, duplicates, policy violations.

Outputs are first resolved against a :class:`~genrec.evaluation.catalogue.Catalogue`
(``catalogue.resolve(outputs)``); every function here takes that :class:`Resolved` value.
Explanation grounding and contradictions live in :mod:`genrec.evaluation.grounding`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import MATCH_KINDS, Catalogue, Resolved

__all__ = ["hallucination_rate", "duplicate_rate", "AttributeConstraint", "Policy",
           "policy_violations", "history_membership"]

_log = logging.getLogger(__name__)


def hallucination_rate(resolved: Resolved) -> dict[str, Any]:
    """Share of emitted items that match no catalogue item, and how the rest matched.

    Args:
        resolved: Resolved outputs.

    Returns:
        ``rate`` (hallucinated entries / all entries), ``n`` (entries), ``by_kind`` (count of
        each match kind), ``per_output`` (hallucination rate of each list, NaN when empty)
        and ``hallucinated`` (``(output, position)`` of every unmatched entry).
    """
    kinds = resolved.flat_kinds()
    by_kind = {k: 0 for k in MATCH_KINDS}
    for k in kinds:
        by_kind[k] += 1
    per_output = np.array([np.mean(row < 0) if len(row) else np.nan for row in resolved.items])
    where = [(o, p) for o, row in enumerate(resolved.items) for p in np.flatnonzero(row < 0)]
    return {"rate": by_kind["none"] / len(kinds) if kinds else 0.0, "n": len(kinds),
            "by_kind": by_kind, "per_output": per_output,
            "hallucinated": [(int(o), int(p)) for o, p in where]}


def duplicate_rate(resolved: Resolved) -> dict[str, Any]:
    """Share of entries repeating an earlier entry of the same list.

    Entries are compared by item id once resolved (two different titles of one movie are a
    duplicate), and by normalised text when unmatched.

    Args:
        resolved: Resolved outputs.

    Returns:
        ``rate`` (repeats / all entries), ``per_output`` (per list, NaN when empty),
        ``outputs_with_duplicates`` (share of non-empty lists with a repeat).
    """
    repeats = []
    per = []
    for keys in resolved.keys:
        r = len(keys) - len(set(keys))
        repeats.append(r)
        per.append(r / len(keys) if keys else np.nan)
    total = sum(len(k) for k in resolved.keys)
    per_arr = np.array(per, dtype=np.float64)
    nonempty = ~np.isnan(per_arr)
    return {"rate": sum(repeats) / total if total else 0.0, "per_output": per_arr,
            "outputs_with_duplicates": float(np.mean(per_arr[nonempty] > 0))
            if nonempty.any() else 0.0}


class AttributeConstraint(BaseModel):
    """A rule every recommended item must satisfy, on one metadata column.

    Examples: ``{attribute: year, op: ge, value: 1990}``,
    ``{attribute: genres, op: not_contains, value: Horror}``,
    ``{attribute: brand, op: in, value: [OPI, Essie]}``.
    """

    model_config = ConfigDict(extra="forbid")

    attribute: str
    """Item metadata column."""
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains",
                "not_contains"]
    """Comparison; ``contains`` / ``not_contains`` test membership in a list column."""
    value: Any
    """Right-hand side (a list for ``in`` / ``not_in``)."""
    missing_ok: bool = False
    """Whether an item without a value for the attribute passes."""

    def expression(self) -> pl.Expr:
        """Polars expression: true where an item satisfies the rule."""
        c = pl.col(self.attribute)
        v = self.value
        match self.op:
            case "eq":
                e = c == v
            case "ne":
                e = c != v
            case "lt":
                e = c < v
            case "le":
                e = c <= v
            case "gt":
                e = c > v
            case "ge":
                e = c >= v
            case "in":
                e = c.is_in(list(v))
            case "not_in":
                e = ~c.is_in(list(v))
            case "contains":
                e = c.list.contains(v)
            case "not_contains":
                e = ~c.list.contains(v)
        return e.fill_null(self.missing_ok)


class Policy(BaseModel):
    """What a recommendation may not contain."""

    model_config = ConfigDict(extra="forbid")

    blocked_items: list[int] = Field(default_factory=list)
    """Dense ids of items that may never be recommended."""
    blocked_categories: list[str] = Field(default_factory=list)
    """Categories (or genres) whose items may never be recommended."""
    category_column: str | None = None
    """Column holding categories; by default ``categories``, else ``genres``."""
    exclude_seen: bool = True
    """Items already in the user's history are violations."""
    constraints: list[AttributeConstraint] = Field(default_factory=list)
    """Rules on item attributes."""


def history_membership(items: list[np.ndarray], users: np.ndarray, histories: Histories
                       ) -> list[np.ndarray]:
    """For each output list, whether each entry is in that user's history.

    Args:
        items: Resolved item ids per output (``-1`` = unmatched, never in a history).
        users: Dense user id of each output.
        histories: Histories covering every user of ``users``.

    Returns:
        One boolean array per output.

    Raises:
        KeyError: If a user has no history row.
    """
    row_of = np.full(int(max(histories.users.max(initial=-1), np.max(users, initial=-1))) + 1,
                     -1, dtype=np.int64)
    row_of[histories.users] = np.arange(len(histories))
    rows = row_of[np.asarray(users, dtype=np.int64)]
    if np.any(rows < 0):
        raise KeyError(f"no history for users {np.asarray(users)[rows < 0][:5].tolist()}")
    n = histories.n_items + 1
    hist_keys = np.repeat(np.arange(len(histories), dtype=np.int64), histories.lengths) * n \
        + histories.items
    lengths = [len(x) for x in items]
    flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    probe = np.repeat(rows, lengths) * n + np.where(flat >= 0, flat, n - 1)
    hit = np.isin(probe, hist_keys) & (flat >= 0)
    return np.split(hit, np.cumsum(lengths)[:-1]) if items else []


def _category_column(catalogue: Catalogue, policy: Policy) -> str | None:
    if policy.category_column is not None:
        return policy.category_column
    for c in ("categories", "genres"):
        if c in catalogue.items.columns:
            return c
    return None


def policy_violations(resolved: Resolved, catalogue: Catalogue, policy: Policy, *,
                      users: np.ndarray | None = None, histories: Histories | None = None
                      ) -> dict[str, Any]:
    """Check every resolved entry against a policy.

    Rules are evaluated once per catalogue item (vectorised with polars) and then looked up
    for each entry. Unmatched (hallucinated) entries violate nothing here: they are counted
    by :func:`hallucination_rate`.

    Args:
        resolved: Resolved outputs.
        catalogue: The catalogue with item metadata.
        policy: The rules.
        users: Dense user id of each output (needed for ``exclude_seen``).
        histories: Histories of those users (needed for ``exclude_seen``).

    Returns:
        ``rate`` (entries breaking at least one rule / all entries), ``by_rule`` (entries
        breaking each rule: ``blocked_item``, ``blocked_category``, ``seen``, and one key per
        constraint like ``year ge 1990``), ``outputs_with_violation`` (share of lists) and
        ``violations`` (``(output, position, rule)`` triples).

    Raises:
        ValueError: If ``exclude_seen`` is set but users or histories are missing, or a rule
            names a column the catalogue lacks.
    """
    n = catalogue.n_items
    rules: dict[str, np.ndarray] = {}                                   # rule -> (n_items,) bad
    if policy.blocked_items:
        bad = np.zeros(n, dtype=bool)
        ids = np.asarray(policy.blocked_items, dtype=np.int64)
        bad[ids[(ids >= 0) & (ids < n)]] = True
        rules["blocked_item"] = bad
    table = catalogue.metadata(np.arange(n))
    if policy.blocked_categories:
        col = _category_column(catalogue, policy)
        if col is None or col not in table.columns:
            raise ValueError("blocked_categories needs a categories/genres column")
        c = table[col]
        blocked = policy.blocked_categories
        expr = (pl.col(col).list.eval(pl.element().is_in(blocked)).list.any()
                if isinstance(c.dtype, pl.List) else pl.col(col).is_in(blocked))
        rules["blocked_category"] = table.select(expr.fill_null(False))[:, 0].to_numpy()
    for cons in policy.constraints:
        if cons.attribute not in table.columns:
            raise ValueError(f"constraint on unknown attribute {cons.attribute!r}")
        ok = table.select(cons.expression())[:, 0].to_numpy().astype(bool)
        rules[f"{cons.attribute} {cons.op} {cons.value}"] = ~ok
    flat = resolved.flat_items()
    matched = flat >= 0
    safe = np.where(matched, flat, 0)
    per_rule = {name: bad[safe] & matched for name, bad in rules.items()}
    if policy.exclude_seen:
        if users is None or histories is None:
            raise ValueError("exclude_seen needs users and histories")
        seen = history_membership(resolved.items, np.asarray(users), histories)
        per_rule["seen"] = np.concatenate(seen) if seen else np.zeros(0, dtype=bool)
    any_bad = np.zeros(len(flat), dtype=bool)
    for v in per_rule.values():
        any_bad |= v
    lengths = [len(x) for x in resolved.items]
    out_idx = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum([0, *lengths[:-1]]), lengths) \
        if lengths else np.zeros(0, dtype=np.int64)
    violations = [(int(out_idx[i]), int(pos[i]), name)
                  for name, v in per_rule.items() for i in np.flatnonzero(v)]
    per_output = np.bincount(out_idx[any_bad], minlength=len(lengths)) > 0
    nonempty = np.array(lengths) > 0
    return {"rate": float(any_bad.mean()) if len(flat) else 0.0,
            "by_rule": {k: int(v.sum()) for k, v in per_rule.items()},
            "outputs_with_violation": float(per_output[nonempty].mean())
            if nonempty.any() else 0.0,
            "violations": sorted(violations)}
