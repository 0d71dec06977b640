"""Explanations of recommendations built only from item metadata and the user's history.

Retrieval first: the history items that share the most attributes with the recommended item
are the evidence. Then either a template writes the text (default, no LLM) or an LLM does,
from a prompt that holds only that evidence. Every text is checked by
:class:`~genrec.evaluation.grounding.GroundingChecker`; an LLM text with an ungrounded claim
(a contradiction included) is replaced by the template, and its claims are counted by the
one definition of :class:`~genrec.evaluation.risks.ClaimCounts`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genrec.evaluation.catalogue import Attribute, Catalogue
from genrec.evaluation.grounding import GroundingChecker, GroundingReport
from genrec.evaluation.risks import ClaimCounts, share
from genrec.data.interactions import Histories
from genrec.llm.client import LLMClient, LLMError
from genrec.llm.collab import CollabRetriever
from genrec.llm.parsing import parse_json_object
from genrec.llm.prompts import PROMPT_VERSIONS, explain_messages, explain_schema

__all__ = ["ExplainConfig", "ExplainStats", "Explainer", "Explanation"]

_log = logging.getLogger(__name__)


class ExplainConfig(BaseModel):
    """Explanation settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    evidence: int = Field(2, ge=0)
    """History items cited at most."""
    history_len: int = Field(50, ge=1)
    """Most recent history items searched for evidence."""
    max_chars: int = Field(300, ge=40)
    """Longest LLM explanation."""
    max_tokens: int = Field(96, ge=8)
    """Completion budget of an LLM explanation."""
    title_chars: int = Field(80, ge=8)
    """Titles longer than this are cut in LLM prompts (templates quote titles in full, so
    the grounding check can recognise them)."""
    fallback: bool = True
    """Replace an LLM text that fails the checks by the template text."""


@dataclass
class Explanation:
    """One explanation.

    Attributes:
        item: The explained item.
        text: The text shown to the user.
        evidence: History items cited, with the attributes they share with ``item``.
        source: ``template``, ``llm``, or ``fallback`` (LLM text rejected, template used).
        report: Grounding report of ``text``.
        llm_report: Report of the rejected LLM text, for ``fallback``.
        raw: Raw LLM output, if any.
        support: ``(s, n)``: ``s`` of the user's ``n`` most similar users chose the item
            (collaborative retrieval; None without a retriever).
    """

    item: int
    text: str
    evidence: list[tuple[int, list[Attribute]]]
    source: Literal["template", "llm", "fallback"]
    report: GroundingReport
    llm_report: GroundingReport | None = None
    raw: str | None = None
    support: tuple[int, int] | None = None

    def to_dict(self, catalog: Catalogue) -> dict[str, Any]:
        """Plain dict with raw ids."""
        return {"item": catalog.raw_ids[self.item], "title": catalog.title(self.item),
                "text": self.text, "source": self.source,
                "evidence": [{"item": catalog.raw_ids[h], "shared": [a.key for a in s]}
                             for h, s in self.evidence],
                "grounding": self.report.to_dict(),
                "similar_users": (None if self.support is None else
                                  {"chose": self.support[0], "of": self.support[1]}),
                "llm_grounding": self.llm_report.to_dict() if self.llm_report else None}


@dataclass
class ExplainStats:
    """Counts over explanations (LLM texts, rejected ones, the claims of LLM texts).

    Attributes:
        explanations: Explanations made.
        llm_texts: LLM texts received.
        llm_failures: LLM requests that failed.
        llm_rejected: LLM texts replaced by the template.
        llm_claims: Claims of the LLM texts, by status.
        final_ungrounded: Explanations shown with an ungrounded claim.
    """

    explanations: int = 0
    llm_texts: int = 0
    llm_failures: int = 0
    llm_rejected: int = 0
    llm_claims: ClaimCounts = field(default_factory=ClaimCounts)
    final_ungrounded: int = 0

    def rates(self) -> dict[str, float]:
        """``llm_rejection_rate`` (per LLM text), the claim rates of the LLM texts
        (``llm_ungrounded_claim_rate``, ``llm_contradiction_rate``, ...; see
        :data:`~genrec.evaluation.risks.RATES`) and ``final_ungrounded_rate`` (per
        explanation)."""
        return {"llm_rejection_rate": share(self.llm_rejected, self.llm_texts),
                **{f"llm_{k}": v for k, v in self.llm_claims.rates().items()},
                "final_ungrounded_rate": share(self.final_ungrounded, self.explanations)}


