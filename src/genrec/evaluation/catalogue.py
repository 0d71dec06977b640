"""The item catalogue, and the one matcher of what generative models emit.

:class:`Catalogue` holds every item by dense id: its raw id, title, attributes
(``(field, value)`` pairs from the ``brand`` / ``categories`` / ``genres`` columns and a
decade from ``year``), price, and the full metadata table. The LLM layer, TIGER's decoding
checks and the holistic report all ground their outputs in it.

:class:`Matcher` maps emitted entries (item ids, raw ids, titles, free text) back to
catalogue items, in order of strictness, and every match reports how it was made:

1. ``id``: an int that is a dense id in range, or a string that is a raw id (ignoring case,
   brackets and quotes; with candidates also ``"[B0001] Some title"``);
2. ``exact``: the string equals a catalogue title;
3. ``normalized``: equal after :func:`normalize_title` (case, punctuation, HTML entities, a
   trailing ``", The"`` moved to the front, a trailing ``(1995)`` dropped);
4. ``fuzzy``: the best RapidFuzz ``ratio`` of the normalised strings at or above a threshold;
5. ``embedding``: the nearest title by cosine similarity of a text encoder, at or above a
   threshold;
6. ``none``: no catalogue item.

Ids and exact / normalised titles are looked up in the whole catalogue. When the model was
offered candidates (an LLM reranking a list), fuzzy and embedding matches only consider the
candidates: they recover paraphrased titles of offered items, they do not invent others. An
entry that names a real item outside the candidates is flagged ``offered=False``. A title
with numbers only matches fuzzily or by embedding a title with the same numbers: "Toy Story
4" is another film than "Toy Story", not a typo of it. What each outcome counts as
(hallucinated, out of candidate, duplicate) is defined in :mod:`genrec.evaluation.risks`.
"""

from __future__ import annotations

import html
import logging
import math
import re
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from rapidfuzz import fuzz, process

from genrec.data.interactions import Dataset, IdMap
from genrec.text.encoders import TextEncoder

__all__ = ["MATCH_KINDS", "Attribute", "Catalogue", "Match", "MatchKind", "Matcher",
           "Resolved", "normalize_text", "normalize_title"]

_log = logging.getLogger(__name__)

MatchKind = Literal["id", "exact", "normalized", "fuzzy", "embedding", "none"]
MATCH_KINDS: tuple[str, ...] = ("id", "exact", "normalized", "fuzzy", "embedding", "none")

_YEAR = re.compile(r"\s*\((?:19|20)\d\d\)\s*$")
_ARTICLE = re.compile(r"^(.*),\s*(the|a|an|la|le|les|il|der|die|das)$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w]+")
_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")
_MISSING = {"", "unknown", "none", "n/a", "na", "null", "(no genres listed)"}


def _prep(text: Any) -> str:
    return unicodedata.normalize("NFKC", html.unescape(str(text))).strip()


def _words(text: str) -> str:
    return _NON_WORD.sub(" ", text.casefold()).strip()


def normalize_text(text: str) -> str:
    """Canonical form of free text: HTML entities, NFKC, case and punctuation folded.

    Example: ``"L&#39;Oréal  Creams & Moisturizers!"`` becomes ``"l oréal creams moisturizers"``.
    """
    return _words(_prep(text))


def normalize_title(title: str) -> str:
    """Canonical form of a title for matching: :func:`normalize_text` after moving a trailing
    article to the front and dropping a trailing year.

    Examples: ``"Usual Suspects, The (1995)"`` and ``"the usual suspects"`` both become
    ``"the usual suspects"``.
    """
    t = _YEAR.sub("", _prep(title))
    m = _ARTICLE.match(t)
    if m:
        t = f"{m.group(2)} {m.group(1)}"
    return _words(t)


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


