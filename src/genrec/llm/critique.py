"""Turn a user utterance into preferences and critiques, without an LLM.

An utterance is split into clauses; a clause with a negation cue ("no", "not", "without",
"other than", ...) is negative. In each clause, attribute values of the catalogue are found
by exact phrase match (brands, categories, genres) and, failing that, by text-embedding
similarity against the attribute values (so "nail varnish" finds ``Nail Polish``). Items are
referred to by ordinal ("the second one") or by title among those just shown; prices by
"under $20", "cheaper", and so on.
"""

from __future__ import annotations

import html
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genrec.evaluation.catalogue import Attribute, Catalogue
from genrec.text.encoders import TextEncoder

__all__ = ["Critique", "CritiqueParser", "PhraseIndex"]

_CLAUSE = re.compile(r"[.;!?\n]+|,\s*(?:but|and|though)?\s*|\s+(?:but|however|though|although)\s+")
_NEG = re.compile(r"\b(?:no|not|nothing|none|without|avoid|except|exclude|dislike|hate|"
                  r"don'?t|doesn'?t|isn'?t|aren'?t|never|other than|instead of|rather than|"
                  r"less|fewer|stop|skip|enough)\b")
_ACCEPT = re.compile(r"\b(?:i'?ll take|i will take|perfect|that'?s it|that'?s the one|"
                     r"sounds great|i'?ll buy|accept|yes)\b")
_FILLER = re.compile(r"\b(?:i'?m|i am|i'?d|i would|i|like|love|want|wanted|prefer|looking|look|"
                     r"for|some|something|anything|any|maybe|please|show|me|do|you|have|got|"
                     r"the|a|an|more|instead|really|kind|of|from|by|one|ones|items?|"
                     r"products?|stuff)\b")
_ORD = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3,
        "4th": 3, "fifth": 4, "5th": 4, "sixth": 5, "seventh": 6, "eighth": 7, "ninth": 8,
        "tenth": 9}
_ORD_RE = re.compile(r"\b(" + "|".join(_ORD) + r"|last)\b(?:\s+(?:one|item|product|movie))?"
                     r"|(?:#|number\s+|no\.\s*)(\d{1,2})\b")
# An amount: "$1,299.99", "€10", "10 euros", "15" (thousands separators are commas).
_MONEY = (r"[$€£]?\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d|,\d)|\d+(?:\.\d+)?)\s*"
          r"(?:[$€£]|dollars?|usd|euros?|eur|pounds?|gbp)?")
# A negation right before the bound flips it: "not over $50" is an upper bound.
_BOUND_NEG = r"(?:\b(not|no|never)\s+)?"
_P_MAX = re.compile(_BOUND_NEG + r"\b(?:under|below|less than|at most|max(?:imum)?|no more than|"
                    r"up to|cheaper than)\s+" + _MONEY)
_P_MIN = re.compile(_BOUND_NEG + r"\b(?:over|above|more than|at least|min(?:imum)?|"
                    r"pricier than)\s+" + _MONEY)
_CHEAPER = re.compile(r"\b(?:cheaper|less expensive|too expensive|too pricey|budget|"
                      r"affordable|lower price)\b")
_PRICIER = re.compile(r"\b(?:pricier|more expensive|premium|high[- ]end|luxury|too cheap)\b")
_BRAND_CUE = re.compile(r"\b(?:brand|from|by|made by|maker)\b")
_STOP_VALUES = {"the", "and", "for", "new", "one", "all", "set", "kit", "yes", "not", "other",
                "more", "less", "like", "want", "something", "please", "instead", "anything"}


_TOKEN = re.compile(r"[\w']+")


def _clean(text: str) -> str:
    return unicodedata.normalize("NFKC", html.unescape(text)).replace("’", "'")


def _prep(text: str) -> str:
    return _clean(text).lower()


