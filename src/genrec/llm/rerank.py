"""Listwise LLM reranking of a candidate model's top-N, with a grounding guarantee.

The LLM sees the user's history titles and the candidates (ids and titles) and returns a
ranking. Each output string is mapped back to an item by the one matcher of
:mod:`genrec.evaluation.catalogue` (id, exact title, normalised title, fuzzy title,
embedding); hallucinated, out-of-candidate and duplicate entries (as defined in
:mod:`genrec.evaluation.risks`) are dropped and the list is filled from the original ranking.
Whatever the LLM writes, the final list is a permutation of (a prefix of) the candidates: no
invented, repeated or foreign item reaches the user. The raw error rates of the LLM output are
counted in :class:`RerankStats`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Catalogue, Match, Matcher, Resolved
from genrec.evaluation.risks import EntryCounts, entry_statuses, share
from genrec.llm.client import LLMClient, LLMError
from genrec.llm.collab import CollabRetriever
from genrec.llm.parsing import parse_list
from genrec.llm.prompts import PROMPT_VERSIONS, rerank_messages, rerank_schema
from genrec.models.base import RecList
from genrec.text.encoders import TextEncoder

__all__ = ["LLMReranker", "RerankConfig", "RerankResult", "RerankStats", "ground_ranking"]

_log = logging.getLogger(__name__)


class RerankConfig(BaseModel):
    """Listwise reranking settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_candidates: int = Field(20, ge=1)
    """How many of the candidate model's top items the LLM sees."""
    k: int | None = Field(None, ge=1)
    """Length of the reranked list (default: ``n_candidates``)."""
    history_len: int = Field(10, ge=0)
    """Most recent history items shown in the prompt."""
    title_chars: int = Field(80, ge=8)
    """Titles longer than this are cut in the prompt."""
    permutations: int = Field(1, ge=1)
    """Prompts per user with the candidates shuffled; rankings are averaged (Borda) to
    counter position bias. The first prompt keeps the model order."""
    structured: bool = True
    """Ask for schema-bound JSON (enum of candidate ids, ``maxItems``)."""
    max_tokens: int | None = Field(None, ge=1)
    """Completion budget; default ``12 * k + 24``."""
    temperature: float = Field(0.0, ge=0)
    """Sampling temperature."""
    seed: int = 0
    """Seed of the permutations and of the request."""
    concurrency: int = Field(1, ge=1)
    """Users reranked at once (the client still bounds requests in flight)."""


@dataclass
class RerankStats(EntryCounts):
    """Raw quality of the LLM output, summed over requests.

    The output entries are counted as :class:`~genrec.evaluation.risks.EntryCounts`
    (``entries``, ``hallucinated``, ``out_of_candidate``, ``duplicates``, ``matched``), whose
    rates are the one definition of :data:`~genrec.evaluation.risks.RATES`; the other rates
    are per request (format errors, failures) or per final item (fill), before grounding
    repaired anything.
    """

    requests: int = 0
    failed_requests: int = 0
    format_errors: int = 0
    empty_outputs: int = 0
    filled: int = 0
    final_items: int = 0
    llm_s: float = 0.0
    encoder_s: float = 0.0
    total_s: float = 0.0

    def rates(self) -> dict[str, float]:
        """Entry rates (hallucination, out-of-candidate, invalid, duplicate), then format-error,
        empty-output and failure rates per request and the fill rate."""
        r = self.requests
        return super().rates() | {
            "format_error_rate": share(self.format_errors, r),
            "empty_output_rate": share(self.empty_outputs, r),
            "request_failure_rate": share(self.failed_requests, r),
            "fill_rate": share(self.filled, self.final_items),
        }

    def overhead_ms(self) -> float:
        """genrec's own time per request in ms: total minus LLM and text-encoder time."""
        return 1000 * (self.total_s - self.llm_s - self.encoder_s) / max(self.requests, 1)

    def to_dict(self) -> dict[str, Any]:
        """Counts and rates as a plain dict."""
        return {**asdict(self), **self.rates()}


