"""Map strings an LLM wrote back to catalogue items: id, exact title, fuzzy title, embedding.

Exact id and title look-ups are catalogue-wide, so an answer that names a real item outside
the candidate list is told apart (``out_of_candidate``) from one that names no item at all
(``hallucinated``). Fuzzy and embedding matches only consider the candidates: they are there
to recover paraphrased or truncated titles of offered items, not to invent new ones.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from genrec.llm.catalog import ItemCatalog, normalize_text
from genrec.llm.embeddings import TextEncoder

try:  # rapidfuzz is ~50x faster than difflib; difflib keeps the layer dependency-free
    from rapidfuzz import fuzz as _rf_fuzz
    from rapidfuzz import process as _rf_process
except ImportError:  # pragma: no cover - depends on the environment
    _rf_fuzz = _rf_process = None

__all__ = ["ItemMatcher", "Match", "MatchStage"]

MatchStage = Literal["id", "title", "fuzzy", "embedding", "out_of_candidate", "hallucinated"]


@dataclass(frozen=True)
class Match:
    """Where one output string led.

    Attributes:
        item: The dense item id, or -1 (hallucinated).
        stage: How it was found; ``out_of_candidate`` names a real item that was not offered.
        score: Similarity of a fuzzy (0-100) or embedding (cosine) match; 1 otherwise.
    """

    item: int
    stage: MatchStage
    score: float = 1.0

    @property
    def valid(self) -> bool:
        """True when the string names one of the candidates."""
        return self.stage in ("id", "title", "fuzzy", "embedding")


class ItemMatcher:
    """Ground output strings in the candidate list.

    Args:
        catalog: The catalogue.
        encoder: Text encoder for the last stage; no embedding stage when None.
        fuzzy_threshold: Least fuzzy-title score (0-100) of a match.
        embed_threshold: Least cosine similarity of an embedding match.
        min_chars: Shorter strings skip the fuzzy and embedding stages (a two-letter string
            is similar to everything).
    """

    def __init__(self, catalog: ItemCatalog, encoder: TextEncoder | None = None, *,
                 fuzzy_threshold: float = 88.0, embed_threshold: float = 0.85,
                 min_chars: int = 8) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.fuzzy_threshold = fuzzy_threshold
        self.embed_threshold = embed_threshold
        self.min_chars = min_chars
        self._title_vecs: dict[int, np.ndarray] = {}
        self.encoder_s = 0.0
        """Seconds spent in the text encoder so far."""

    def _exact(self, text: str, cand: dict[int, int]) -> Match | None:
        s = text.strip().strip("[]()<>'\"`").strip()
        item = self.catalog.by_id(s)
        if item >= 0:
            return Match(item, "id" if item in cand else "out_of_candidate")
        hits = self.catalog.by_title(s)
        if hits:
            inside = [i for i in hits if i in cand]
            return Match(inside[0], "title") if inside else Match(hits[0], "out_of_candidate")
        # "B0001 - Some Title" or "[B0001] Some Title": an id followed by text
        head = s.split(maxsplit=1)[0].strip("[]():,.-") if s else ""
        if head and (item := self.catalog.by_id(head)) >= 0 and item in cand:
            return Match(item, "id")
        return None

    def _fuzzy(self, text: str, items: Sequence[int]) -> Match | None:
        norm = normalize_text(text)
        choices = [normalize_text(self.catalog.titles[i]) for i in items]
        if _rf_process is not None:
            best = _rf_process.extractOne(norm, choices, scorer=_rf_fuzz.token_sort_ratio)
            if best is not None and best[1] >= self.fuzzy_threshold:
                return Match(items[best[2]], "fuzzy", float(best[1]))
            return None
        scores = [difflib.SequenceMatcher(None, norm, c).ratio() * 100 for c in choices]
        j = int(np.argmax(scores)) if scores else -1
        if j >= 0 and scores[j] >= self.fuzzy_threshold:
            return Match(items[j], "fuzzy", scores[j])
        return None

    def _vecs(self, items: Sequence[int]) -> np.ndarray:
        assert self.encoder is not None
        todo = [i for i in items if i not in self._title_vecs]
        if todo:
            for i, v in zip(todo, self.encoder([self.catalog.title(i) for i in todo]),
                            strict=True):
                self._title_vecs[i] = v
        return np.stack([self._title_vecs[i] for i in items])

    def match_many(self, texts: Sequence[str], candidates: Sequence[int]) -> list[Match]:
        """Ground each of ``texts`` in ``candidates`` (one encoder call for all leftovers).

        Args:
            texts: Output strings.
            candidates: Dense ids of the offered items.

        Returns:
            One :class:`Match` per text.
        """
        cand = {int(c): r for r, c in enumerate(candidates) if c >= 0}
        items = list(cand)
        out: list[Match | None] = []
        for t in texts:
            m = self._exact(t, cand)
            if m is None and len(t.strip()) >= self.min_chars and items:
                m = self._fuzzy(t, items)
            out.append(m)
        todo = [j for j, m in enumerate(out)
                if m is None and len(texts[j].strip()) >= self.min_chars]
        if todo and self.encoder is not None and items:
            t0 = time.perf_counter()
            q = self.encoder([texts[j] for j in todo])             # (q, d)
            sims = q @ self._vecs(items).T                         # (q, n_candidates)
            self.encoder_s += time.perf_counter() - t0
            best = sims.argmax(1)
            for r, j in enumerate(todo):
                s = float(sims[r, best[r]])
                if s >= self.embed_threshold:
                    out[j] = Match(items[best[r]], "embedding", s)
        return [m if m is not None else Match(-1, "hallucinated", 0.0) for m in out]
