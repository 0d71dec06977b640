"""A simulated user for evaluating conversational recommenders without people.

The user has a hidden target (the test item of a split) and a history. Shown a list, it
accepts when the target is in it; otherwise it critiques with attributes of the target taken
from its metadata (one new attribute per turn, most specific first) and rejects an attribute
of the shown items that the target lacks. The utterance is phrased by templates, or by an LLM
whose text is used only when it still states those attributes (else the template is used).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genrec.data.interactions import EvalSet
from genrec.evaluation.catalogue import Attribute, Catalogue, normalize_text
from genrec.llm.client import LLMClient, LLMError
from genrec.llm.conversation import ConversationalRecommender
from genrec.llm.parsing import parse_json_object
from genrec.llm.prompts import critique_messages, critique_schema

__all__ = ["SimulatedUser", "SimulationConfig", "simulate"]

_log = logging.getLogger(__name__)

_LIKE = {
    "categories": ["I'm looking for {v}.", "Do you have any {v}?", "Show me {v} instead."],
    "genres": ["I'm in the mood for {v}.", "Something in {v}, please.", "Any {v} movies?"],
    "brand": ["I'd prefer something from {v}.", "Anything by {v}?", "Show me {v} products."],
    "decade": ["Something from the {v}.", "I'd like a movie from the {v}."],
}
_LIKE_ANY = ["I'd like {v}.", "Something with {v}, please."]
_AVOID = ["No {v}, please.", "Not {v}.", "I don't want {v}."]
_PRICE = ["Something under ${v}, please.", "My budget is under ${v}."]
_ACCEPT = "Yes, I'll take {t}."


def _price_cap(price: float) -> float:
    """A round budget just above ``price`` (12.40 -> 15, 47 -> 50, 130 -> 150)."""
    step = 5 if price < 50 else 10 if price < 100 else 50
    return float(math.floor(price / step) * step + step)


class SimulatedUser:
    """A user who wants one hidden item.

    Args:
        target: The hidden target (dense id).
        catalog: The catalogue (the source of the target's attributes).
        rng: Random generator for phrasing.
        client: Optional chat model to phrase critiques (checked; template on failure).
        fields: Attribute fields the user may reveal, in order of preference within a turn.
        reveal_price: Whether a price budget is among the revealable facts.
        negative: Also reject one attribute of the shown items the target lacks.
    """

    def __init__(self, target: int, catalog: Catalogue, rng: np.random.Generator, *,
                 client: LLMClient | None = None,
                 fields: Sequence[str] = ("categories", "genres", "brand", "decade"),
                 reveal_price: bool = True, negative: bool = True) -> None:
        self.target = target
        self.catalog = catalog
        self.rng = rng
        self.client = client
        self.negative = negative
        attrs = list(catalog.attributes[target])
        # Most specific first: the leaf category before its parents, then brand, ...
        order: list[Attribute] = []
        for f in fields:
            vals = [a for a in attrs if a.field == f]
            order += list(reversed(vals)) if f == "categories" else vals
        self.facts: list[Attribute | float] = list(order)
        price = catalog.price(target)
        if reveal_price and price is not None:
            self.facts.insert(min(2, len(self.facts)), _price_cap(price))
        self.revealed: list[Attribute | float] = []
        self.rejected: list[Attribute] = []
        self.llm_used = 0
        self.llm_fallbacks = 0

    def _pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def _template(self, like: Attribute | float | None, avoid: Attribute | None) -> str:
        parts = []
        if isinstance(like, float):
            parts.append(self._pick(_PRICE).format(v=f"{like:g}"))
        elif like is not None:
            parts.append(self._pick(_LIKE.get(like.field, _LIKE_ANY)).format(v=like.value))
        if avoid is not None:
            parts.append(self._pick(_AVOID).format(v=avoid.value))
        return " ".join(parts) or "None of these, show me something else."

    def _llm(self, like: Attribute | float | None, avoid: Attribute | None,
             shown: Sequence[int]) -> str | None:
        assert self.client is not None
        likes = [] if like is None else [f"under ${like:g}" if isinstance(like, float)
                                         else like.value]
        avoids = [] if avoid is None else [avoid.value]
        msgs = critique_messages(likes, avoids, [self.catalog.title(i, 50) for i in shown[:5]])
        try:
            out = self.client.chat(msgs, schema=critique_schema(), max_tokens=64,
                                   temperature=0.7, seed=int(self.rng.integers(1 << 30)))
        except LLMError:
            return None
        obj = parse_json_object(out.text)
        text = str(obj["utterance"]) if obj and isinstance(obj.get("utterance"), str) else out.text
        norm = f" {normalize_text(text)} "
        # The phrasing must still carry every fact, or the simulation would test the LLM.
        needed = [normalize_text(v) for v in likes + avoids]
        if text.strip() and all(f" {n} " in norm for n in needed):
            return text.strip()
        return None

    def respond(self, shown: Sequence[int]) -> tuple[bool, str]:
        """React to a reply.

        Args:
            shown: The items recommended this turn.

        Returns:
            ``(accepted, utterance)``.
        """
        if self.target in shown:
            return True, _ACCEPT.format(t=self.catalog.title(self.target))
        like = next((f for f in self.facts if f not in self.revealed), None)
        if like is not None:
            self.revealed.append(like)
        avoid = None
        if self.negative:
            mine = set(self.catalog.attributes[self.target])
            counts = Counter(a for i in shown for a in self.catalog.attributes[i]
                             if a not in mine and a not in self.rejected
                             and a.field in ("categories", "genres", "brand"))
            if counts:
                avoid = counts.most_common(1)[0][0]
                self.rejected.append(avoid)
        if self.client is not None:
            text = self._llm(like, avoid, shown)
            if text is not None:
                self.llm_used += 1
                return False, text
            self.llm_fallbacks += 1
        return False, self._template(like, avoid)


class SimulationConfig(BaseModel):
    """Simulation settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    turns: int = Field(5, ge=1)
    """Turns per conversation (a turn = one system reply)."""
    users: int | None = Field(500, ge=1)
    """Test users simulated (a seeded sample); all when None."""
    recall_ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    """Cut-offs of the per-turn recall."""
    seed: int = 0
    """Seed of the user sample and the phrasing."""
    negative: bool = True
    """The user also rejects an attribute of the shown items the target lacks."""
    reveal_price: bool = True
    """The user may state a budget."""
    phrasing: Literal["template", "llm"] = "template"
    """How the user phrases critiques (``llm`` needs a client)."""


@dataclass
class _Run:
    success_turn: list[int] = field(default_factory=list)
    hits: dict[int, np.ndarray] = field(default_factory=dict)
    overhead: list[float] = field(default_factory=list)
    model_s: list[float] = field(default_factory=list)
    llm_s: list[float] = field(default_factory=list)
    encoder_s: list[float] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)


