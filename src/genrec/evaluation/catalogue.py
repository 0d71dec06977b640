"""Resolve what a generative model emits (item ids, titles, free text) to catalogue items.

Titles are matched in order of strictness, and every match reports how it was made:

1. ``exact``: the title equals a catalogue title;
2. ``normalized``: equal after normalisation (case, punctuation, a trailing ``", The"``
   moved to the front, a trailing ``(1995)`` year dropped);
3. ``fuzzy``: the best normalised title by RapidFuzz ``ratio`` at or above a threshold;
4. ``embedding``: the nearest catalogue title by cosine similarity of an injected text
   encoder, at or above a threshold;
5. ``none``: no match, a hallucinated item.

A title with numbers only matches fuzzily or by embedding a catalogue title with the same
numbers: "Toy Story 4" is another film than "Toy Story", not a typo of it.

Ids resolve as ``id`` (a dense int in range, or a raw id known to the id map) or ``none``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from genrec.data.interactions import Dataset, IdMap

__all__ = ["Catalogue", "Resolved", "MatchKind", "Encoder", "normalize_title", "MATCH_KINDS"]

_log = logging.getLogger(__name__)

MatchKind = Literal["id", "exact", "normalized", "fuzzy", "embedding", "none"]
MATCH_KINDS: tuple[str, ...] = ("id", "exact", "normalized", "fuzzy", "embedding", "none")

Encoder = Callable[[list[str]], np.ndarray]
"""A text encoder: ``encoder(texts) -> (len(texts), D)`` float array."""

_YEAR = re.compile(r"\s*\((?:19|20)\d\d\)\s*$")
_ARTICLE = re.compile(r"^(.*),\s*(the|a|an|la|le|les|il|der|die|das)$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w]+")
_DIGITS = re.compile(r"\d+")


def normalize_title(title: str) -> str:
    """Canonical form of a title for matching.

    Examples: ``"Usual Suspects, The (1995)"`` and ``"the usual suspects"`` both become
    ``"the usual suspects"``.
    """
    t = unicodedata.normalize("NFKC", str(title)).strip()
    t = _YEAR.sub("", t)
    m = _ARTICLE.match(t)
    if m:
        t = f"{m.group(2)} {m.group(1)}"
    return _NON_WORD.sub(" ", t.casefold()).strip()


@dataclass(frozen=True)
class Resolved:
    """Model outputs resolved to catalogue items, one entry per emitted item.

    Attributes:
        items: Dense item id of each entry, ``-1`` when unmatched; one array per output list.
        kinds: How each entry matched (see :data:`MATCH_KINDS`).
        scores: Match confidence in ``[0, 1]`` (1 for id / exact / normalized matches).
        keys: A comparable key per entry (the item id, or the normalised text when
            unmatched), used to find duplicates.
    """

    items: list[np.ndarray]
    kinds: list[list[str]]
    scores: list[np.ndarray]
    keys: list[list[str]]

    def __len__(self) -> int:
        return len(self.items)

    def flat_items(self) -> np.ndarray:
        """All entries' item ids concatenated."""
        return np.concatenate(self.items) if self.items else np.zeros(0, dtype=np.int64)

    def flat_kinds(self) -> list[str]:
        """All entries' match kinds concatenated."""
        return [k for row in self.kinds for k in row]