@dataclass
class RerankResult:
    """One user's rerank.

    Attributes:
        items: Final list (dense ids), a duplicate-free subset of the candidates.
        candidates: The candidates in model order.
        raw_outputs: Raw LLM texts, one per permutation.
        matches: Grounding of each output entry, per permutation.
        stats: Counts of this user's requests.
        context: Collaborative context items shown in the prompt (empty without a retriever).
    """

    items: list[int]
    candidates: list[int]
    raw_outputs: list[str]
    matches: list[list[Match]]
    stats: RerankStats
    context: list[int] = field(default_factory=list)


def ground_ranking(resolved: Resolved, stats: RerankStats) -> list[int]:
    """The valid entries of one resolved output, in order; counts every entry into ``stats``."""
    statuses = entry_statuses(resolved)
    stats.add(EntryCounts.from_resolved(resolved, statuses))
    return [int(i) for i, s in zip(resolved.items[0], statuses[0], strict=True)
            if s == "valid"]


def _borda(rankings: Sequence[Sequence[int]], candidates: Sequence[int]) -> list[int]:
    """Aggregate rankings: mean position (unranked = after the last); ties keep model order."""
    n = len(candidates)
    pos = {c: np.zeros(len(rankings)) + n for c in candidates}
    for r, ranking in enumerate(rankings):
        for p, item in enumerate(ranking):
            pos[item][r] = p
    order = sorted(range(n), key=lambda j: (pos[candidates[j]].mean(), j))
    ranked = [candidates[j] for j in order if (pos[candidates[j]] < n).any()]
    return ranked