def simulate(engine: ConversationalRecommender, eval_set: EvalSet,
             config: SimulationConfig | None = None, *, client: LLMClient | None = None,
             keep_transcripts: int = 3) -> dict[str, Any]:
    """Run simulated conversations for test users and measure them.

    Each user's target is their first test item; their history is the evaluation history.
    Recall@K at turn t is the share of users whose target is in the top K of the system's
    state-aware ranking at turn t (a finished conversation keeps the ranking it ended with).

    Args:
        engine: The conversational recommender (its ``use_critiques`` decides whether
            critiques are used).
        eval_set: Test users, histories and targets (``split.test_set()``).
        config: Settings; defaults to :class:`SimulationConfig`.
        client: Chat model for LLM phrasing.
        keep_transcripts: Conversations kept verbatim in the result.

    Returns:
        ``success_rate`` (within ``turns``), ``success_at`` (per turn, cumulative),
        ``mean_turns_to_success``, ``recall`` (``{"@10": [per turn]}``), timing and counts.
    """
    cfg = config or SimulationConfig()
    rng = np.random.default_rng(cfg.seed)
    n = len(eval_set)
    rows = np.arange(n) if cfg.users is None or cfg.users >= n else \
        np.sort(rng.choice(n, cfg.users, replace=False))
    run = _Run()
    ks = sorted(cfg.recall_ks)
    recall = {k: np.zeros((len(rows), cfg.turns)) for k in ks}
    llm_used = llm_fallbacks = 0
    t_start = time.perf_counter()
    for u, row in enumerate(rows):
        hist = eval_set.histories
        lo, hi = hist.indptr[row], hist.indptr[row + 1]
        history = hist.items[lo:hi].tolist()
        target = int(eval_set.target_items[eval_set.target_indptr[row]])
        sim = SimulatedUser(target, engine.catalog, np.random.default_rng([cfg.seed, int(row)]),
                            client=client if cfg.phrasing == "llm" else None,
                            negative=cfg.negative, reveal_price=cfg.reveal_price)
        session = engine.start(history, user=int(hist.users[row]))
        utterance: str | None = None
        done = 0
        for t in range(cfg.turns):
            reply = session.respond(utterance)
            run.overhead.append(reply.overhead_s)
            run.model_s.append(reply.model_s)
            run.llm_s.append(reply.llm_s)
            run.encoder_s.append(reply.encoder_s)
            # rank of the target in the state-aware ranking (shown items already removed;
            # an item shown this turn is in `reply.items`)
            s = reply.ranking
            rank = int((s > s[target]).sum()) if np.isfinite(s[target]) else 10**9
            in_reply = target in reply.items
            for k in ks:
                recall[k][u, t] = float(rank < k or (in_reply and reply.items.index(target) < k))
            accepted, utterance = sim.respond(reply.items)
            if accepted:
                done = t + 1
                for k in ks:
                    recall[k][u, t + 1:] = recall[k][u, t]
                break
        run.success_turn.append(done)
        llm_used += sim.llm_used
        llm_fallbacks += sim.llm_fallbacks
        if u < keep_transcripts:
            run.transcripts.append({"user": int(hist.users[row]),
                                    "target": engine.catalog.raw_ids[target],
                                    "success_turn": done, "transcript": session.state.transcript})
    succ = np.array(run.success_turn)
    ok = succ > 0
    ov = np.array(run.overhead) * 1000
    return {
        "users": len(rows),
        "turns": cfg.turns,
        "k": engine.config.k,
        "use_critiques": engine.config.use_critiques,
        "phrasing": cfg.phrasing,
        "success_rate": float(ok.mean()) if len(succ) else 0.0,
        "success_at": [float(((succ > 0) & (succ <= t)).mean()) for t in range(1, cfg.turns + 1)],
        "mean_turns_to_success": float(succ[ok].mean()) if ok.any() else None,
        "recall": {f"@{k}": recall[k].mean(0).tolist() for k in ks},
        "overhead_ms_per_turn": {"mean": float(ov.mean()), "p50": float(np.median(ov)),
                                 "p95": float(np.percentile(ov, 95))} if len(ov) else {},
        "model_ms_per_turn": float(np.mean(run.model_s) * 1000) if run.model_s else 0.0,
        "llm_ms_per_turn": float(np.mean(run.llm_s) * 1000) if run.llm_s else 0.0,
        "encoder_ms_per_turn": float(np.mean(run.encoder_s) * 1000) if run.encoder_s else 0.0,
        "llm_phrasings": llm_used,
        "llm_phrasing_fallbacks": llm_fallbacks,
        "seconds": time.perf_counter() - t_start,
        "transcripts": run.transcripts,
    }
