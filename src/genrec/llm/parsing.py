"""Robust parsing of LLM output: strict JSON first, then salvage.

Small or unconstrained models wrap JSON in prose, truncate it at ``max_tokens``, or answer
with a numbered list. :func:`parse_list` returns what can be recovered and says whether the
output was well-formed, so the format-error rate is measured, not hidden.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any

__all__ = ["ParsedList", "parse_json_object", "parse_list"]

_QUOTED = re.compile(r'"((?:[^"\\]|\\.){1,300})"')
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\(?\d{1,3}[.):])\s*(.+?)\s*$")
_DECODER = json.JSONDecoder()
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


@dataclass
class ParsedList:
    """Strings recovered from an output that should hold a list.

    Attributes:
        items: The entries, in output order (duplicates kept: they are counted later).
        well_formed: True when the output was valid JSON of the expected shape.
        error: Why it was not (None when well-formed).
    """

    items: list[str] = field(default_factory=list)
    well_formed: bool = True
    error: str | None = None


def _entry(x: Any) -> str | None:
    if isinstance(x, str):
        return x.strip() or None
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int | float):
        return str(int(x)) if float(x).is_integer() else str(x)
    if isinstance(x, dict):
        for k in ("id", "item", "item_id", "title", "name"):
            if k in x:
                return _entry(x[k])
    return None


def _from_value(value: Any, key: str) -> list[str] | None:
    if isinstance(value, dict):
        value = value.get(key, next((v for v in value.values() if isinstance(v, list)), None))
    if not isinstance(value, list):
        return None
    return [e for e in (_entry(x) for x in value) if e is not None]


def _strip_reasoning(text: str) -> str:
    """``text`` without ``<think>...</think>`` reasoning blocks (and anything before a lone
    closing ``</think>``, left when the chat template opened the block)."""
    text = _THINK.sub(" ", text)
    end = text.lower().rfind("</think>")
    return text[end + len("</think>"):] if end >= 0 else text


def _embedded_json(text: str) -> Iterator[Any]:
    """Every JSON object or array that decodes anywhere in ``text`` (nested ones included),
    in order of their opening bracket (lazily: a caller that wants the first stops there)."""
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = _DECODER.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(value, dict | list):
            yield value


def _best_embedded(text: str, key: str) -> list[str] | None:
    """The entries of the embedded JSON value most likely to be the answer.

    Prose often holds other bracketed values before or after the answer ("Of the [4]
    candidates ...", "(scores: [0.9, 0.5])"). Preferred: an object holding ``key``; then
    the value that yields the most entries; ties go to the last one (the answer usually
    ends the output).
    """
    best: tuple[bool, int, int] | None = None
    items: list[str] | None = None
    for pos, value in enumerate(_embedded_json(text)):
        got = _from_value(value, key)
        if got is None:
            continue
        rank = (isinstance(value, dict) and key in value, len(got), pos)
        if best is None or rank > best:
            best, items = rank, got
    return items


def parse_list(text: str, key: str = "ranking") -> ParsedList:
    """Recover a list of strings from ``text``.

    Reasoning blocks (``<think>...</think>``) are dropped first: an output that is valid JSON
    after them counts as well-formed. Then tried in order: the whole text as JSON
    (``{key: [...]}`` or ``[...]``); JSON embedded in prose (of all the embedded values, an
    object holding ``key``, else the one with the most entries, ties to the last); quoted
    strings after ``key`` in truncated JSON; quoted strings anywhere; numbered or bulleted
    lines; comma-separated values. Entries are returned as written: grounding them in the
    candidates is the caller's job.

    Args:
        text: Raw model output.
        key: Key of the list in the expected object.

    Returns:
        The recovered entries and whether the output was well-formed.
    """
    stripped = _strip_reasoning(text).strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped[4:] if stripped.lower().startswith("json") else stripped
    try:
        items = _from_value(json.loads(stripped), key)
    except ValueError:
        error = "invalid JSON"
    else:
        # valid JSON of the wrong shape: its strings are keys, not items
        return ParsedList(items) if items is not None else \
            ParsedList([], False, "valid JSON of the wrong shape")
    if (items := _best_embedded(stripped, key)) is not None:
        return ParsedList(items, False, f"{error}; JSON embedded in other text")
    at = stripped.find(f'"{key}"')
    tail = stripped[at + len(key) + 2:] if at >= 0 else stripped
    quoted = [m.group(1) for m in _QUOTED.finditer(tail)]
    quoted = [q.replace('\\"', '"').strip() for q in quoted if q.strip() and q.strip() != key]
    if quoted:
        return ParsedList(quoted, False, f"{error}; salvaged quoted strings")
    lines = [m.group(1) for ln in stripped.splitlines() if (m := _LIST_LINE.match(ln))]
    if lines:
        return ParsedList(lines, False, f"{error}; salvaged list lines")
    parts = [p.strip(" \t\n[]{}'\"") for p in stripped.split(",")]
    parts = [p for p in parts if p and len(p) <= 300]
    if len(parts) > 1:
        return ParsedList(parts, False, f"{error}; salvaged comma-separated values")
    return ParsedList([], False, f"{error}; nothing recoverable")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (whole, or the first one embedded in prose), or None.

    Reasoning blocks (``<think>...</think>``) are dropped first; bracketed lists in the prose
    ("option [1]") are skipped.
    """
    text = _strip_reasoning(text)
    try:
        value = json.loads(text.strip())
    except ValueError:
        value = next((v for v in _embedded_json(text) if isinstance(v, dict)), None)
    return value if isinstance(value, dict) else None
