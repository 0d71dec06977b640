"""Conversational recommendation: a session API over any genrec model.

Each turn: the utterance becomes a :class:`~genrec.llm.critique.Critique`; the
:class:`SessionState` is updated (attributes to like and avoid, items referred to, price
bounds); the model scores every item for the user's history (plus the items they liked in
the conversation); items that break a hard constraint (an avoided attribute, an avoided or
already shown item, the price bounds) are removed, items are boosted by the liked attributes
they carry, and an optional LLM reranker reorders the top candidates. The reply names the
items. The state is plain JSON: save it, restore it, go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from genrec._io import atomic_write_text
from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Attribute, Catalogue
from genrec.llm.critique import Critique, CritiqueParser
from genrec.llm.rerank import LLMReranker
from genrec.models.base import Recommender
from genrec.models.ranking import rank

__all__ = ["ConversationConfig", "ConversationalRecommender", "Reply", "Session", "SessionState"]

_log = logging.getLogger(__name__)


def _best(scores: np.ndarray, k: int) -> list[int]:
    """The ``k`` best finite-scored items, best first, through :func:`rank` (its tie order)."""
    items, _ = rank(torch.from_numpy(np.array(scores))[None], None, k, exclude_seen=False)
    return [int(i) for i in items[0] if i >= 0]


class ConversationConfig(BaseModel):
    """How the session turns state into recommendations."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    """Items per reply."""
    like_weight: float = Field(10.0, ge=0)
    """Boost per liked attribute an item carries, in standard deviations of the model score
    (10 makes matching items come first, ordered by the model among themselves)."""
    exclude_shown: bool = True
    """Never show an item twice in one session."""
    use_critiques: bool = True
    """Apply the parsed critiques; False pages through the model ranking (a baseline)."""
    rerank_top: int = Field(20, ge=1)
    """Candidates passed to the LLM reranker, if one is set."""
    history_len: int | None = 200
    """Most recent history items given to the model."""


class SessionState(BaseModel):
    """Everything a session knows; JSON round-trips exactly."""

    model_config = ConfigDict(extra="forbid")

    user: int | None = None
    history: list[int] = Field(default_factory=list)
    turn: int = 0
    like: list[str] = Field(default_factory=list)
    """Liked attributes as ``field=value`` keys."""
    avoid: list[str] = Field(default_factory=list)
    """Avoided attributes as ``field=value`` keys."""
    like_items: list[int] = Field(default_factory=list)
    avoid_items: list[int] = Field(default_factory=list)
    price_min: float | None = None
    price_max: float | None = None
    shown: list[int] = Field(default_factory=list)
    last_shown: list[int] = Field(default_factory=list)
    accepted: int | None = None
    transcript: list[dict[str, str]] = Field(default_factory=list)

    def apply(self, c: Critique, single_valued: frozenset[str]) -> None:
        """Fold a critique into the state (later statements override earlier ones)."""
        for a in c.like:
            if a.field in single_valued:  # "from Essie" replaces an earlier "from OPI"
                self.like = [k for k in self.like if Attribute.from_key(k).field != a.field]
            if a.key in self.avoid:
                self.avoid.remove(a.key)
            if a.key not in self.like:
                self.like.append(a.key)
        for a in c.avoid:
            if a.key in self.like:
                self.like.remove(a.key)
            if a.key not in self.avoid:
                self.avoid.append(a.key)
        for i in c.like_items:
            if i in self.avoid_items:
                self.avoid_items.remove(i)
            if i not in self.like_items:
                self.like_items.append(i)
        for i in c.avoid_items:
            if i in self.like_items:  # "not that one after all" undoes an earlier like
                self.like_items.remove(i)
            if i not in self.avoid_items:
                self.avoid_items.append(i)
        if c.price_max is not None:
            self.price_max = c.price_max
        if c.price_min is not None:
            self.price_min = c.price_min
        if c.accept and c.like_items:
            self.accepted = c.like_items[0]


@dataclass
class Reply:
    """One system turn.

    Attributes:
        items: Recommended items (dense ids), best first.
        text: The reply, naming the items.
        critique: What the user's utterance was understood as (None on the first turn).
        ranking: The state-aware scores of every item (for recall at any cut-off).
        overhead_s: Time spent in genrec, excluding the model's scoring, the text encoder
            and the LLM.
        model_s: Time of the model's scoring.
        llm_s: Time in LLM calls.
        encoder_s: Time in the text encoder (paraphrase matching).
    """

    items: list[int]
    text: str
    critique: Critique | None
    ranking: np.ndarray
    overhead_s: float = 0.0
    model_s: float = 0.0
    llm_s: float = 0.0
    encoder_s: float = 0.0


class ConversationalRecommender:
    """Builds sessions over a fitted model.

    Args:
        model: A fitted genrec model (the candidate generator).
        catalog: The catalogue.
        parser: Utterance parser (exact + embedding matching by default, no LLM).
        config: Settings; defaults to :class:`ConversationConfig`.
        reranker: Optional LLM reranker of the top ``rerank_top`` candidates.
        **overrides: Fields that replace those of ``config``.
    """

    def __init__(self, model: Recommender[Any], catalog: Catalogue,
                 parser: CritiqueParser | None = None, config: ConversationConfig | None = None,
                 *, reranker: LLMReranker | None = None, **overrides: Any) -> None:
        merged = (config or ConversationConfig()).model_dump() | overrides
        self.config = ConversationConfig.model_validate(merged)
        self.model = model
        self.catalog = catalog
        self.parser = parser or CritiqueParser(catalog)
        self.reranker = reranker
        self._item_attr_csc = catalog.item_attr.tocsc()

    def start(self, history: Sequence[int], user: int | None = None) -> Session:
        """A new session for a user with ``history`` (dense ids, oldest first)."""
        return Session(self, SessionState(user=user, history=[int(h) for h in history]))

    def restore(self, state: SessionState | str | Path) -> Session:
        """A session from a state, its JSON text, or a file written by :meth:`Session.save`."""
        if isinstance(state, Path) or (isinstance(state, str) and not state.lstrip()
                                       .startswith("{")):
            state = Path(state).read_text(encoding="utf-8")
        if isinstance(state, str):
            state = SessionState.model_validate_json(state)
        return Session(self, state)

    # -- scoring ----------------------------------------------------------------------------
    def model_scores(self, state: SessionState) -> np.ndarray:
        """Model scores of every item for the state's history and liked items, ``(n_items,)``."""
        hist = state.history + [i for i in state.like_items if i not in state.history]
        h = Histories.from_lists([hist], self.catalog.item_attr.shape[0],
                                 users=[-1 if state.user is None else state.user]
                                 ).truncate(self.config.history_len)
        with torch.no_grad():
            s = self.model.score(h)
        return s[0].float().cpu().numpy().astype(np.float64)

    def state_scores(self, state: SessionState, base: np.ndarray) -> np.ndarray:
        """Apply the state to model scores: hard filters to ``-inf``, boosts for likes."""
        cfg, cat = self.config, self.catalog
        s = base.copy()
        finite = np.isfinite(s)
        if finite.sum() > 1:
            mu, sd = s[finite].mean(), s[finite].std()
            s[finite] = (s[finite] - mu) / (sd if sd > 0 else 1.0)
        s[np.asarray(state.history, dtype=np.int64)] = -np.inf
        if cfg.exclude_shown and state.shown:
            s[np.asarray(state.shown, dtype=np.int64)] = -np.inf
        if not cfg.use_critiques:
            return s
        if state.avoid_items:
            s[np.asarray(state.avoid_items, dtype=np.int64)] = -np.inf
        cols = [cat.attr_index[a] for k in state.avoid
                if (a := Attribute.from_key(k)) in cat.attr_index]
        if cols:
            bad = np.asarray(self._item_attr_csc[:, cols].sum(axis=1)).ravel() > 0
            s[bad] = -np.inf
        with np.errstate(invalid="ignore"):
            if state.price_max is not None:
                s[cat.prices > state.price_max] = -np.inf  # unknown prices pass
            if state.price_min is not None:
                s[cat.prices < state.price_min] = -np.inf
        cols = [cat.attr_index[a] for k in state.like
                if (a := Attribute.from_key(k)) in cat.attr_index]
        if cols and cfg.like_weight:
            hits = np.asarray(self._item_attr_csc[:, cols].sum(axis=1)).ravel()
            s += cfg.like_weight * hits
        return s

    def describe(self, item: int) -> str:
        """Short description of an item for replies: title, brand, leaf category, price."""
        cat = self.catalog
        facts = [v[0] for f in ("brand",) if (v := cat.values(item, f))]
        facts += [x for x in [cat.leaf(item, "categories")] if x]
        facts += cat.values(item, "genres")[:3]
        if (p := cat.price(item)) is not None:
            facts.append(f"${p:.2f}")
        return cat.title(item, 90) + (f" ({', '.join(facts)})" if facts else "")

    def reply_text(self, state: SessionState, items: list[int], c: Critique | None) -> str:
        """The reply: what was understood, then the numbered items."""
        parts = []
        if c is not None and not c.empty and self.config.use_critiques:
            got = [f"more {a.value}" for a in c.like] + [f"no {a.value}" for a in c.avoid]
            if c.price_max is not None:
                got.append(f"under ${c.price_max:g}")
            if c.price_min is not None:
                got.append(f"over ${c.price_min:g}")
            if got:
                parts.append(f"Got it: {', '.join(got)}.")
        if not items:
            parts.append("I have nothing left that fits; try relaxing a constraint.")
        else:
            parts.append("You might like:")
            parts += [f"{r}. {self.describe(i)}" for r, i in enumerate(items, 1)]
        return "\n".join(parts)


