"""Robust parsing of LLM output: strict JSON first, then salvage.

Small or unconstrained models wrap JSON in prose, truncate it at ``max_tokens``, or answer
with a numbered list. :func:`parse_list` returns what can be recovered and says whether the
output was well-formed, so the format-error rate is measured, not hidden.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParsedList", "parse_json_object", "parse_list"]

_QUOTED = re.compile(r'"((?:[^"\\]|\\.){1,300})"')
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\(?\d{1,3}[.):])\s*(.+?)\s*$")
_DECODER = json.JSONDecoder()


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


def _embedded_json(text: str) -> Any:
    """The first JSON object or array that decodes, anywhere in ``text``."""
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = _DECODER.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(value, dict | list):
            return value
    return None


def parse_list(text: str, key: str = "ranking") -> ParsedList:
    """Recover a list of strings from ``text``.

    Tried in order: the whole text as JSON (``{key: [...]}`` or ``[...]``); the first JSON
    value embedded in prose; quoted strings after ``key`` in truncated JSON; quoted strings
    anywhere; numbered or bulleted lines; comma-separated values.

    Args:
        text: Raw model output.
        key: Key of the list in the expected object.

    Returns:
        The recovered entries and whether the output was well-formed.
    """
    stripped = text.strip()
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
    embedded = _embedded_json(stripped)
    if embedded is not None and (items := _from_value(embedded, key)) is not None:
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
    """The JSON object in ``text`` (whole or embedded), or None."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        value = _embedded_json(text)
    return value if isinstance(value, dict) else None