class PhraseIndex:
    """Find attribute values in text by greedy longest match over word n-grams.

    A dict look-up per n-gram: fast for thousands of values, where one big regex alternation
    costs milliseconds per sentence. Values of fewer than ``min_chars`` characters (``"OPI"``,
    ``"Re"``) match only where written with a capital letter, so "you're" never finds "Re".

    Args:
        catalog: The catalogue whose attribute values to find.
        min_chars: See above.
        stop: Values never matched (too generic).
    """

    def __init__(self, catalog: Catalogue, *, min_chars: int = 4,
                 stop: frozenset[str] = frozenset()) -> None:
        self.min_chars = min_chars
        self.index: dict[tuple[str, ...], list[Attribute]] = {}
        for a in catalog.vocab:
            toks = tuple(_TOKEN.findall(_prep(a.value)))
            if toks and " ".join(toks) not in stop and not (len(toks) == 1 and toks[0].isdigit()):
                self.index.setdefault(toks, []).append(a)
        self.max_len = max((len(k) for k in self.index), default=0)

    def find(self, text: str) -> list[tuple[int, int, list[Attribute]]]:
        """Non-overlapping ``(start, end, attributes)`` character spans, left to right.

        The spans index ``text`` itself, so pass text that is already normalised (HTML
        unescaped and NFKC, as :meth:`CritiqueParser.parse` does) to match every value.
        """
        raw = text.replace("’", "'")  # same length: the offsets still index ``text``
        words = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(raw)]
        toks = [w[2].lower() for w in words]
        out, i = [], 0
        while i < len(toks):
            for n in range(min(self.max_len, len(toks) - i), 0, -1):
                attrs = self.index.get(tuple(toks[i : i + n]))
                if attrs is None:
                    continue
                span = raw[words[i][0] : words[i + n - 1][1]]
                if len(span) < self.min_chars and span.islower():
                    continue
                out.append((words[i][0], words[i + n - 1][1], attrs))
                i += n
                break
            else:
                i += 1
        return out