class Session:
    """One conversation (create through :meth:`ConversationalRecommender.start`).

    Args:
        engine: The recommender.
        state: Its state.
    """

    def __init__(self, engine: ConversationalRecommender, state: SessionState) -> None:
        self.engine = engine
        self.state = state

    def respond(self, utterance: str | None = None) -> Reply:
        """Take the user's turn (None or ``""`` on the first turn) and reply.

        Args:
            utterance: What the user said.

        Returns:
            The reply; ``state`` is updated.
        """
        eng, st, cfg = self.engine, self.state, self.engine.config
        t0 = time.perf_counter()
        crit: Critique | None = None
        enc0 = eng.parser.encoder_s
        if utterance:
            st.transcript.append({"role": "user", "text": utterance})
            crit = eng.parser.parse(utterance, st.last_shown)
            if cfg.use_critiques:
                st.apply(crit, eng.catalog.single_valued)
        t1 = time.perf_counter()
        base = eng.model_scores(st)
        t2 = time.perf_counter()
        scores = eng.state_scores(st, base)
        items = _best(scores, cfg.k)
        llm_s = 0.0
        if eng.reranker is not None and items:
            cand = _best(scores, cfg.rerank_top)
            res = eng.reranker.rerank_one(st.history, cand,
                                          user=-1 if st.user is None else st.user)
            items = res.items[: cfg.k]
            llm_s = res.stats.llm_s
        st.turn += 1
        st.last_shown = items
        st.shown += [i for i in items if i not in st.shown]
        text = eng.reply_text(st, items, crit)
        st.transcript.append({"role": "system", "text": text})
        enc = eng.parser.encoder_s - enc0
        overhead = time.perf_counter() - t0 - (t2 - t1) - llm_s - enc
        return Reply(items, text, crit, scores, overhead, t2 - t1, llm_s, enc)

    def to_json(self) -> str:
        """The state as JSON."""
        return self.state.model_dump_json(indent=2)

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` (atomic, JSON)."""
        atomic_write_text(Path(path), self.to_json())

    def summary(self) -> dict[str, Any]:
        """Likes, avoids, price bounds and turn count, for display."""
        s = self.state
        return json.loads(s.model_dump_json(include={"turn", "like", "avoid", "like_items",
                                                     "avoid_items", "price_min", "price_max",
                                                     "accepted"}))
