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
    "PROMPT_VERSIONS",
    "critique_messages",
    "critique_schema",
    "explain_messages",
    "explain_schema",
    "rating_messages",
    "rating_schema",
    "rerank_messages",
    "rerank_schema",
]

PROMPT_VERSIONS: dict[str, str] = {
    "rerank": "rerank/v1",
    "rerank_collab": "rerank-collab/v1",
    "explain": "explain/v1",
    "explain_collab": "explain-collab/v1",
    "critique": "critique/v1",
    "rating": "rating/v1",
    "rating_fewshot": "rating-fewshot/v1",
}
"""Version of every prompt, written next to the results it produced. A prompt's text never
changes under a version: a change gets a new version (and the old one stays reproducible from
git history)."""

RERANK_SYSTEM = (
    "You are a recommender system. Rank candidate items for a user from their history. "
    'Answer with JSON only, in the form {"ranking": ["<id>", ...]}, using only candidate ids, '
    "each at most once, best first."
)


def rerank_messages(catalog: Catalogue, history: Sequence[int], candidates: Sequence[int],
                    k: int, *, title_chars: int = 80,
                    context: Sequence[int] = ()) -> list[ChatMessage]:
    """Listwise rerank prompt: history titles (oldest first) and candidates as ``[id] title``.

    With ``context`` (collaborative retrieval, :mod:`genrec.llm.collab`), the titles of the
    items that users with similar histories chose are shown between the two
    (``rerank-collab/v1``); without it the prompt is ``rerank/v1``.
    """
    hist = "\n".join(f"- {catalog.title(i, title_chars)}" for i in history) or "- (none)"
    cands = "\n".join(f"[{catalog.raw_ids[i]}] {catalog.title(i, title_chars)}"
                      for i in candidates)
    similar = ("Users with histories like this user's also chose:\n"
               + "\n".join(f"- {catalog.title(i, title_chars)}" for i in context) + "\n\n"
               if context else "")
    user = (f"The user interacted with these items, oldest first:\n{hist}\n\n"
            f"{similar}Candidates:\n{cands}\n\n"
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
                     *, title_chars: int = 80,
                     support: tuple[int, int] | None = None) -> list[ChatMessage]:
    """Retrieval-augmented explanation prompt: the item's metadata and related history items.

    ``support = (s, n)`` adds the collaborative fact "s of the n users with the most similar
    histories chose it" (``explain-collab/v1``); without it the prompt is ``explain/v1``.
    """
    hist = "\n".join(f"- {catalog.describe(i, title_chars)}" for i in history) or "- (none)"
    social = (f"{support[0]} of the {support[1]} users with the most similar histories chose "
              "this item.\n" if support is not None and support[0] > 0 else "")
    user = (f"Recommended item: {catalog.describe(item, title_chars)}\n"
            f"Related items from the user's history:\n{hist}\n{social}\n"
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


RATING_SYSTEM = (
    "You predict how a user will rate a movie on a 1 to 5 star scale from the ratings they "
    'gave before. Answer with JSON only, in the form {"rating": <number>}.'
)


def _rated(catalog: Catalogue, rated: Sequence[tuple[int, float]], title_chars: int) -> str:
    return "\n".join(f"- {catalog.describe(i, title_chars)}: {r:g}" for i, r in rated) \
        or "- (none)"


def rating_messages(catalog: Catalogue, rated: Sequence[tuple[int, float]], item: int,
                    *, scale: tuple[float, float] = (1.0, 5.0), title_chars: int = 40,
                    examples: Sequence[tuple[Sequence[tuple[int, float]], int, float]] = ()
                    ) -> list[ChatMessage]:
    """Rating prompt: the user's past ``(item, rating)`` pairs and the item to rate.

    Zero-shot (``rating/v1``) without ``examples``; with them (``rating-fewshot/v1``) each
    ``(rated, item, rating)`` example of another user is one user/assistant exchange first.
    """
    lo, hi = scale

    def ask(r: Sequence[tuple[int, float]], i: int) -> str:
        return (f"Ratings the user gave ({lo:g} = worst, {hi:g} = best):\n"
                f"{_rated(catalog, r, title_chars)}\n\n"
                f"Movie to rate: {catalog.describe(i, title_chars)}\n"
                f'How will the user rate it? Answer as {{"rating": <number from {lo:g} to {hi:g}>}}.')

    msgs: list[ChatMessage] = [{"role": "system", "content": RATING_SYSTEM}]
    for r, i, y in examples:
        msgs += [{"role": "user", "content": ask(r, i)},
                 {"role": "assistant", "content": f'{{"rating": {y:g}}}'}]
    return [*msgs, {"role": "user", "content": ask(rated, item)}]


def rating_schema(scale: tuple[float, float] = (1.0, 5.0)) -> dict[str, Any]:
    """``{"rating": integer}`` bounded by the scale (an integer keeps a grammar finite)."""
    return {
        "type": "object",
        "properties": {"rating": {"type": "integer", "minimum": int(scale[0]),
                                  "maximum": int(scale[1])}},
        "required": ["rating"],
        "additionalProperties": False,
    }
