"""The item catalogue as the LLM layer sees it: ids, titles and attributes from metadata.

Attributes are ``(field, value)`` pairs taken from string and list-of-string columns of
``Dataset.items`` (``brand``, ``categories``, ``genres``), plus a decade from ``year``.
They ground everything the layer says: rerank outputs are mapped back to these items,
explanations may only assert these attributes, critiques are matched against them.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from genrec.data.interactions import Dataset

__all__ = ["Attribute", "ItemCatalog", "PhraseIndex", "normalize_text"]

_SPACES = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s$.&'+-]")
_MISSING = {"", "unknown", "none", "n/a", "na", "null", "(no genres listed)"}


def normalize_text(text: str) -> str:
    """Lower-case, unescape HTML, NFKC, drop most punctuation, squeeze spaces."""
    text = unicodedata.normalize("NFKC", html.unescape(text)).lower()
    return _SPACES.sub(" ", _PUNCT.sub(" ", text)).strip()


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = _SPACES.sub(" ", html.unescape(str(value))).strip()
    return None if text.lower() in _MISSING else text


@dataclass(frozen=True, order=True)
class Attribute:
    """One attribute value of an item, e.g. ``Attribute("brand", "OPI")``."""

    field: str
    value: str

    @property
    def key(self) -> str:
        """``field=value``."""
        return f"{self.field}={self.value}"

    @classmethod
    def from_key(cls, key: str) -> Attribute:
        """Inverse of :attr:`key`."""
        f, _, v = key.partition("=")
        return cls(f, v)


class ItemCatalog:
    """Ids, titles and attributes of every item, by dense id.

    Args:
        raw_ids: Raw item id per dense id.
        titles: Title per dense id (``""`` when unknown).
        attributes: Attributes per dense id.
        prices: Price per dense id (NaN when unknown).
        max_share: Attribute values carried by more than this share of the items (e.g. the
            root category ``Beauty``) say nothing and are dropped.
    """

    single_valued = frozenset({"brand", "decade"})
    """Fields an item has at most one value of (naming another one is a contradiction)."""

    def __init__(self, raw_ids: Sequence[str], titles: Sequence[str],
                 attributes: Sequence[Sequence[Attribute]], prices: np.ndarray | None = None,
                 *, max_share: float = 0.5) -> None:
        n = len(raw_ids)
        if not (len(titles) == len(attributes) == n):
            raise ValueError("ItemCatalog: raw_ids, titles and attributes differ in length")
        self.raw_ids = [str(r) for r in raw_ids]
        self.titles = [_clean(t) or "" for t in titles]
        self.prices = (np.full(n, np.nan) if prices is None
                       else np.asarray(prices, dtype=np.float64))
        counts: dict[Attribute, int] = {}
        for attrs in attributes:
            for a in set(attrs):
                counts[a] = counts.get(a, 0) + 1
        limit = max(1, math.floor(max_share * n))
        keep = sorted(a for a, c in counts.items() if c <= limit or n < 4)
        self.vocab: list[Attribute] = keep
        self.attr_index = {a: j for j, a in enumerate(keep)}
        self.attributes: list[tuple[Attribute, ...]] = [
            tuple(dict.fromkeys(a for a in attrs if a in self.attr_index)) for attrs in attributes]
        rows = np.repeat(np.arange(n), [len(a) for a in self.attributes])
        cols = np.fromiter((self.attr_index[a] for attrs in self.attributes for a in attrs),
                           dtype=np.int64, count=len(rows))
        self.item_attr = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                       shape=(n, len(keep)))
        """Binary item x attribute matrix, ``(n_items, n_attrs)``."""
        self.id_index = {r.lower(): i for i, r in enumerate(self.raw_ids)}
        self.title_index: dict[str, list[int]] = {}
        for i, t in enumerate(self.titles):
            if t:
                self.title_index.setdefault(normalize_text(t), []).append(i)
        self.value_index: dict[str, list[Attribute]] = {}
        for a in keep:
            self.value_index.setdefault(normalize_text(a.value), []).append(a)

    def __len__(self) -> int:
        return len(self.raw_ids)

    @property
    def fields(self) -> list[str]:
        """Attribute fields present, in first-seen order."""
        return list(dict.fromkeys(a.field for a in self.vocab))

    @classmethod
    def from_dataset(cls, ds: Dataset, fields: Sequence[str] = ("brand", "categories", "genres"),
                     *, max_share: float = 0.5) -> ItemCatalog:
        """The catalogue of ``ds`` from its ``items`` table (missing metadata gives empty rows).

        Args:
            ds: The dataset.
            fields: String or list-of-string columns that become attributes (absent ones are
                skipped); a ``year`` column also gives a ``decade`` attribute.
            max_share: See the class arguments.
        """
        n = ds.n_items
        raw_ids = ds.item_map.to_raw(np.arange(n))
        titles = [""] * n
        attrs: list[list[Attribute]] = [[] for _ in range(n)]
        prices = np.full(n, np.nan)
        table = ds.items
        if not table.is_empty():
            ids = table["item"].to_numpy()
            if "title" in table.columns:
                for i, t in zip(ids, table["title"].to_list(), strict=True):
                    titles[i] = _clean(t) or ""
            for f in fields:
                if f not in table.columns:
                    continue
                col = table[f]
                is_list = isinstance(col.dtype, pl.List)
                for i, v in zip(ids, col.to_list(), strict=True):
                    for x in (v or []) if is_list else [v]:
                        if (c := _clean(x)) is not None:
                            attrs[i].append(Attribute(f, c))
            if "year" in table.columns:
                for i, y in zip(ids, table["year"].to_list(), strict=True):
                    if y is not None and y > 0:
                        attrs[i].append(Attribute("decade", f"{int(y) // 10 * 10}s"))
            if "price" in table.columns:
                p = table["price"].cast(pl.Float64).to_numpy()
                prices[ids] = np.where(p > 0, p, np.nan)
        return cls(raw_ids, titles, attrs, prices, max_share=max_share)

    # -- look-ups ---------------------------------------------------------------------------
    def title(self, item: int, max_chars: int | None = None) -> str:
        """Title of ``item`` (its raw id when it has none), cut to ``max_chars``."""
        t = self.titles[item] or f"item {self.raw_ids[item]}"
        return t if max_chars is None or len(t) <= max_chars else t[: max_chars - 1] + "…"

    def values(self, item: int, field: str) -> list[str]:
        """Values of ``field`` of ``item``."""
        return [a.value for a in self.attributes[item] if a.field == field]

    def price(self, item: int) -> float | None:
        """Price of ``item`` or None."""
        p = self.prices[item]
        return None if np.isnan(p) else float(p)

    def describe(self, item: int, max_chars: int = 80) -> str:
        """``title (brand: X; categories: A, B; price: $9.99)`` from metadata only."""
        parts = []
        for f in self.fields:
            vals = self.values(item, f)
            if vals:
                parts.append(f"{f}: {', '.join(vals)}")
        if (p := self.price(item)) is not None:
            parts.append(f"price: ${p:.2f}")
        return self.title(item, max_chars) + (f" ({'; '.join(parts)})" if parts else "")

    def by_title(self, text: str) -> list[int]:
        """Items whose normalised title equals the normalised ``text``."""
        return self.title_index.get(normalize_text(text), [])

    def by_id(self, text: str) -> int:
        """Dense id of a raw id (case-insensitive), or -1."""
        return self.id_index.get(text.strip().lower(), -1)

    def shared(self, a: int, b: int) -> list[Attribute]:
        """Attributes that items ``a`` and ``b`` share."""
        other = set(self.attributes[b])
        return [x for x in self.attributes[a] if x in other]

    def leaf(self, item: int, field: str = "categories") -> str | None:
        """The most specific (last) value of a hierarchical field, or None."""
        vals = self.values(item, field)
        return vals[-1] if vals else None


_TOKEN = re.compile(r"[\w']+")


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

    def __init__(self, catalog: ItemCatalog, *, min_chars: int = 4,
                 stop: frozenset[str] = frozenset()) -> None:
        self.min_chars = min_chars
        self.index: dict[tuple[str, ...], list[Attribute]] = {}
        for a in catalog.vocab:
            toks = tuple(_TOKEN.findall(_prep(a.value)))
            if toks and " ".join(toks) not in stop and not (len(toks) == 1 and toks[0].isdigit()):
                self.index.setdefault(toks, []).append(a)
        self.max_len = max((len(k) for k in self.index), default=0)

    def find(self, text: str) -> list[tuple[int, int, list[Attribute]]]:
        """Non-overlapping ``(start, end, attributes)`` character spans, left to right."""
        raw = html.unescape(text).replace("’", "'")
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


def _prep(text: str) -> str:
    return unicodedata.normalize("NFKC", html.unescape(text)).replace("’", "'").lower()