class Catalogue:
    """The item catalogue a generative model's outputs are checked against.

    Args:
        items: Item features with a dense ``item`` column and optionally ``title`` and any
            metadata (``genres``, ``categories``, ``brand``, ``year``, ...).
        n_items: Catalogue size (defaults to ``max(item) + 1``).
        item_map: Raw id <-> dense id map, so outputs may use raw ids.
        encoder: Optional text encoder for the embedding match step.
        title_column: Column holding item titles.
    """

    def __init__(self, items: pl.DataFrame, n_items: int | None = None, *,
                 item_map: IdMap | None = None, encoder: Encoder | None = None,
                 title_column: str = "title") -> None:
        self.items = items
        self.n_items = int(n_items if n_items is not None else
                           (items["item"].max() + 1 if items.height else 0))  # type: ignore[operator]
        self.item_map = item_map
        self.encoder = encoder
        self.title_column = title_column
        self._index: dict[str, Any] | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, *, encoder: Encoder | None = None) -> Catalogue:
        """The catalogue of a dataset (its item table, size and id map)."""
        return cls(ds.items, ds.n_items, item_map=ds.item_map, encoder=encoder)

    # -- lookup tables, built once on first use ------------------------------------------
    def _tables(self) -> dict[str, Any]:
        if self._index is not None:
            return self._index
        exact: dict[str, int] = {}
        norm: dict[str, int] = {}
        titles: list[str] = []
        ids: list[int] = []
        if self.title_column in self.items.columns:
            frame = self.items.select("item", self.title_column).drop_nulls()
            for item, title in frame.iter_rows():
                exact.setdefault(title, item)           # the first (lowest id) item wins
                key = normalize_title(title)
                if key and key not in norm:
                    norm[key] = item
                    titles.append(key)
                    ids.append(item)
        self._index = {"exact": exact, "norm": norm, "titles": titles,
                       "ids": np.asarray(ids, dtype=np.int64), "emb": None,
                       "num_vocab": {}, "num_codes": np.zeros(0, dtype=np.int64)}
        vocab: dict[str, int] = self._index["num_vocab"]
        self._index["num_codes"] = np.array(
            [vocab.setdefault(_numbers(x), len(vocab)) for x in titles], dtype=np.int64)
        return self._index

    def title_of(self, item: int) -> str | None:
        """Title of a dense item id (None if unknown)."""
        if self.title_column not in self.items.columns:
            return None
        row = self.items.filter(pl.col("item") == item)
        return row[self.title_column][0] if row.height else None

    def metadata(self, items: np.ndarray) -> pl.DataFrame:
        """Feature rows of ``items`` in the given order (null rows for unknown ids)."""
        return pl.DataFrame({"item": np.asarray(items, dtype=np.int64)}).join(
            self.items, on="item", how="left", maintain_order="left")

    # -- resolution -----------------------------------------------------------------------
    def resolve_ids(self, ids: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
        """Resolve ids: ints as dense ids (in range), strings through the raw id map.

        Args:
            ids: Emitted ids.

        Returns:
            ``(items, kinds)``, ``-1`` / ``"none"`` for ids outside the catalogue.
        """
        out = np.full(len(ids), -1, dtype=np.int64)
        raw_pos = [i for i, x in enumerate(ids) if not _is_int(x)]
        for i, x in enumerate(ids):
            if _is_int(x) and 0 <= int(x) < self.n_items:
                out[i] = int(x)
        if raw_pos and self.item_map is not None:
            out[raw_pos] = self.item_map.to_index([str(ids[i]) for i in raw_pos])
        return out, ["id" if x >= 0 else "none" for x in out]

    def match_titles(self, titles: Sequence[str], *, fuzzy_threshold: float = 0.9,
                     embedding_threshold: float = 0.85
                     ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Resolve titles exactly, then normalised, then fuzzily, then by embedding.

        Args:
            titles: Emitted titles.
            fuzzy_threshold: Minimum RapidFuzz ratio (in ``[0, 1]``) of a fuzzy match.
            embedding_threshold: Minimum cosine similarity of an embedding match.

        Returns:
            ``(items, kinds, scores)``, one entry per title.
        """
        t = self._tables()
        n = len(titles)
        items = np.full(n, -1, dtype=np.int64)
        kinds = ["none"] * n
        scores = np.zeros(n)
        keys = [normalize_title(x) for x in titles]
        for i, (title, key) in enumerate(zip(titles, keys, strict=True)):
            if title in t["exact"]:
                items[i], kinds[i], scores[i] = t["exact"][title], "exact", 1.0
            elif key in t["norm"]:
                items[i], kinds[i], scores[i] = t["norm"][key], "normalized", 1.0
        todo = [i for i in range(n) if items[i] < 0 and keys[i]]
        if todo and t["titles"]:
            from rapidfuzz import fuzz, process

            step = max(1, (1 << 22) // len(t["titles"]))
            for lo in range(0, len(todo), step):
                part = todo[lo:lo + step]
                sim = process.cdist([keys[i] for i in part], t["titles"], scorer=fuzz.ratio,
                                    dtype=np.float32, workers=-1)           # (Q, n_titles)
                # A sequel number is not a typo: "Toy Story 5" must not match "Toy Story".
                sim[self._number_clash([keys[i] for i in part])] = 0.0
                best = sim.argmax(1)
                for row, i in enumerate(part):
                    s = float(sim[row, best[row]]) / 100
                    if s >= fuzzy_threshold:
                        items[i], kinds[i], scores[i] = t["ids"][best[row]], "fuzzy", s
        todo = [i for i in range(n) if items[i] < 0 and keys[i]]
        if todo and self.encoder is not None and t["titles"]:
            emb = self._title_embeddings()
            q = _unit(np.asarray(self.encoder([titles[i] for i in todo]), dtype=np.float32))
            sim = q @ emb.T                                                  # (Q, n_titles)
            sim[self._number_clash([keys[i] for i in todo])] = -1.0
            best = sim.argmax(1)
            for row, i in enumerate(todo):
                s = float(sim[row, best[row]])
                if s >= embedding_threshold:
                    items[i], kinds[i], scores[i] = t["ids"][best[row]], "embedding", s
        return items, kinds, scores

    def _number_clash(self, keys: list[str]) -> np.ndarray:
        """``(Q, n_titles)``: the query has numbers and the title has other ones."""
        t = self._tables()
        sigs = [_numbers(k) for k in keys]
        code = np.array([t["num_vocab"].get(x, -1) for x in sigs])
        has = np.array([bool(x) for x in sigs])
        return has[:, None] & (code[:, None] != t["num_codes"][None, :])

    def _title_embeddings(self) -> np.ndarray:
        t = self._tables()
        if t["emb"] is None:
            assert self.encoder is not None
            t["emb"] = _unit(np.asarray(self.encoder(t["titles"]), dtype=np.float32))
        return t["emb"]

    def resolve(self, outputs: Sequence[Sequence[Any]], *,
                kind: Literal["auto", "ids", "titles"] = "auto", fuzzy_threshold: float = 0.9,
                embedding_threshold: float = 0.85) -> Resolved:
        """Resolve every output list.

        Args:
            outputs: One list of emitted items per output (ids or titles).
            kind: ``"ids"``, ``"titles"``, or ``"auto"``: ints are ids, and strings are raw
                ids when the id map knows them, titles otherwise.
            fuzzy_threshold: See :meth:`match_titles`.
            embedding_threshold: See :meth:`match_titles`.

        Returns:
            The resolved entries.
        """
        flat = [x for row in outputs for x in row]
        lengths = [len(row) for row in outputs]
        items = np.full(len(flat), -1, dtype=np.int64)
        kinds = ["none"] * len(flat)
        scores = np.zeros(len(flat))
        if kind in ("auto", "ids"):
            ids, _ = self.resolve_ids(flat)
            hit = ids >= 0  # in "auto", a string the id map does not know is a title
            items[hit] = ids[hit]
            for i in np.flatnonzero(hit):
                kinds[i], scores[i] = "id", 1.0
        if kind in ("auto", "titles"):
            todo = [i for i in range(len(flat)) if items[i] < 0 and not _is_int(flat[i])]
            m_items, m_kinds, m_scores = self.match_titles(
                [str(flat[i]) for i in todo], fuzzy_threshold=fuzzy_threshold,
                embedding_threshold=embedding_threshold)
            for j, i in enumerate(todo):
                items[i], kinds[i], scores[i] = m_items[j], m_kinds[j], m_scores[j]
        keys = [str(it) if it >= 0 else "?" + normalize_title(str(x))
                for it, x in zip(items, flat, strict=True)]
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
        return Resolved(
            [items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            [kinds[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            [keys[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
        )


def _numbers(key: str) -> str:
    """The numbers of a normalised title, as one comparable string."""
    return " ".join(_DIGITS.findall(key))


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