def _join(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


class Explainer:
    """Explain recommended items to a user.

    Args:
        catalog: The catalogue.
        client: Optional chat model; templates only when None.
        config: Settings; defaults to :class:`ExplainConfig`.
        retriever: A fitted :class:`~genrec.llm.collab.CollabRetriever`: each explanation
            also says how many of the user's most similar users chose the item
            (``explain-collab/v1``).
        **overrides: Fields that replace those of ``config``.
    """

    def __init__(self, catalog: Catalogue, client: LLMClient | None = None,
                 config: ExplainConfig | None = None, *,
                 retriever: CollabRetriever | None = None, **overrides: Any) -> None:
        merged = (config or ExplainConfig()).model_dump() | overrides
        self.config = ExplainConfig.model_validate(merged)
        self.catalog = catalog
        self.client = client
        self.retriever = retriever
        self.checker = GroundingChecker(catalog)
        self.stats_ = ExplainStats()

    @property
    def prompt_version(self) -> str:
        """Version of the LLM prompt this explainer sends (see :data:`PROMPT_VERSIONS`)."""
        return PROMPT_VERSIONS["explain_collab" if self.retriever is not None else "explain"]

    def evidence(self, item: int, history: Sequence[int]) -> list[tuple[int, list[Attribute]]]:
        """History items sharing the most attributes with ``item`` (most recent wins ties)."""
        recent = list(dict.fromkeys(reversed(list(history)[-self.config.history_len:])))
        scored = [(h, self.catalog.shared(item, h)) for h in recent if h != item]
        scored = [(h, s) for h, s in scored if s]
        scored.sort(key=lambda x: -len(x[1]))  # stable: recency order breaks ties
        return scored[: self.config.evidence]

    def template(self, item: int, evidence: list[tuple[int, list[Attribute]]],
                 support: tuple[int, int] | None = None) -> str:
        """The template text: item facts, the history items it shares attributes with, and
        (with ``support``) how many similar users chose it."""
        social = (f" {support[0]} of the {support[1]} users with the most similar histories "
                  "chose it." if support is not None and support[0] > 0 else "")
        return self._template(item, evidence) + social

    def _template(self, item: int, evidence: list[tuple[int, list[Attribute]]]) -> str:
        cat, tc = self.catalog, None
        facts = []
        if brand := cat.values(item, "brand"):
            facts.append(f"by {brand[0]}")
        kinds = cat.values(item, "categories") or cat.values(item, "genres")
        if kinds:
            facts.append(f"in {_join(kinds[-2:])}")
        head = f'"{cat.title(item, tc)}"' + (f" is {' '.join(facts)}" if facts else "")
        if not evidence:
            return head + ". It ranks high among items that users with histories like yours chose."
        reasons = []
        for h, shared in evidence:
            by_field: dict[str, list[str]] = {}
            for a in shared:
                by_field.setdefault(a.field, []).append(a.value)
            what = "; ".join(f"{'the same ' + f if len(v) == 1 and f in cat.single_valued else f}"
                             f" {_join(v[-2:])}" for f, v in by_field.items())
            reasons.append(f'"{cat.title(h, tc)}" ({what})')
        return head + f". You chose {' and '.join(reasons)}, which share these attributes."

    def _llm_text(self, item: int, evidence: list[tuple[int, list[Attribute]]],
                  support: tuple[int, int] | None) -> str | None:
        assert self.client is not None
        cfg = self.config
        msgs = explain_messages(self.catalog, item, [h for h, _ in evidence],
                                title_chars=cfg.title_chars, support=support)
        try:
            out = self.client.chat(msgs, schema=explain_schema(cfg.max_chars),
                                   max_tokens=cfg.max_tokens)
        except LLMError as e:
            _log.warning("explanation request failed; using the template (%s)", e)
            self.stats_.llm_failures += 1
            return None
        obj = parse_json_object(out.text)
        text = obj.get("explanation") if obj else None
        return str(text).strip() if isinstance(text, str) and text.strip() else out.text.strip()

    def support(self, items: Sequence[int], history: Sequence[int],
                user: int = -1) -> list[tuple[int, int]] | None:
        """``(s, n)`` per item: ``s`` of the user's ``n`` most similar users chose it (None
        without a retriever)."""
        if self.retriever is None:
            return None
        h = Histories.from_lists([[int(i) for i in history]], self.catalog.n_items,
                                 users=[int(user)])
        n = min(self.retriever.config.neighbours, self.retriever.n_users_)
        got = self.retriever.neighbour_support(h, np.asarray([list(items)], dtype=np.int64))
        return [(int(s), n) for s in got[0]]

    def explain(self, item: int, history: Sequence[int], *,
                support: tuple[int, int] | None = None) -> Explanation:
        """Explain ``item`` to a user with ``history`` (dense ids, oldest first); ``support``
        is the item's similar-user count (see :meth:`support`)."""
        ev = self.evidence(item, history)
        self.stats_.explanations += 1
        text = self.template(item, ev, support)
        if self.client is None:
            rep = self.checker.check(text, item, history)
            self.stats_.final_ungrounded += not rep.ok
            return Explanation(item, text, ev, "template", rep, support=support)
        raw = self._llm_text(item, ev, support)
        if raw is None:
            rep = self.checker.check(text, item, history)
            self.stats_.final_ungrounded += not rep.ok
            return Explanation(item, text, ev, "fallback", rep, support=support)
        llm_rep = self.checker.check(raw, item, list(history))
        s = self.stats_
        s.llm_texts += 1
        s.llm_claims.add(llm_rep.counts())
        # An empty or claim-free text explains nothing: treat it as a failure too.
        if llm_rep.ok and llm_rep.claims or not self.config.fallback:
            s.final_ungrounded += not llm_rep.ok
            return Explanation(item, raw, ev, "llm", llm_rep, raw=raw, support=support)
        s.llm_rejected += 1
        rep = self.checker.check(text, item, history)
        s.final_ungrounded += not rep.ok
        return Explanation(item, text, ev, "fallback", rep, llm_report=llm_rep, raw=raw,
                           support=support)

    def explain_many(self, items: Sequence[int], history: Sequence[int],
                     user: int = -1) -> list[Explanation]:
        """Explain each of ``items`` to one user (``user``: their dense id, which is never
        their own neighbour; -1 anonymous)."""
        items = [int(i) for i in items if i >= 0]
        sup = self.support(items, history, user) if items else None
        return [self.explain(i, history, support=sup[j] if sup else None)
                for j, i in enumerate(items)]
