"""Grounding and contradiction checks of explanations against item metadata and history.

An explanation of a recommended item makes claims of three kinds, each with one status:

* ``attribute`` ("a *Comedy* by *OPI*"): ``grounded`` when the item (or a history item the
  explanation cites) has that value; ``contradicted`` when the item has the attribute with
  other values, or the text negates a value the item has ("not a nail polish");
  ``unsupported`` when the item has no value for the attribute or is itself no catalogue
  item;
* ``item``, a cited item ("because you watched *Heat*"): ``grounded`` when it is in the
  user's history, ``outside_history`` when it is a real item the user never interacted
  with (naming one is an ungrounded claim: the user's history does not support it),
  ``hallucinated`` when it resolves to no catalogue item;
* ``price`` ("only $9.99"): ``grounded`` when it matches the item's price (or bounds it,
  "under $10"), ``contradicted`` when it does not, ``unsupported`` when the price is unknown.

:class:`GroundingChecker` finds claims in free text (:meth:`~GroundingChecker.check`: known
attribute values as whole words, titles of history items written out, distinctive titles of
any other catalogue item written out, quoted titles, negations, prices) or takes them
structured (:meth:`~GroundingChecker.check_claims`: any metadata column, cited items by id or
title). :func:`explanation_grounding` checks a batch and returns the rates of
:class:`~genrec.evaluation.risks.ClaimCounts`.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import unicodedata
import weakref
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
_TITLE_YEAR = re.compile(r"\((?:19|20)\d\d\)\s*$")
_ARTICLES = frozenset({"the", "a", "an"})
_NON_WORD = re.compile(r"[^\w]+")
_MIN_TITLE_CHARS = 8
_MAX_TITLE_REPEATS = 3
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


class _TitleIndex:
    """Distinctive catalogue titles, to find items named anywhere in free text.

    A phrase (normalised: see :func:`normalize_text`) maps to the items it names. Indexed:

    * a title with its year ("toy story 2 1999", from ``"Toy Story 2 (1999)"`` or from a
      ``year`` column), found whatever its case;
    * a title without its year when it has two words or more and eight characters or more
      besides articles ("toy story 2", "rain man"; not "cinderella", not "the rock"). It is
      found only when the words of four letters or more that the catalogue capitalises are
      capitalised in the text too: "Scary Movie" names a film, "a scary movie" and
      "die-hard fans" do not.

    Dropped: phrases that are attribute values ("nail magic" is a brand before it is a
    title) and phrases inside more than three distinct titles ("cuticle oil" names a kind
    of product, not one item). Finding costs one dictionary look-up per word and candidate
    phrase length: well under a millisecond per explanation for a 12k-item catalogue.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        years: dict[int, int] = {}
        if "year" in catalogue.items.columns:
            table = catalogue.items.filter(pl.col("item") < catalogue.n_items)
            years = {int(i): int(y) for i, y in zip(table["item"].to_list(),
                                                     table["year"].to_list(), strict=True)
                     if y is not None and 1800 < y < 2100}
        phrases: dict[str, set[int]] = {}
        self.dated: set[str] = set()
        self.caps: dict[str, set[tuple[bool, ...]]] = {}
        """Per undated phrase, the words a mention must capitalise (one mask per casing)."""
        for i, (title, key) in enumerate(zip(catalogue.titles, catalogue.title_keys,
                                             strict=True)):
            if not title:
                continue
            full = normalize_text(title)
            dated = {full} if _TITLE_YEAR.search(title) else set()
            if key and i in years:
                dated.add(f"{key} {years[i]}")
            self.dated |= dated
            bare = {t for t in {full, key} - dated if t and self._distinct(t)}
            cased = {w.casefold(): w for w in _words(title)}
            for t in bare:
                self.caps.setdefault(t, set()).add(tuple(
                    len(w) >= 4 and cased.get(w, "")[:1].isupper() for w in t.split()))
            for t in dated | bare:
                if len(t.split()) > 1:                   # a year alone names nothing
                    phrases.setdefault(t, set()).add(i)
        phrases = {p: ids for p, ids in phrases.items() if p not in catalogue.value_index}
        self.phrases: dict[str, tuple[int, ...]] = {}
        self._lengths: dict[str, list[int]] = {}
        self._rebuild(phrases)
        # A phrase inside many distinct titles is a generic name, not a title.
        repeats = dict.fromkeys(self.phrases, 0)
        for t in {normalize_text(t) for t in catalogue.titles if t}:
            for p in {p for _, _, p in self._scan(t.split(), overlapping=True)}:
                repeats[p] += 1
        self._rebuild({p: set(ids) for p, ids in self.phrases.items()
                       if repeats[p] <= _MAX_TITLE_REPEATS})

    @staticmethod
    def _distinct(phrase: str) -> bool:
        """Whether a title without a year is long enough to be no ordinary phrase."""
        core = [w for w in phrase.split() if w not in _ARTICLES]
        return len(core) > 1 and len(" ".join(core)) >= _MIN_TITLE_CHARS

    def _rebuild(self, phrases: dict[str, set[int]]) -> None:
        self.phrases = {p: tuple(sorted(ids)) for p, ids in phrases.items()}
        lengths: dict[str, set[int]] = {}
        for p in self.phrases:
            words = p.split()
            lengths.setdefault(words[0], set()).add(len(words))
        self._lengths = {w: sorted(n, reverse=True) for w, n in lengths.items()}

    def _scan(self, words: list[str], *, overlapping: bool = False
              ) -> list[tuple[int, int, str]]:
        """``(start, n_words, phrase)`` of the indexed phrases in ``words``: the longest at
        each word and no overlap, or every one with ``overlapping``."""
        found: list[tuple[int, int, str]] = []
        j = 0
        while j < len(words):
            step = 1
            for n in self._lengths.get(words[j], ()):
                if n > len(words) - j:
                    continue
                phrase = " ".join(words[j:j + n])
                if phrase in self.phrases:
                    found.append((j, n, phrase))
                    if not overlapping:
                        step = n
                        break
            j += step
        return found

    def find(self, text: str, norm: str) -> list[tuple[str, tuple[int, ...]]]:
        """Items named in ``text`` (``norm``: its :func:`normalize_text`), as the phrase
        found and the items it names, in text order."""
        words = norm.split()
        raw = _words(text)
        cased = len(raw) == len(words)          # else exotic case folding: ignore case
        return [(p, self.phrases[p]) for j, _, p in self._scan(words)
                if p in self.dated or not cased or any(
                    all(raw[j + k][:1].isupper() for k, need in enumerate(mask) if need)
                    for mask in self.caps.get(p, {()}))]