class Catalogue:
    """Ids, titles, attributes, prices and metadata of every item, by dense id.

    Args:
        items: Item features with a dense ``item`` column and optionally a title column and
            any metadata (``genres``, ``categories``, ``brand``, ``year``, ``price``, ...).
        n_items: Catalogue size (defaults to ``max(item) + 1``).
        item_map: Raw id <-> dense id map (default: raw id = the dense id as a string).
        fields: String or list-of-string columns that become attributes (absent ones are
            skipped); a ``year`` column also gives a ``decade`` attribute.
        max_share: Attribute values carried by more than this share of the items (e.g. the
            root category ``Beauty``) say nothing and are dropped from the attributes (the
            metadata table keeps them).
        title_column: Column holding item titles.
    """

    single_valued = frozenset({"brand", "decade"})
    """Fields an item has at most one value of (naming another one is a contradiction)."""

    def __init__(self, items: pl.DataFrame, n_items: int | None = None, *,
                 item_map: IdMap | None = None,
                 fields: Sequence[str] = ("brand", "categories", "genres"),
                 max_share: float = 0.5, title_column: str = "title") -> None:
        n = int(n_items if n_items is not None else
                (items["item"].max() + 1 if items.height else 0))  # type: ignore[operator]
        if "item" not in items.columns:  # a dataset without item features
            items = pl.DataFrame({"item": pl.Series([], dtype=pl.Int64)})
        self.items = items
        self.n_items = n
        self.item_map = item_map
        self.raw_ids: list[str] = (item_map.to_raw(np.arange(n)) if item_map is not None
                                   else [str(i) for i in range(n)])
        titles = [""] * n
        attrs: list[list[Attribute]] = [[] for _ in range(n)]
        self.prices = np.full(n, np.nan)
        table = items.filter(pl.col("item") < n)
        if table.height:
            ids = table["item"].to_numpy()
            if title_column in table.columns:
                for i, t in zip(ids, table[title_column].to_list(), strict=True):
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
                self.prices[ids] = np.where(p > 0, p, np.nan)
        self.titles = titles
        counts: dict[Attribute, int] = {}
        for a_list in attrs:
            for a in set(a_list):
                counts[a] = counts.get(a, 0) + 1
        limit = max(1, math.floor(max_share * n))
        keep = sorted(a for a, c in counts.items() if c <= limit or n < 4)
        self.vocab: list[Attribute] = keep
        self.attr_index = {a: j for j, a in enumerate(keep)}
        self.attributes: list[tuple[Attribute, ...]] = [
            tuple(dict.fromkeys(a for a in a_list if a in self.attr_index)) for a_list in attrs]
        rows = np.repeat(np.arange(n), [len(a) for a in self.attributes])
        cols = np.fromiter((self.attr_index[a] for a_list in self.attributes for a in a_list),
                           dtype=np.int64, count=len(rows))
        self.item_attr = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                       shape=(n, len(keep)))
        """Binary item x attribute matrix, ``(n_items, n_attrs)``."""
        self.id_index: dict[str, int] = {}
        for i, r in enumerate(self.raw_ids):
            self.id_index.setdefault(r.lower(), i)
        self.title_keys = [normalize_title(t) for t in titles]
        """:func:`normalize_title` of every title."""
        self.exact_index: dict[str, list[int]] = {}
        self.title_index: dict[str, list[int]] = {}
        for i, (t, key) in enumerate(zip(titles, self.title_keys, strict=True)):
            if t:
                self.exact_index.setdefault(t, []).append(i)
            if key:
                self.title_index.setdefault(key, []).append(i)
        self.value_index: dict[str, list[Attribute]] = {}
        for a in keep:
            self.value_index.setdefault(normalize_text(a.value), []).append(a)
        self._rows: list[dict[str, Any] | None] | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, fields: Sequence[str] = ("brand", "categories", "genres"),
                     *, max_share: float = 0.5) -> Catalogue:
        """The catalogue of ``ds``: its item table, size and id map."""
        return cls(ds.items, ds.n_items, item_map=ds.item_map, fields=fields,
                   max_share=max_share)

    def __len__(self) -> int:
        return self.n_items

    @property
    def fields(self) -> list[str]:
        """Attribute fields present, in first-seen order."""
        return list(dict.fromkeys(a.field for a in self.vocab))

    # -- look-ups ---------------------------------------------------------------------------
    def title(self, item: int, max_chars: int | None = None) -> str:
        """Title of ``item`` (``item <raw id>`` when it has none), cut to ``max_chars``."""
        t = self.titles[item] or f"item {self.raw_ids[item]}"
        return t if max_chars is None or len(t) <= max_chars else t[: max_chars - 1] + "…"

    def values(self, item: int, field: str) -> list[str]:
        """Values of attribute ``field`` of ``item``."""
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
        return self.title_index.get(normalize_title(text), [])

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

    def metadata(self, items: np.ndarray) -> pl.DataFrame:
        """Metadata rows of ``items`` in the given order (null rows for unknown ids)."""
        return pl.DataFrame({"item": np.asarray(items, dtype=np.int64)}).join(
            self.items, on="item", how="left", maintain_order="left")

    def row(self, item: int) -> dict[str, Any] | None:
        """The metadata row of ``item`` as a dict (None when unknown or absent)."""
        if self._rows is None:
            rows: list[dict[str, Any] | None] = [None] * self.n_items
            for r in self.items.filter(pl.col("item") < self.n_items).iter_rows(named=True):
                rows[r["item"]] = r
            self._rows = rows
        return self._rows[item] if 0 <= item < self.n_items else None


