"""Grounding and contradiction checks of explanations against item metadata and history.

An explanation of a recommended item makes claims of three kinds, each with one status:

* ``attribute`` ("a *Comedy* by *OPI*"): ``grounded`` when the item (or a history item the
  explanation cites) has that value; ``contradicted`` when the item has the attribute with
  other values, or the text negates a value the item has ("not a nail polish");
  ``unsupported`` when the item has no value for the attribute or is itself no catalogue
  item;
* ``item``, a cited item ("because you watched *Heat*"): ``grounded`` when it is in the
  user's history, ``outside_history`` when it is a real item the user never interacted
  with, ``hallucinated`` when it resolves to no catalogue item;
* ``price`` ("only $9.99"): ``grounded`` when it matches the item's price (or bounds it,
  "under $10"), ``contradicted`` when it does not, ``unsupported`` when the price is unknown.

:class:`GroundingChecker` finds claims in free text (:meth:`~GroundingChecker.check`: known
attribute values as whole words, titles of history items written out, quoted titles,
negations, prices) or takes them structured (:meth:`~GroundingChecker.check_claims`: any
metadata column, cited items by id or title). :func:`explanation_grounding` checks a batch
and returns the rates of :class:`~genrec.evaluation.risks.ClaimCounts`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Attribute, Catalogue, Matcher, normalize_text
from genrec.evaluation.risks import ClaimCounts

__all__ = ["CLAIM_STATUSES", "Claim", "Explanation", "GroundingChecker", "GroundingReport",
           "explanation_grounding"]

_log = logging.getLogger(__name__)

ClaimKind = Literal["attribute", "item", "price"]
ClaimStatus = Literal["grounded", "contradicted", "unsupported", "outside_history",
                      "hallucinated"]
CLAIM_STATUSES: tuple[str, ...] = ("grounded", "contradicted", "unsupported",
                                   "outside_history", "hallucinated")

_NEG = re.compile(r"\b(?:not|no|never|without|isn t|isnt|non)\s+(?:an?\s+|the\s+)?$")
_PRICE = re.compile(r"(?:under|below|less than|cheaper than|only|just|costs?|for|at)?\s*\$\s*"
                    r"(\d+(?:\.\d+)?)")
_QUOTED = re.compile(r"[\"“”«»]([^\"“”«»]{2,200})[\"“”«»]|(?<!\w)'([^']{2,200})'(?!\w)")
_STOP = {"the", "and", "for", "with", "new", "set", "kit", "one", "all", "men", "women", "kids",
         "face", "body", "hair", "eyes", "lips", "tools", "other"}


@dataclass(frozen=True)
class Claim:
    """One checkable statement of an explanation.

    Attributes:
        kind: ``attribute``, ``item`` (a cited item) or ``price``.
        text: The mention as written (normalised) or the claimed value.
        status: What the checks found (see the module docstring).
        attribute: The claimed attribute, for attribute claims.
        item: The cited item, for item claims (None when it is no catalogue item).
        match: How a cited item was matched (see :data:`~genrec.evaluation.catalogue.MATCH_KINDS`).
    """

    kind: ClaimKind
    text: str
    status: ClaimStatus
    attribute: Attribute | None = None
    item: int | None = None
    match: str | None = None

    @property
    def grounded(self) -> bool:
        """Whether the metadata or history supports it."""
        return self.status == "grounded"

    @property
    def contradiction(self) -> bool:
        """Whether the metadata says otherwise."""
        return self.status == "contradicted"


@dataclass
class GroundingReport:
    """The claims of one explanation and what the checks found."""

    claims: list[Claim] = field(default_factory=list)

    @property
    def ungrounded(self) -> list[Claim]:
        """Claims with no support (any status but ``grounded``)."""
        return [c for c in self.claims if not c.grounded]

    @property
    def contradictions(self) -> list[Claim]:
        """Claims the metadata contradicts."""
        return [c for c in self.claims if c.contradiction]

    @property
    def score(self) -> float:
        """Share of grounded claims (1.0 when there are none)."""
        return sum(c.grounded for c in self.claims) / len(self.claims) if self.claims else 1.0

    @property
    def ok(self) -> bool:
        """No ungrounded claim (contradictions included)."""
        return not self.ungrounded

    def counts(self) -> ClaimCounts:
        """The claims counted by status (the rates' one definition)."""
        return ClaimCounts.of(self.claims)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return {"score": self.score, "ok": self.ok,
                "n_claims": len(self.claims), "n_ungrounded": len(self.ungrounded),
                "n_contradictions": len(self.contradictions),
                "claims": [{**asdict(c), "attribute": c.attribute.key if c.attribute else None}
                           for c in self.claims]}


def _attribute_status(has_value: bool, has_field: bool) -> ClaimStatus:
    """The one rule of attribute claims: the value, another value, or no value at all."""
    return "grounded" if has_value else "contradicted" if has_field else "unsupported"


def _values(v: Any) -> list[Any]:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    return list(v) if isinstance(v, (list, tuple, set, np.ndarray, pl.Series)) else [v]


def _same(claimed: Any, actual: Any) -> bool:
    """Case- and punctuation-insensitive equality; numbers within 1e-6 relative."""
    try:
        return bool(np.isclose(float(claimed), float(actual), rtol=1e-6, atol=1e-9))
    except (TypeError, ValueError):
        return normalize_text(str(claimed)) == normalize_text(str(actual))


class GroundingChecker:
    """Find claims of explanations and check them against the catalogue and history.

    Args:
        catalogue: The catalogue.
        matcher: Resolves cited titles (default: exact, normalised and fuzzy matching).
        min_value_chars: Attribute values shorter than this are not searched for in free
            text (too many false hits: ``"Men"``, ``"War"``).
    """

    def __init__(self, catalogue: Catalogue, matcher: Matcher | None = None, *,
                 min_value_chars: int = 4) -> None:
        self.catalogue = catalogue
        self.matcher = matcher or Matcher(catalogue)
        values = sorted((v for v in catalogue.value_index
                         if len(v) >= min_value_chars and v not in _STOP), key=len, reverse=True)
        # One alternation, longest value first, so "nail polish remover" wins over "nail polish".
        self._pattern = re.compile(
            r"(?<![\w])(" + "|".join(re.escape(v) for v in values) + r")(?![\w])"
        ) if values else None

    def _cite(self, text: str, cited: Any, item: int, hist: set[int]) -> Claim | None:
        """A citation claim (None when it names the explained item itself)."""
        # Several items may share a title ("Sabrina", 1954 and 1995): prefer the user's.
        m = self.matcher.match([cited], sorted(hist | {item}))[0]
        if m.item < 0 or not m.offered:
            m = self.matcher.match([cited])[0]
        if m.item >= 0 and m.item == item:
            return None
        status: ClaimStatus = ("hallucinated" if m.item < 0 else
                               "grounded" if m.item in hist else "outside_history")
        return Claim("item", text, status, item=m.item if m.item >= 0 else None, match=m.kind)

    def check(self, text: str, item: int, history: Sequence[int]) -> GroundingReport:
        """Claims of free ``text`` about ``item`` given the user's ``history``.

        Args:
            text: The explanation.
            item: The explained item (dense id; -1 when it is no catalogue item).
            history: The user's history (dense ids).

        Returns:
            The report.
        """
        cat = self.catalogue
        norm = normalize_text(text)
        known = 0 <= item < cat.n_items
        hist = {int(h) for h in history if 0 <= h < cat.n_items}
        claims: list[Claim] = []
        cited: set[int] = set()
        masks: list[str] = []
        # History items (and the item itself) written out by title.
        for h in sorted(hist | ({item} if known else set())):
            t = normalize_text(cat.titles[h]) if cat.titles[h] else ""
            if len(t) >= 8 and f" {t} " in f" {norm} ":
                cited.add(h)
                masks.append(t)
                if h != item:
                    claims.append(Claim("item", t, "grounded", item=h, match="exact"))
        # Quoted spans are citations of items.
        for a, b in _QUOTED.findall(text):
            q = normalize_text(a or b)
            if not q:
                continue
            masks.append(q)
            if q in masks[:-1]:
                continue                      # already cited by its title
            claim = self._cite(q, a or b, item, hist)
            if claim is not None:
                claims.append(claim)
                if claim.grounded and claim.item is not None:
                    cited.add(claim.item)
        own = set(cat.attributes[item]) if known else set()
        support = own.union(*(set(cat.attributes[h]) for h in cited - {item}))
        own_fields = {a.field for a in own}
        # Words inside a cited title are not attribute claims.
        masked = f" {norm} "
        for t in sorted(masks, key=len, reverse=True):
            masked = masked.replace(f" {t} ", " " * (len(t) + 2))
        masked = masked[1:-1]
        for m in self._pattern.finditer(masked) if self._pattern is not None else ():
            value, start = m.group(1), m.start()
            attrs = cat.value_index[value]
            mine = [a for a in attrs if a in own]
            if _NEG.search(norm[max(0, start - 24): start]):
                claims.append(Claim("attribute", value, "contradicted" if mine else "grounded",
                                    (mine or attrs)[0]))
                continue
            good = [a for a in attrs if a in support]
            a = good[0] if good else next((x for x in attrs if x.field in own_fields), attrs[0])
            claims.append(Claim("attribute", value,
                                _attribute_status(bool(good), a.field in own_fields), a))
        price = cat.price(item) if known else None
        for m in _PRICE.finditer(text.lower()):
            stated, said = float(m.group(1)), m.group(0)
            if price is None:
                status: ClaimStatus = "unsupported"
            else:
                bound = any(w in said for w in ("under", "below", "less than"))
                ok = abs(stated - price) <= max(0.01 * price, 0.01) or bound and price <= stated
                status = "grounded" if ok else "contradicted"
            claims.append(Claim("price", said.strip(), status))
        return GroundingReport(claims)

    def check_claims(self, item: int, history: Sequence[int],
                     attributes: dict[str, Any] | None = None,
                     cited: Sequence[int | str] = ()) -> GroundingReport:
        """Check structured claims: metadata values and cited items.

        Args:
            item: The explained item (dense id; -1 when it is no catalogue item).
            history: The user's history (dense ids).
            attributes: Metadata column -> claimed value or list of values (any column:
                ``genres``, ``year``, ``director``, ...).
            cited: History items the explanation cites (ids or titles).

        Returns:
            The report.
        """
        hist = {int(h) for h in history}
        row = self.catalogue.row(item) if item >= 0 else None
        claims: list[Claim] = []
        for col, value in (attributes or {}).items():
            actual = _values(row.get(col)) if row is not None else []
            for v in _values(value):
                status = _attribute_status(any(_same(v, a) for a in actual), bool(actual))
                claims.append(Claim("attribute", str(v), status, Attribute(col, str(v))))
        for c in cited:
            claim = self._cite(str(c), c, item, hist)
            if claim is not None:
                claims.append(claim)
        return GroundingReport(claims)


class Explanation(BaseModel):
    """One explanation of one recommended item for one user, to check in a batch."""

    model_config = ConfigDict(extra="forbid")

    user: int
    """Dense user id."""
    item: int | str
    """The recommended item: a dense id, raw id or title."""
    attributes: dict[str, Any] = Field(default_factory=dict)
    """Attribute claims: metadata column -> value or list of values."""
    cited: list[int | str] = Field(default_factory=list)
    """History items the explanation cites (ids or titles)."""
    text: str | None = None
    """Free text; checked when ``attributes`` and ``cited`` are both empty."""


_CLAIM_SCHEMA = {"explanation": pl.Int64, "user": pl.Int64, "item": pl.Int64,
                 "kind": pl.String, "field": pl.String, "claimed": pl.String,
                 "cited_item": pl.Int64, "match": pl.String, "status": pl.String}


def explanation_grounding(explanations: Sequence[Explanation], checker: GroundingChecker,
                          histories: Histories) -> dict[str, Any]:
    """Check every claim of every explanation against metadata and history.

    Args:
        explanations: The explanations.
        checker: The checker (its matcher also resolves items given as titles).
        histories: Histories of the explained users.

    Returns:
        The rates of :meth:`ClaimCounts.rates` (``ungrounded_claim_rate``,
        ``contradiction_rate``, ``hallucinated_citation_rate``, ``outside_history_rate``),
        ``n_claims``, ``n_citations`` and ``claims``: a table with one row per claim
        (explanation, user, item, kind, field, claimed, cited_item, match, status).

    Raises:
        KeyError: If a user has no history row.
    """
    row_of = {int(u): r for r, u in enumerate(histories.users)}
    items = checker.matcher.resolve([[e.item] for e in explanations]).flat_items()
    counts = ClaimCounts()
    rows: list[dict[str, Any]] = []
    for k, (e, item) in enumerate(zip(explanations, items.tolist(), strict=True)):
        if e.user not in row_of:
            raise KeyError(f"no history for user {e.user}")
        r = row_of[e.user]
        hist = histories.items[histories.indptr[r]:histories.indptr[r + 1]].tolist()
        rep = (checker.check(e.text, item, hist) if e.text and not (e.attributes or e.cited)
               else checker.check_claims(item, hist, e.attributes, e.cited))
        counts.add(rep.counts())
        rows += [{"explanation": k, "user": e.user, "item": item, "kind": c.kind,
                  "field": c.attribute.field if c.attribute else None, "claimed": c.text,
                  "cited_item": c.item, "match": c.match, "status": c.status}
                 for c in rep.claims]
    return {**counts.rates(), "n_claims": counts.claims, "n_citations": counts.citations,
            "claims": pl.DataFrame(rows, schema=_CLAIM_SCHEMA)}