@dataclass
class Critique:
    """What one utterance said.

    Attributes:
        like: Attributes the user wants.
        avoid: Attributes the user does not want.
        like_items: Items the user liked or referred to positively.
        avoid_items: Items the user rejected.
        price_max: Upper price bound, if stated.
        price_min: Lower price bound, if stated.
        accept: The user accepts (``like_items`` holds what, when known).
        matched: How each attribute was found: ``exact`` or ``embedding:<cosine>``.
    """

    like: list[Attribute] = field(default_factory=list)
    avoid: list[Attribute] = field(default_factory=list)
    like_items: list[int] = field(default_factory=list)
    avoid_items: list[int] = field(default_factory=list)
    price_max: float | None = None
    price_min: float | None = None
    accept: bool = False
    matched: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing understood."""
        return not (self.like or self.avoid or self.like_items or self.avoid_items
                    or self.price_max is not None or self.price_min is not None or self.accept)


class CritiqueParser:
    """Parse utterances against a catalogue's attributes.

    Args:
        catalog: The catalogue.
        encoder: Text encoder for paraphrases; exact matching only when None.
        embed_fields: Fields matched by embedding (names such as brands embed poorly).
        embed_threshold: Least cosine similarity of an embedding match.
        min_value_chars: Attribute values shorter than this match only where written with a
            capital letter (``"NYX"``, not the "re" of "you're").
    """

    def __init__(self, catalog: Catalogue, encoder: TextEncoder | None = None, *,
                 embed_fields: Sequence[str] = ("categories", "genres"),
                 embed_threshold: float = 0.6, min_value_chars: int = 4) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.embed_threshold = embed_threshold
        self.phrases = PhraseIndex(catalog, min_chars=min_value_chars,
                                   stop=frozenset(_STOP_VALUES))
        self._embed_attrs = [a for a in catalog.vocab if a.field in set(embed_fields)]
        self._embed_vecs: np.ndarray | None = None
        self.encoder_s = 0.0
        """Seconds spent in the text encoder so far (reported apart from genrec's overhead)."""

    def _vecs(self) -> np.ndarray:
        if self._embed_vecs is None:
            assert self.encoder is not None
            t0 = time.perf_counter()
            self._embed_vecs = self.encoder([a.value for a in self._embed_attrs])
            self.encoder_s += time.perf_counter() - t0
        return self._embed_vecs

    def warmup(self) -> CritiqueParser:
        """Encode the attribute values now rather than on the first paraphrase."""
        if self.encoder is not None and self._embed_attrs:
            self._vecs()
        return self

    @staticmethod
    def _disambiguate(attrs: list[Attribute], clause: str) -> list[Attribute]:
        """A value that is both a brand and a category is the brand only after "from"/"by"."""
        by_value: dict[str, list[Attribute]] = {}
        for a in attrs:
            by_value.setdefault(a.value.lower(), []).append(a)
        brand_cue = bool(_BRAND_CUE.search(clause.lower()))
        out = []
        for group in by_value.values():
            if len(group) > 1:
                brands = [a for a in group if a.field == "brand"]
                rest = [a for a in group if a.field != "brand"]
                group = brands if brand_cue and brands else rest or brands
            out.extend(group)
        return out

    def _embedded(self, clause: str) -> tuple[Attribute, float] | None:
        if self.encoder is None or not self._embed_attrs:
            return None
        core = _SPACES.sub(" ", _FILLER.sub(" ", _NEG.sub(" ", clause))).strip()
        if len(core) < 3:
            return None
        t0 = time.perf_counter()
        sims = self._vecs() @ self.encoder([core])[0]                 # (n_attrs,)
        self.encoder_s += time.perf_counter() - t0
        j = int(np.argmax(sims))
        return (self._embed_attrs[j], float(sims[j])) if sims[j] >= self.embed_threshold else None

    @staticmethod
    def _ordinals(clause: str, shown: Sequence[int]) -> list[int]:
        out = []
        for m in _ORD_RE.finditer(clause.lower()):
            if m.group(1) == "last":
                idx = len(shown) - 1
            elif m.group(1):
                idx = _ORD[m.group(1)]
            else:
                idx = int(m.group(2)) - 1
            if 0 <= idx < len(shown):
                out.append(int(shown[idx]))
        return out

    def _prices(self, text: str, shown: Sequence[int], c: Critique) -> None:
        low = text.lower()
        # The first bound of each direction wins; a negated bound counts for the other one.
        bounds = [(m.start(), is_max != bool(m.group(1)), float(m.group(2).replace(",", "")))
                  for regex, is_max in ((_P_MAX, True), (_P_MIN, False))
                  for m in regex.finditer(low)]
        for _, upper, value in sorted(bounds, key=lambda b: b[0]):
            if upper and c.price_max is None:
                c.price_max = value
            elif not upper and c.price_min is None:
                c.price_min = value
        prices = [p for i in shown if (p := self.catalog.price(int(i))) is not None]
        if prices and c.price_max is None and _CHEAPER.search(low):
            c.price_max = round(0.9 * float(np.median(prices)), 2)
        if prices and c.price_min is None and _PRICIER.search(low):
            c.price_min = round(1.1 * float(np.median(prices)), 2)

    def parse(self, utterance: str, shown: Sequence[int] = ()) -> Critique:
        """Parse one utterance.

        Attribute values and titles of shown items are found in the whole utterance first
        (so "Loofahs, Sponges & Poufs" or "e.l.f. Cosmetics" survive clause splitting), then
        masked, and each lands in the clause that holds it; the clause gives the polarity.

        Args:
            utterance: What the user said.
            shown: Items of the last reply, in order (for "the second one").

        Returns:
            The critique.
        """
        c = Critique()
        # Normalised once, here: phrase finding and masking then share one set of offsets, and
        # "ＯＰＩ" or a decomposed "é" meet the NFKC-normalised catalogue values.
        text = _clean(utterance).strip()
        if not text:
            return c
        low = text.lower()
        c.accept = bool(_ACCEPT.search(low))
        self._prices(text, shown, c)
        spans: list[tuple[int, int, list[Attribute] | int]] = []
        for i in shown:  # titles of shown items, longest first
            t = _prep(self.catalog.titles[int(i)])  # normalised like ``text``
            at = low.find(t) if len(t) >= 8 else -1
            if at >= 0 and not any(s0 < at + len(t) and at < s1 for s0, s1, _ in spans):
                spans.append((at, at + len(t), int(i)))
        for s0, s1, attrs in self.phrases.find(text):
            if not any(a0 < s1 and s0 < a1 for a0, a1, _ in spans):
                spans.append((s0, s1, attrs))
        spans.sort(key=lambda x: x[0])
        masked, payload, last = [], [], 0
        for j, (s0, s1, what) in enumerate(spans):
            masked.append(text[last:s0] + f"\x00{j}\x00")
            payload.append(what)
            last = s1
        masked.append(text[last:])
        for clause in (x for x in _CLAUSE.split("".join(masked)) if x and x.strip()):
            refs = [payload[int(j)] for j in re.findall(r"\x00(\d+)\x00", clause)]
            bare = re.sub(r"\x00\d+\x00", " ", clause)
            bl = bare.lower()
            # A price bound's own words ("not over", "less than") say nothing of attributes.
            negative = bool(_NEG.search(_P_MIN.sub(" ", _P_MAX.sub(" ", bl)))) and not c.accept
            attrs = self._disambiguate(
                [a for r in refs if isinstance(r, list) for a in r], bare)
            for a in attrs:
                c.matched[a.key] = "exact"
            items = [r for r in refs if isinstance(r, int)] + self._ordinals(bare, shown)
            priced = bool(_P_MAX.search(bl) or _P_MIN.search(bl) or _CHEAPER.search(bl)
                          or _PRICIER.search(bl))
            # Embeddings only for clauses nothing else explained (they cost an encoder call).
            if not refs and not items and not priced and not c.accept:
                hit = self._embedded(bare)
                if hit is not None:
                    attrs.append(hit[0])
                    c.matched.setdefault(hit[0].key, f"embedding:{hit[1]:.2f}")
            (c.avoid if negative else c.like).extend(a for a in attrs if a not in c.avoid + c.like)
            (c.avoid_items if negative else c.like_items).extend(
                i for i in dict.fromkeys(items) if i not in c.avoid_items + c.like_items)
        return c


_SPACES = re.compile(r"\s+")
