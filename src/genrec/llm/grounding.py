"""Grounding and contradiction checks of explanation text against item metadata and history.

A *claim* is an attribute value or an item title that the text mentions. A claim is grounded
when the explained item has that attribute, or when a history item that the text cites has
it; a cited title is grounded when it is the explained item or in the user's history. A
*contradiction* names another value of a single-valued field the item has (another brand),
negates an attribute the item has ("not a nail polish"), or misstates its price.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from genrec.llm.catalog import Attribute, ItemCatalog, normalize_text

__all__ = ["Claim", "GroundingChecker", "GroundingReport"]

_NEG = re.compile(r"\b(?:not|no|never|without|isn't|isnt|isn t|non)\s+(?:an?\s+|the\s+)?$")
_PRICE = re.compile(r"(?:under|below|less than|cheaper than|only|just|costs?|for|at)?\s*\$\s*"
                    r"(\d+(?:\.\d+)?)")
_STOP = {"the", "and", "for", "with", "new", "set", "kit", "one", "all", "men", "women", "kids",
         "face", "body", "hair", "eyes", "lips", "tools", "other"}


@dataclass(frozen=True)
class Claim:
    """One checkable statement of an explanation.

    Attributes:
        kind: ``attribute`` (names an attribute value), ``item`` (cites an item by title) or
            ``price`` (states a price).
        text: The mention as written (normalised).
        attribute: The attribute, for attribute claims.
        item: The cited item, for item claims.
        grounded: Whether the metadata or history supports it.
        contradiction: Whether the metadata says otherwise.
    """

    kind: Literal["attribute", "item", "price"]
    text: str
    attribute: Attribute | None = None
    item: int | None = None
    grounded: bool = True
    contradiction: bool = False


@dataclass
class GroundingReport:
    """The claims of one explanation and what the checks found.

    Attributes:
        claims: Every claim found.
        score: Grounded claims / claims (1.0 when there are none).
    """

    claims: list[Claim] = field(default_factory=list)

    @property
    def ungrounded(self) -> list[Claim]:
        """Claims with no support."""
        return [c for c in self.claims if not c.grounded]

    @property
    def contradictions(self) -> list[Claim]:
        """Claims the metadata contradicts."""
        return [c for c in self.claims if c.contradiction]

    @property
    def score(self) -> float:
        """Share of grounded claims."""
        return sum(c.grounded for c in self.claims) / len(self.claims) if self.claims else 1.0

    @property
    def ok(self) -> bool:
        """No ungrounded claim and no contradiction."""
        return not self.ungrounded and not self.contradictions

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return {"score": self.score, "ok": self.ok,
                "n_claims": len(self.claims), "n_ungrounded": len(self.ungrounded),
                "n_contradictions": len(self.contradictions),
                "claims": [{**asdict(c), "attribute": c.attribute.key if c.attribute else None}
                           for c in self.claims]}


class GroundingChecker:
    """Find claims in text and check them against the catalogue.

    Args:
        catalog: The catalogue.
        min_value_chars: Attribute values shorter than this are not searched for (too many
            false hits: ``"Men"``, ``"Eyes"``).
    """

    def __init__(self, catalog: ItemCatalog, *, min_value_chars: int = 4) -> None:
        self.catalog = catalog
        self._values = sorted(
            (v for v in catalog.value_index if len(v) >= min_value_chars and v not in _STOP),
            key=len, reverse=True)
        # One alternation, longest value first, so "nail polish remover" wins over "nail polish".
        self._pattern = re.compile(
            r"(?<![\w])(" + "|".join(re.escape(v) for v in self._values) + r")(?![\w])"
        ) if self._values else None

    def _mentions(self, norm: str) -> list[tuple[str, int]]:
        if self._pattern is None:
            return []
        return [(m.group(1), m.start()) for m in self._pattern.finditer(norm)]

    def check(self, text: str, item: int, history: Sequence[int]) -> GroundingReport:
        """Claims of ``text`` about ``item`` given the user's ``history``.

        Args:
            text: The explanation.
            item: The explained item.
            history: The user's history (dense ids).

        Returns:
            The report.
        """
        cat = self.catalog
        norm = normalize_text(text)
        hist = {int(h) for h in history}
        claims: list[Claim] = []
        # Items cited by title: the explained item or a history item.
        cited: set[int] = set()
        for h in hist | {item}:
            t = normalize_text(cat.titles[h]) if cat.titles[h] else ""
            if len(t) >= 8 and t in norm:
                cited.add(h)
                if h != item:
                    claims.append(Claim("item", t, item=h))
        for q in re.findall(r"[\"“']([^\"”']{8,200})[\"”']", text):
            hits = cat.by_title(q)
            if hits and not (set(hits) & (hist | {item})):
                claims.append(Claim("item", normalize_text(q), item=hits[0], grounded=False))
        own = set(cat.attributes[item])
        support = own.union(*(set(cat.attributes[h]) for h in cited - {item}))
        own_fields = {a.field for a in own}
        # Titles are quoted verbatim: words inside a cited title are not attribute claims.
        masked = norm
        for h in cited:
            t = normalize_text(cat.titles[h])
            masked = masked.replace(t, " " * len(t))
        for value, start in self._mentions(masked):
            attrs = cat.value_index[value]
            negated = bool(_NEG.search(norm[max(0, start - 24): start]))
            mine = [a for a in attrs if a in own]
            if negated:
                claims.append(Claim("attribute", value, (mine or attrs)[0], grounded=not mine,
                                    contradiction=bool(mine)))
                continue
            good = [a for a in attrs if a in support]
            if good:
                claims.append(Claim("attribute", value, good[0]))
                continue
            a = attrs[0]
            clash = a.field in cat.single_valued and a.field in own_fields
            claims.append(Claim("attribute", value, a, grounded=False, contradiction=clash))
        price = cat.price(item)
        for m in _PRICE.finditer(text.lower()):
            stated = float(m.group(1))
            ok = price is not None and (abs(stated - price) <= max(0.01 * price, 0.01)
                                        or ("under" in m.group(0) or "below" in m.group(0)
                                            or "less than" in m.group(0)) and price <= stated)
            claims.append(Claim("price", m.group(0).strip(), grounded=ok,
                                contradiction=price is not None and not ok))
        return GroundingReport(claims)