@dataclass(frozen=True)
class Match:
    """Where one emitted entry led.

    Attributes:
        item: The dense item id, or -1 (no catalogue item).
        kind: How it was found (see :data:`MATCH_KINDS`).
        score: Match confidence in ``[0, 1]`` (1 for id / exact / normalized matches).
        offered: Whether the item is among the candidates (True when none were given;
            False for unmatched entries).
    """

    item: int
    kind: MatchKind
    score: float = 1.0
    offered: bool = True


@dataclass(frozen=True)
class Resolved:
    """Emitted outputs resolved to catalogue items, one entry per emitted item.

    Attributes:
        items: Dense item id of each entry, ``-1`` when unmatched; one array per output list.
        kinds: How each entry matched (see :data:`MATCH_KINDS`).
        scores: Match confidence of each entry.
        offered: Whether each entry's item is among that output's candidates (all True for
            matched entries when there were no candidates).
    """

    items: list[np.ndarray]
    kinds: list[list[str]]
    scores: list[np.ndarray]
    offered: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.items)

    def flat_items(self) -> np.ndarray:
        """All entries' item ids concatenated."""
        return np.concatenate(self.items) if self.items else np.zeros(0, dtype=np.int64)

    def flat_kinds(self) -> list[str]:
        """All entries' match kinds concatenated."""
        return [k for row in self.kinds for k in row]

    def matches(self, output: int) -> list[Match]:
        """The entries of one output as :class:`Match` values."""
        return [Match(int(i), k, float(s), bool(o)) for i, k, s, o in zip(  # type: ignore[arg-type]
            self.items[output], self.kinds[output], self.scores[output], self.offered[output],
            strict=True)]