def _words(text: str) -> list[str]:
    """The words of ``text`` as :func:`normalize_text` splits them, case kept."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", html.unescape(text))).split()


_INDEXES: weakref.WeakKeyDictionary[Catalogue, _TitleIndex] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def _title_index(catalogue: Catalogue) -> _TitleIndex:
    """The title index of ``catalogue``, built once and shared by its checkers."""
    with _INDEX_LOCK:
        index = _INDEXES.get(catalogue)
        if index is None:
            index = _INDEXES[catalogue] = _TitleIndex(catalogue)
        return index


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
        self._titles = _title_index(catalogue)

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

        Items are found by title when the text quotes it, writes out the title of a history
        item (eight characters or more), or writes out a distinctive title of any other
        catalogue item (with its year, or of two words and eight characters or more with the
        catalogue's capitals), matched exactly after punctuation folding. Naming
        an item that is neither the explained one nor in the history is an
        ``outside_history`` claim. Limitations: a title the catalogue does not hold ("The
        Godfather" in a catalogue without it) cannot be told from ordinary prose unless
        quoted, so an unquoted invented title goes undetected; so do unquoted single-word or
        short titles without a year ("Cinderella", "Heat") of items outside the history, and
        a title that is also a common phrase written in title case is read as a citation.

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
        # Any other catalogue item written out by a distinctive title.
        for t, ids in self._titles.find(text, norm):
            if t in masks:
                continue
            masks.append(t)
            mine = [i for i in ids if i == item or i in hist]
            if item in mine:
                continue                      # the explained item itself
            if mine:
                cited.add(mine[0])
                claims.append(Claim("item", t, "grounded", item=mine[0], match="exact"))
            else:
                claims.append(Claim("item", t, "outside_history", item=ids[0], match="exact"))
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
