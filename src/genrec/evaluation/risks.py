"""Generative risks: every rate of what a generative model emits or explains, defined once.

Emitted entries (an LLM's ranked list, TIGER's beams, any list of ids or titles) are first
resolved against the catalogue (:meth:`genrec.evaluation.catalogue.Matcher.resolve`); each
entry then has exactly one status, checked in this order:

* ``hallucinated``: it resolves to no catalogue item;
* ``out_of_candidate``: it names a real item outside the candidates the model was offered;
* ``duplicate``: it names a valid item an earlier entry of the same list already named
  (compared by resolved item, so two spellings of one title are a duplicate);
* ``valid``: otherwise.

The statuses partition the entries, so the rates below add up (with the valid share) to 1.
Explanation claims are checked by :class:`genrec.evaluation.grounding.GroundingChecker` and
counted by :class:`ClaimCounts`. :data:`RATES` names and defines every rate; the LLM layer,
TIGER's decoding checks and the holistic report all compute them here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from genrec._arrays import member_of
from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import MATCH_KINDS, Catalogue, Resolved

__all__ = ["RATES", "ENTRY_STATUSES", "EntryStatus", "EntryCounts", "ClaimCounts",
           "entry_statuses", "hallucination_rate", "duplicate_rate", "AttributeConstraint",
           "Policy", "policy_violations", "history_membership", "share"]

_log = logging.getLogger(__name__)

EntryStatus = Literal["valid", "hallucinated", "out_of_candidate", "duplicate"]
ENTRY_STATUSES: tuple[str, ...] = ("valid", "hallucinated", "out_of_candidate", "duplicate")

RATES: dict[str, str] = {
    "hallucination_rate": "emitted entries that resolve to no catalogue item / all emitted "
                          "entries",
    "out_of_candidate_rate": "emitted entries that name a real item outside the candidates "
                             "the model was offered / all emitted entries",
    "invalid_rate": "hallucinated + out-of-candidate entries (names of no item the model may "
                    "emit) / all emitted entries",
    "duplicate_rate": "emitted entries that repeat a valid item named earlier in the same "
                      "list / all emitted entries",
    "policy_violation_rate": "emitted entries that break a policy rule (by default: an item "
                             "already in the user's history) / all emitted entries",
    "ungrounded_claim_rate": "explanation claims (attribute values, cited items, prices) that "
                             "the item's metadata and the user's history do not support / "
                             "all claims",
    "contradiction_rate": "explanation claims the metadata contradicts (another value of an "
                          "attribute the item has, a negated attribute it has, a wrong "
                          "price) / all claims",
    "hallucinated_citation_rate": "items an explanation cites that resolve to no catalogue "
                                  "item / all cited items",
    "outside_history_rate": "cited items that are real but not in the user's history / all "
                            "cited items",
}
"""Every generative-risk rate, by name: its one definition."""


def share(part: float, total: float) -> float:
    """``part / total``, 0 when there is nothing to count."""
    return float(part) / total if total else 0.0


def entry_statuses(resolved: Resolved) -> list[list[str]]:
    """The status of every emitted entry (see the module docstring), per output list."""
    out = []
    for items, offered in zip(resolved.items, resolved.offered, strict=True):
        seen: set[int] = set()
        row = []
        for item, ok in zip(items.tolist(), offered.tolist(), strict=True):
            if item < 0:
                row.append("hallucinated")
            elif not ok:
                row.append("out_of_candidate")
            elif item in seen:
                row.append("duplicate")
            else:
                seen.add(item)
                row.append("valid")
        out.append(row)
    return out


@dataclass
class _Counts:
    """Counts that add up field by field (dict fields key by key)."""

    def add(self, other: _Counts) -> None:
        """Add every count of ``other`` into ``self`` (``other`` may have fewer fields, e.g.
        :class:`EntryCounts` into a subclass of it)."""
        for k, v in asdict(other).items():
            if isinstance(v, dict):
                mine = getattr(self, k)
                for kk, vv in v.items():
                    mine[kk] = mine.get(kk, 0) + vv
            else:
                setattr(self, k, getattr(self, k) + v)


@dataclass
class EntryCounts(_Counts):
    """Emitted entries by status (summable over batches); :meth:`rates` gives the rates.

    Attributes:
        entries: Emitted entries.
        hallucinated: Entries naming no catalogue item.
        out_of_candidate: Entries naming a real item that was not offered.
        duplicates: Entries repeating a valid item of the same list.
        matched: Valid entries by match kind (``id``, ``exact``, ``normalized``, ...).
    """

    entries: int = 0
    hallucinated: int = 0
    out_of_candidate: int = 0
    duplicates: int = 0
    matched: dict[str, int] = field(default_factory=lambda: {k: 0 for k in MATCH_KINDS[:-1]})

    @classmethod
    def from_resolved(cls, resolved: Resolved,
                      statuses: list[list[str]] | None = None) -> EntryCounts:
        """Count the entries of ``resolved`` (``statuses``: from :func:`entry_statuses`)."""
        statuses = entry_statuses(resolved) if statuses is None else statuses
        c = cls()
        for kinds, row in zip(resolved.kinds, statuses, strict=True):
            c.entries += len(row)
            for k, s in zip(kinds, row, strict=True):
                if s == "hallucinated":
                    c.hallucinated += 1
                elif s == "out_of_candidate":
                    c.out_of_candidate += 1
                elif s == "duplicate":
                    c.duplicates += 1
                else:
                    c.matched[k] = c.matched.get(k, 0) + 1
        return c

    @property
    def invalid(self) -> int:
        """Hallucinated plus out-of-candidate entries."""
        return self.hallucinated + self.out_of_candidate

    def rates(self) -> dict[str, float]:
        """``hallucination_rate``, ``out_of_candidate_rate``, ``invalid_rate`` and
        ``duplicate_rate`` (see :data:`RATES`)."""
        n = self.entries
        return {"hallucination_rate": share(self.hallucinated, n),
                "out_of_candidate_rate": share(self.out_of_candidate, n),
                "invalid_rate": share(self.invalid, n),
                "duplicate_rate": share(self.duplicates, n)}


class _ClaimLike(Protocol):
    kind: str
    status: str


@dataclass
class ClaimCounts(_Counts):
    """Explanation claims by status (summable); :meth:`rates` gives the rates.

    Attributes:
        claims: All claims (attribute values, cited items, prices).
        ungrounded: Claims whose status is not ``grounded``.
        contradicted: Claims the metadata contradicts.
        citations: Cited items (claims of kind ``item``).
        hallucinated_citations: Cited items that are no catalogue item.
        outside_history: Cited items that are real but not in the user's history.
    """

    claims: int = 0
    ungrounded: int = 0
    contradicted: int = 0
    citations: int = 0
    hallucinated_citations: int = 0
    outside_history: int = 0

    @classmethod
    def of(cls, claims: Iterable[_ClaimLike]) -> ClaimCounts:
        """Count claims (anything with ``kind`` and ``status``, e.g. grounding claims)."""
        c = cls()
        for x in claims:
            c.claims += 1
            c.ungrounded += x.status != "grounded"
            c.contradicted += x.status == "contradicted"
            if x.kind == "item":
                c.citations += 1
                c.hallucinated_citations += x.status == "hallucinated"
                c.outside_history += x.status == "outside_history"
        return c

    def rates(self) -> dict[str, float]:
        """``ungrounded_claim_rate``, ``contradiction_rate``, ``hallucinated_citation_rate``
        and ``outside_history_rate`` (see :data:`RATES`)."""
        return {"ungrounded_claim_rate": share(self.ungrounded, self.claims),
                "contradiction_rate": share(self.contradicted, self.claims),
                "hallucinated_citation_rate": share(self.hallucinated_citations,
                                                    self.citations),
                "outside_history_rate": share(self.outside_history, self.citations)}


def hallucination_rate(resolved: Resolved) -> dict[str, Any]:
    """Hallucinated entries, where they are, and how the others matched.

    Args:
        resolved: Resolved outputs.

    Returns:
        ``rate`` (see :data:`RATES`), ``n`` (entries), ``by_kind`` (count of each match kind
        over all entries), ``per_output`` (rate of each list, NaN when empty) and
        ``hallucinated`` (``(output, position)`` of every such entry).
    """
    statuses = entry_statuses(resolved)
    by_kind = {k: 0 for k in MATCH_KINDS}
    for k in resolved.flat_kinds():
        by_kind[k] += 1
    where = [(o, p) for o, row in enumerate(statuses) for p, s in enumerate(row)
             if s == "hallucinated"]
    per_output = np.array([np.mean([s == "hallucinated" for s in row]) if row else np.nan
                           for row in statuses])
    counts = EntryCounts.from_resolved(resolved, statuses)
    return {"rate": counts.rates()["hallucination_rate"], "n": counts.entries,
            "by_kind": by_kind, "per_output": per_output, "hallucinated": where}


def duplicate_rate(resolved: Resolved) -> dict[str, Any]:
    """Duplicate entries (see :data:`RATES`), per list and overall.

    Args:
        resolved: Resolved outputs.

    Returns:
        ``rate``, ``per_output`` (per list, NaN when empty) and ``outputs_with_duplicates``
        (share of non-empty lists with a duplicate).
    """
    statuses = entry_statuses(resolved)
    per = np.array([np.mean([s == "duplicate" for s in row]) if row else np.nan
                    for row in statuses], dtype=np.float64)
    nonempty = ~np.isnan(per)
    return {"rate": EntryCounts.from_resolved(resolved, statuses).rates()["duplicate_rate"],
            "per_output": per,
            "outputs_with_duplicates": float(np.mean(per[nonempty] > 0))
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


def history_membership(items: list[np.ndarray], users: np.ndarray | None, histories: Histories
                       ) -> list[np.ndarray]:
    """For each output list, whether each entry is in that user's history.

    Args:
        items: Resolved item ids per output (``-1`` = unmatched, never in a history).
        users: Dense user id of each output; None when output ``i`` is history row ``i``
            (anonymous users, beams decoded for ``histories``).
        histories: Histories covering every user of ``users``.

    Returns:
        One boolean array per output.

    Raises:
        KeyError: If a user has no history row.
        ValueError: If ``users`` is None and the outputs and rows differ in number.
    """
    if users is None:
        if len(items) != len(histories):
            raise ValueError("history_membership: one history row per output is needed")
        rows = np.arange(len(histories), dtype=np.int64)
    else:
        row_of = np.full(int(max(histories.users.max(initial=-1),
                                 np.max(users, initial=-1))) + 2, -1, dtype=np.int64)
        known = histories.users >= 0
        row_of[histories.users[known]] = np.arange(len(histories))[known]
        users = np.asarray(users, dtype=np.int64)
        rows = np.where(users >= 0, row_of[users], -1)
        if np.any(rows < 0):
            raise KeyError(f"no history for users {users[rows < 0][:5].tolist()}")
    n = histories.n_items + 1
    hist_keys = np.repeat(np.arange(len(histories), dtype=np.int64), histories.lengths) * n \
        + histories.items
    lengths = [len(x) for x in items]
    flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    probe = np.repeat(rows, lengths) * n + np.where(flat >= 0, flat, n - 1)
    hit = member_of(probe, hist_keys) & (flat >= 0)
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
        users: Dense user id of each output (None: output ``i`` is history row ``i``).
        histories: Histories of those users (needed for ``exclude_seen``).

    Returns:
        ``rate`` (``policy_violation_rate`` of :data:`RATES`), ``by_rule`` (entries
        breaking each rule: ``blocked_item``, ``blocked_category``, ``seen``, and one key per
        constraint like ``year ge 1990``), ``outputs_with_violation`` (share of lists) and
        ``violations`` (``(output, position, rule)`` triples).

    Raises:
        ValueError: If ``exclude_seen`` is set but histories are missing, or a rule names a
            column the catalogue lacks.
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
        if histories is None:
            raise ValueError("exclude_seen needs the users' histories")
        seen = history_membership(resolved.items, users, histories)
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