class Matcher:
    """Map emitted entries to catalogue items (see the module docstring for the steps).

    Args:
        catalogue: The catalogue.
        encoder: Text encoder of the embedding step; no such step when None.
        fuzzy_threshold: Least RapidFuzz ratio (in ``[0, 1]``) of a fuzzy match.
        embedding_threshold: Least cosine similarity of an embedding match.
        min_chars: Shorter strings skip the fuzzy and embedding steps (a two-letter string is
            similar to everything).
    """

    def __init__(self, catalogue: Catalogue, encoder: TextEncoder | None = None, *,
                 fuzzy_threshold: float = 0.9, embedding_threshold: float = 0.85,
                 min_chars: int = 8) -> None:
        self.catalogue = catalogue
        self.encoder = encoder
        self.fuzzy_threshold = fuzzy_threshold
        self.embedding_threshold = embedding_threshold
        self.min_chars = min_chars
        cat = catalogue
        self._titled = np.array([i for i, k in enumerate(cat.title_keys) if k], dtype=np.int64)
        self._keys = cat.title_keys
        vocab: dict[str, int] = {"": 0}
        self._num_codes = np.array([vocab.setdefault(_numbers(k), len(vocab))
                                    for k in self._keys], dtype=np.int64)
        self._num_vocab = vocab
        self._vecs: np.ndarray | None = None
        self._have = np.zeros(cat.n_items, dtype=bool)
        self._lock = threading.Lock()  # the title-vector cache is shared by reranker threads
        self.encoder_s = 0.0
        """Seconds spent in the text encoder so far."""

    # -- the steps ---------------------------------------------------------------------------
    def _lookup(self, x: Any, cand: set[int] | None, kind: str) -> tuple[int, str]:
        """Id, exact and normalised look-ups (catalogue-wide): ``(item, kind)``."""
        cat = self.catalogue
        if _is_int(x):
            ok = kind != "titles" and 0 <= int(x) < cat.n_items
            return (int(x), "id") if ok else (-1, "none")
        raw = str(x).strip()
        s = raw.strip("[]()<>'\"`").strip()
        if kind != "titles" and (item := cat.by_id(s)) >= 0:
            return item, "id"
        if kind != "ids":
            exact = cat.exact_index.get(raw) or cat.exact_index.get(s, [])
            for hits, how in ((exact, "exact"), (cat.by_title(raw), "normalized")):
                if hits:
                    inside = [i for i in hits if cand is None or i in cand]
                    return (inside or hits)[0], how
        if kind != "titles" and cand is not None and s:
            # "B0001 - Some Title" or "[B0001] Some Title": a candidate's id, then text
            head = s.split(maxsplit=1)[0].strip("[]():,.-")
            if head and (item := cat.by_id(head)) >= 0 and item in cand:
                return item, "id"
        return -1, "none"

    def _clash(self, keys: list[str], scope: np.ndarray) -> np.ndarray:
        """``(Q, len(scope))``: the query has numbers and the title has other ones."""
        codes = np.array([self._num_vocab.get(_numbers(k), -1) for k in keys])
        has = np.array([bool(_numbers(k)) for k in keys])
        return has[:, None] & (codes[:, None] != self._num_codes[scope][None, :])

    def _fuzzy(self, queries: list[str], scope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best fuzzy title in ``scope`` per query: ``(items, scores)``, -1 below threshold."""
        keys = [normalize_title(q) for q in queries]
        items = np.full(len(queries), -1, dtype=np.int64)
        scores = np.zeros(len(queries))
        choices = [self._keys[i] for i in scope]
        step = max(1, (1 << 22) // max(1, len(scope)))
        for lo in range(0, len(queries), step):
            part = keys[lo:lo + step]
            sim = process.cdist(part, choices, scorer=fuzz.ratio, dtype=np.float32,
                                workers=1 if len(part) * len(scope) < 1 << 16 else -1)
            sim[self._clash(part, scope)] = 0.0
            best = sim.argmax(1)
            s = sim[np.arange(len(part)), best] / 100
            hit = s >= self.fuzzy_threshold
            items[lo:lo + len(part)][hit] = scope[best[hit]]
            scores[lo:lo + len(part)][hit] = s[hit]
        return items, scores

    def _title_vectors(self, items: np.ndarray) -> np.ndarray:
        """Unit title embeddings of ``items``, encoded once per item."""
        assert self.encoder is not None
        with self._lock:
            todo = items[~self._have[items]]
            if len(todo):
                todo = np.unique(todo)
                t0 = time.perf_counter()
                v = _unit(np.asarray(self.encoder([self.catalogue.titles[i] for i in todo]),
                                     dtype=np.float32))
                self.encoder_s += time.perf_counter() - t0
                if self._vecs is None:
                    self._vecs = np.zeros((self.catalogue.n_items, v.shape[1]),
                                          dtype=np.float32)
                self._vecs[todo] = v
                self._have[todo] = True
            assert self._vecs is not None
            return self._vecs[items]

    def _embedding(self, queries: list[str], scope: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest title in ``scope`` per query: ``(items, scores)``, -1 below threshold."""
        emb = self._title_vectors(scope)                                     # (S, D)
        t0 = time.perf_counter()
        q = _unit(np.asarray(self.encoder(queries), dtype=np.float32))       # type: ignore[misc]
        self.encoder_s += time.perf_counter() - t0
        sim = q @ emb.T                                                      # (Q, S)
        sim[self._clash([normalize_title(x) for x in queries], scope)] = -1.0
        best = sim.argmax(1)
        s = sim[np.arange(len(queries)), best].astype(np.float64)
        hit = s >= self.embedding_threshold
        return np.where(hit, scope[best], -1), np.where(hit, s, 0.0)

    # -- resolution --------------------------------------------------------------------------
    def resolve(self, outputs: Sequence[Sequence[Any]],
                candidates: Sequence[Sequence[int]] | None = None, *,
                kind: Literal["auto", "ids", "titles"] = "auto") -> Resolved:
        """Resolve every output list.

        Args:
            outputs: One list of emitted entries per output (ints, raw ids or titles).
            candidates: The items each output was allowed to name (dense ids), if any.
            kind: ``"ids"`` (ids only), ``"titles"`` (titles only), or ``"auto"``: ints are
                dense ids, strings are raw ids when the catalogue knows them, titles
                otherwise.

        Returns:
            The resolved entries.

        Raises:
            ValueError: If ``candidates`` and ``outputs`` differ in length.
        """
        if candidates is not None and len(candidates) != len(outputs):
            raise ValueError("resolve: one candidate list per output is needed")
        cands = None if candidates is None else [
            {int(c) for c in row if 0 <= int(c) < self.catalogue.n_items} for row in candidates]
        flat = [x for row in outputs for x in row]
        lengths = [len(row) for row in outputs]
        owner = np.repeat(np.arange(len(outputs)), lengths)
        items = np.full(len(flat), -1, dtype=np.int64)
        kinds = ["none"] * len(flat)
        scores = np.zeros(len(flat))
        for i, x in enumerate(flat):
            items[i], kinds[i] = self._lookup(x, None if cands is None else cands[owner[i]],
                                              kind)
            scores[i] = 1.0 if items[i] >= 0 else 0.0
        if kind != "ids":
            self._approximate(flat, owner, cands, items, kinds, scores)
        offered = np.array([it >= 0 and (cands is None or it in cands[o])
                            for it, o in zip(items, owner, strict=True)], dtype=bool)
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
        spans = list(zip(bounds[:-1], bounds[1:], strict=True))
        return Resolved([items[a:b] for a, b in spans], [kinds[a:b] for a, b in spans],
                        [scores[a:b] for a, b in spans], [offered[a:b] for a, b in spans])

    def _approximate(self, flat: list[Any], owner: np.ndarray, cands: list[set[int]] | None,
                     items: np.ndarray, kinds: list[str], scores: np.ndarray) -> None:
        """The fuzzy, then embedding, steps for entries the look-ups left unmatched."""
        groups: dict[int, list[int]] = {}  # scope (output, or -1 = catalogue) -> entries
        for i, x in enumerate(flat):
            if items[i] < 0 and not _is_int(x) and len(str(x).strip()) >= self.min_chars:
                groups.setdefault(-1 if cands is None else int(owner[i]), []).append(i)
        for o, todo in groups.items():
            scope = self._titled if o < 0 else np.array(
                sorted(c for c in cands[o] if self._keys[c]),  # type: ignore[index]
                dtype=np.int64)
            if not len(scope):
                continue
            steps = [("fuzzy", self._fuzzy)] + ([("embedding", self._embedding)]
                                                if self.encoder is not None else [])
            for name, step in steps:
                todo = [i for i in todo if items[i] < 0]
                if not todo:
                    break
                found, s = step([str(flat[i]) for i in todo], scope)
                for j, i in enumerate(todo):
                    if found[j] >= 0:
                        items[i], kinds[i], scores[i] = found[j], name, s[j]

    def match(self, entries: Sequence[Any], candidates: Sequence[int] | None = None, *,
              kind: Literal["auto", "ids", "titles"] = "auto") -> list[Match]:
        """Resolve one output list (see :meth:`resolve`)."""
        res = self.resolve([entries], None if candidates is None else [candidates], kind=kind)
        return res.matches(0)


def _numbers(key: str) -> str:
    """The numbers of a normalised title, as one comparable string."""
    return " ".join(_DIGITS.findall(key))


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
