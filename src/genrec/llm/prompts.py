"""Prompts and bounded JSON schemas of the LLM layer (one function per task).

Every schema is bounded (``enum``, ``maxItems``, ``maxLength``): an unbounded schema lets a
grammar-constrained small model run to ``max_tokens`` and emit invalid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genrec.evaluation.catalogue import Catalogue
from genrec.llm.client import ChatMessage

__all__ = [
    "critique_messages",
    "critique_schema",
    "explain_messages",
    "explain_schema",
    "rerank_messages",
    "rerank_schema",
]

RERANK_SYSTEM = (
    "You are a recommender system. Rank candidate items for a user from their history. "
    'Answer with JSON only, in the form {"ranking": ["<id>", ...]}, using only candidate ids, '
    "each at most once, best first."
)


def rerank_messages(catalog: Catalogue, history: Sequence[int], candidates: Sequence[int],
                    k: int, *, title_chars: int = 80) -> list[ChatMessage]:
    """Listwise rerank prompt: history titles (oldest first) and candidates as ``[id] title``."""
    hist = "\n".join(f"- {catalog.title(i, title_chars)}" for i in history) or "- (none)"
    cands = "\n".join(f"[{catalog.raw_ids[i]}] {catalog.title(i, title_chars)}"
                      for i in candidates)
    user = (f"The user interacted with these items, oldest first:\n{hist}\n\n"
            f"Candidates:\n{cands}\n\n"
            f"Return the ids of the {k} candidates the user is most likely to want next, best "
            f'first, as {{"ranking": ["<id>", ...]}}.')
    return [{"role": "system", "content": RERANK_SYSTEM}, {"role": "user", "content": user}]


def rerank_schema(ids: Sequence[str], k: int) -> dict[str, Any]:
    """``{"ranking": [id, ...]}`` with ids from ``ids`` and at most ``k`` entries."""
    return {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": list(ids)},
                                   "minItems": 1, "maxItems": k}},
        "required": ["ranking"],
        "additionalProperties": False,
    }


EXPLAIN_SYSTEM = (
    "You explain recommendations. Use only the facts given: the item's metadata and the "
    "user's history. Never mention other products, brands or features. One or two sentences."
)


def explain_messages(catalog: Catalogue, item: int, history: Sequence[int],
                     *, title_chars: int = 80) -> list[ChatMessage]:
    """Retrieval-augmented explanation prompt: the item's metadata and related history items."""
    hist = "\n".join(f"- {catalog.describe(i, title_chars)}" for i in history) or "- (none)"
    user = (f"Recommended item: {catalog.describe(item, title_chars)}\n"
            f"Related items from the user's history:\n{hist}\n\n"
            'Explain why the item suits the user, as {"explanation": "..."}.')
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def explain_schema(max_chars: int = 300) -> dict[str, Any]:
    """``{"explanation": str}`` of at most ``max_chars`` characters."""
    return {
        "type": "object",
        "properties": {"explanation": {"type": "string", "minLength": 1,
                                       "maxLength": max_chars}},
        "required": ["explanation"],
        "additionalProperties": False,
    }


CRITIQUE_SYSTEM = (
    "You are a shopper talking to a recommender. Say in one short sentence what you want, "
    "using the facts given. Do not name a specific product."
)


def critique_messages(like: Sequence[str], avoid: Sequence[str],
                      shown: Sequence[str]) -> list[ChatMessage]:
    """Prompt of an LLM-phrased simulated-user critique."""
    lines = [f"Items you were shown: {'; '.join(shown) or '(none)'}"]
    if like:
        lines.append(f"You want: {', '.join(like)}")
    if avoid:
        lines.append(f"You do not want: {', '.join(avoid)}")
    lines.append('Reply as {"utterance": "..."}.')
    return [{"role": "system", "content": CRITIQUE_SYSTEM},
            {"role": "user", "content": "\n".join(lines)}]


def critique_schema(max_chars: int = 160) -> dict[str, Any]:
    """``{"utterance": str}`` of at most ``max_chars`` characters."""
    return {
        "type": "object",
        "properties": {"utterance": {"type": "string", "minLength": 1, "maxLength": max_chars}},
        "required": ["utterance"],
        "additionalProperties": False,
    }