class LLMReranker:
    """Listwise reranker over any model's candidates.

    Args:
        client: The chat model (any :class:`LLMClient`); the reranker never builds one.
        catalog: Items, titles and attributes.
        config: Settings; defaults to :class:`RerankConfig`.
        encoder: Text encoder of the embedding-match stage (None: no such stage).
        retriever: A fitted :class:`~genrec.llm.collab.CollabRetriever`: the items of users
            with similar histories are added to every prompt (``rerank-collab/v1``).
        **overrides: Fields that replace those of ``config``.
    """

    def __init__(self, client: LLMClient, catalog: Catalogue, config: RerankConfig | None = None,
                 *, encoder: TextEncoder | None = None, retriever: CollabRetriever | None = None,
                 **overrides: Any) -> None:
        merged = (config or RerankConfig()).model_dump() | overrides
        self.config = RerankConfig.model_validate(merged)
        self.client = client
        self.catalog = catalog
        self.retriever = retriever
        self.matcher = Matcher(catalog, encoder)
        self.stats_ = RerankStats()
        self.results_: list[RerankResult] = []
        self._lock = threading.Lock()

    @property
    def prompt_version(self) -> str:
        """Version of the prompt this reranker sends (see :data:`PROMPT_VERSIONS`)."""
        return PROMPT_VERSIONS["rerank_collab" if self.retriever is not None else "rerank"]

    @property
    def k(self) -> int:
        """Length of the reranked lists."""
        return self.config.k or self.config.n_candidates

    def rerank_one(self, history: Sequence[int], candidates: Sequence[int],
                   *, user: int = 0, context: Sequence[int] | None = None) -> RerankResult:
        """Rerank one user's candidates (model order, best first; ``-1`` entries ignored).

        Args:
            history: The user's history, oldest first.
            candidates: Candidate items from the model, best first.
            user: Dense user id (varies the permutation seed; with a retriever, the user's own
                training row is not their neighbour; -1: anonymous).
            context: Collaborative context items (default: retrieved for ``history`` when the
                reranker has a retriever, else none).

        Returns:
            The grounded result; ``items`` has ``min(k, #candidates)`` entries.
        """
        t0 = time.perf_counter()
        cfg = self.config
        cands = list(dict.fromkeys(int(c) for c in candidates if c >= 0))[: cfg.n_candidates]
        k = min(self.k, len(cands))
        stats = RerankStats()
        if not cands:
            return RerankResult([], [], [], [], stats)  # nothing to rank, nothing asked
        hist = list(history)[-cfg.history_len:] if cfg.history_len else []
        if context is None:
            context = (self.retriever.retrieve_one(history, user)
                       if self.retriever is not None else [])
        ctx = [int(i) for i in context if i >= 0]
        # Anonymous rows (user -1, see Histories.from_lists) share one stream of shuffles.
        rng = np.random.default_rng([cfg.seed, int(user)] if user >= 0 else [cfg.seed])
        orders = [list(cands)] + [list(rng.permutation(cands)) for _ in
                                  range(cfg.permutations - 1)]
        schema = rerank_schema([self.catalog.raw_ids[i] for i in cands], k)
        rankings, raws, all_matches = [], [], []
        for order in orders:
            msgs = rerank_messages(self.catalog, hist, order, k, title_chars=cfg.title_chars,
                                   context=ctx)
            stats.requests += 1
            t1 = time.perf_counter()
            try:
                text = self.client.chat(msgs, schema=schema if cfg.structured else None,
                                        max_tokens=cfg.max_tokens or 12 * k + 24,
                                        temperature=cfg.temperature, seed=cfg.seed).text
            except LLMError as e:
                _log.warning("rerank request failed; keeping the model order (%s)", e)
                stats.failed_requests += 1
                raws.append("")
                all_matches.append([])
                continue
            finally:
                stats.llm_s += time.perf_counter() - t1
            raws.append(text)
            parsed = parse_list(text, "ranking")
            stats.format_errors += not parsed.well_formed
            stats.empty_outputs += not parsed.items
            e0 = self.matcher.encoder_s
            resolved = self.matcher.resolve([parsed.items], [order])
            stats.encoder_s += self.matcher.encoder_s - e0
            all_matches.append(resolved.matches(0))
            rankings.append(ground_ranking(resolved, stats))
        ranked = _borda(rankings, cands) if len(rankings) > 1 else (rankings or [[]])[0]
        final = ranked[:k]
        chosen = set(final)
        fill = [c for c in cands if c not in chosen][: k - len(final)]
        stats.filled += len(fill)
        final += fill
        stats.final_items += len(final)
        # The guarantee, checked on every call (cheap): only offered items, each once.
        if len(set(final)) != len(final) or not set(final) <= set(cands):
            raise AssertionError("rerank produced an ungrounded list")  # pragma: no cover
        stats.total_s += time.perf_counter() - t0
        with self._lock:
            self.stats_.add(stats)
        return RerankResult(final, cands, raws, all_matches, stats, ctx)

    def rerank(self, query: Histories, candidates: RecList) -> RecList:
        """Rerank the top-N candidates of every user in ``query``.

        Args:
            query: The users and their histories (rows align with ``candidates``).
            candidates: A model's recommendations, best first (``-1`` padding allowed).

        Returns:
            A :class:`RecList` of the same users with ``k`` items per row (``-1`` padded
            where a user had fewer candidates); scores are ``k - rank``.
        """
        if len(query) != len(candidates.users):
            raise ValueError("rerank: query and candidates have different numbers of users")
        k = self.k
        # One batched retrieval for all users rather than one per request.
        ctx = self.retriever.retrieve(query) if self.retriever is not None else None

        def one(row: int) -> RerankResult:
            lo, hi = query.indptr[row], query.indptr[row + 1]
            return self.rerank_one(query.items[lo:hi].tolist(), candidates.items[row].tolist(),
                                   user=int(query.users[row]),
                                   context=ctx.row(row) if ctx is not None else None)

        rows = range(len(query))
        if self.config.concurrency > 1 and len(query) > 1:
            with ThreadPoolExecutor(self.config.concurrency) as pool:
                results = list(pool.map(one, rows))
        else:
            results = [one(r) for r in rows]
        items = np.full((len(query), k), -1, dtype=np.int64)
        scores = np.full((len(query), k), -np.inf, dtype=np.float32)
        for r, res in enumerate(results):
            items[r, : len(res.items)] = res.items
            scores[r, : len(res.items)] = k - np.arange(len(res.items))
        self.results_ = results
        return RecList(np.asarray(candidates.users), items, scores)
