"""Explanation grounding and contradictions.

An explanation of a recommendation makes claims of two kinds:

* attribute claims, "this film is a *Comedy* from *1995*": ``{"genres": "Comedy",
  "year": 1995}``. A claim is ``grounded`` when the item's metadata holds that value,
  ``contradicted`` when the metadata holds the attribute with other values (the claimed
  genre is not among the item's genres, the year differs), and ``unsupported`` when the
  metadata lacks the attribute or the recommended item itself is not in the catalogue;
* citations, "because you watched *Heat*": each cited item is ``in_history``,
  ``outside_history`` (a real item the user never interacted with) or ``hallucinated``
  (no catalogue item).

Claims come either structured (:class:`Explanation` fields) or from free text through
:func:`extract_claims`, a deliberately simple extractor: known attribute values found as
whole words, and quoted titles as citations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Catalogue, normalize_title
from genrec.evaluation.risks import history_membership

__all__ = ["Explanation", "extract_claims", "explanation_grounding", "CLAIM_STATUSES",
           "CITATION_STATUSES"]

_log = logging.getLogger(__name__)

CLAIM_STATUSES = ("grounded", "contradicted", "unsupported")
CITATION_STATUSES = ("in_history", "outside_history", "hallucinated")

_QUOTED = re.compile(r"[\"“”«»]([^\"“”«»]{2,200})[\"“”«»]|'([^']{2,200})'")


class Explanation(BaseModel):
    """One explanation of one recommended item for one user."""

    model_config = ConfigDict(extra="forbid")

    user: int
    """Dense user id."""
    item: int | str
    """The recommended item: a dense id, raw id or title."""
    attributes: dict[str, Any] = Field(default_factory=dict)
    """Attribute claims: column -> value or list of values."""
    cited: list[int | str] = Field(default_factory=list)
    """History items the explanation cites (ids or titles)."""
    text: str | None = None
    """Free text; used when ``attributes`` and ``cited`` are both empty."""


def extract_claims(text: str, catalogue: Catalogue, attributes: Sequence[str] | None = None
                   ) -> tuple[dict[str, list[Any]], list[str]]:
    """Pull attribute claims and citations out of free text.

    Attribute values are the distinct values of the given metadata columns (list or string
    columns); a value is claimed when it occurs in the text as a whole word, ignoring case.
    Citations are quoted spans (``"..."``, ``'...'``, ``“...”``).

    Args:
        text: The explanation.
        catalogue: Gives the vocabulary of each attribute.
        attributes: Columns to look for (default: ``genres`` / ``categories`` / ``brand``
            where present).

    Returns:
        ``(attributes, cited_titles)``.
    """
    cols = list(attributes) if attributes is not None else [
        c for c in ("genres", "categories", "brand") if c in catalogue.items.columns]
    claims: dict[str, list[Any]] = {}
    for col in cols:
        s = catalogue.items[col]
        vocab = (s.explode() if isinstance(s.dtype, pl.List) else s).drop_nulls().unique()
        found = [v for v in vocab.cast(pl.String).to_list()
                 if v and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text, re.IGNORECASE)]
        if found:
            claims[col] = sorted(found)
    cited = [a or b for a, b in _QUOTED.findall(text)]
    return claims, cited


def _values(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple, set, np.ndarray, pl.Series)) else [v]


def _same(claimed: Any, actual: Any) -> bool:
    """Case- and punctuation-insensitive equality; numbers within 1e-6 relative."""
    try:
        return bool(np.isclose(float(claimed), float(actual), rtol=1e-6, atol=1e-9))
    except (TypeError, ValueError):
        return normalize_title(str(claimed)) == normalize_title(str(actual))


def _claim_status(claimed: Any, actual: Any) -> str:
    if actual is None or (isinstance(actual, float) and np.isnan(actual)):
        return "unsupported"
    actual_values = _values(actual)
    if not actual_values:
        return "unsupported"
    return "grounded" if any(_same(claimed, a) for a in actual_values) else "contradicted"


def explanation_grounding(explanations: Sequence[Explanation], catalogue: Catalogue,
                          histories: Histories, *, fuzzy_threshold: float = 0.9,
                          embedding_threshold: float = 0.85,
                          text_attributes: Sequence[str] | None = None) -> dict[str, Any]:
    """Check every claim and citation of every explanation against metadata and history.

    Args:
        explanations: The explanations.
        catalogue: Item metadata (and title matching for items given as titles).
        histories: Histories of the explained users.
        fuzzy_threshold: Title matching, see :meth:`Catalogue.match_titles`.
        embedding_threshold: Title matching, see :meth:`Catalogue.match_titles`.
        text_attributes: Columns :func:`extract_claims` looks for in free text.

    Returns:
        ``grounding_rate`` (grounded / all attribute claims), ``contradiction_rate``
        (contradicted / all attribute claims), ``unsupported_rate``, ``citation_rate``
        (cited items in the user's history / all citations), ``outside_history_rate``,
        ``hallucinated_citation_rate``, ``n_claims``, ``n_citations``, and ``claims`` /
        ``citations`` tables with one row per claim or citation and its status.
    """
    parsed: list[tuple[dict[str, Any], list[Any]]] = []
    for e in explanations:
        attrs, cited = dict(e.attributes), list(e.cited)
        if not attrs and not cited and e.text:
            found, quoted = extract_claims(e.text, catalogue, text_attributes)
            attrs, cited = dict(found), list(quoted)
        parsed.append((attrs, cited))
    kw: dict[str, Any] = dict(fuzzy_threshold=fuzzy_threshold,
                              embedding_threshold=embedding_threshold)
    rec = catalogue.resolve([[e.item] for e in explanations], **kw).flat_items()  # (E,)
    cit = catalogue.resolve([c for _, c in parsed], **kw)
    users = np.array([e.user for e in explanations], dtype=np.int64)
    in_hist = history_membership(cit.items, users, histories) if len(explanations) else []
    meta = catalogue.metadata(rec).to_dicts()  # one metadata lookup for all items

    claim_rows: list[dict[str, Any]] = []
    cite_rows: list[dict[str, Any]] = []
    for k, (e, (attrs, cited)) in enumerate(zip(explanations, parsed, strict=True)):
        for col, value in attrs.items():
            actual = meta[k].get(col) if rec[k] >= 0 else None
            for v in _values(value):
                claim_rows.append({"explanation": k, "user": e.user, "item": int(rec[k]),
                                   "attribute": col, "claimed": str(v),
                                   "actual": None if actual is None else str(actual),
                                   "status": _claim_status(v, actual)})
        for p, (item, hit) in enumerate(zip(cit.items[k], in_hist[k], strict=True)):
            status = "hallucinated" if item < 0 else ("in_history" if hit else "outside_history")
            cite_rows.append({"explanation": k, "user": e.user, "cited": str(cited[p]),
                              "item": int(item), "match": cit.kinds[k][p], "status": status})

    claims = pl.DataFrame(claim_rows, schema={
        "explanation": pl.Int64, "user": pl.Int64, "item": pl.Int64, "attribute": pl.String,
        "claimed": pl.String, "actual": pl.String, "status": pl.String})
    citations = pl.DataFrame(cite_rows, schema={
        "explanation": pl.Int64, "user": pl.Int64, "cited": pl.String, "item": pl.Int64,
        "match": pl.String, "status": pl.String})

    def share(table: pl.DataFrame, status: str) -> float:
        return float((table["status"] == status).mean()) if table.height else 0.0

    return {
        "grounding_rate": share(claims, "grounded"),
        "contradiction_rate": share(claims, "contradicted"),
        "unsupported_rate": share(claims, "unsupported"),
        "citation_rate": share(citations, "in_history"),
        "outside_history_rate": share(citations, "outside_history"),
        "hallucinated_citation_rate": share(citations, "hallucinated"),
        "n_claims": claims.height, "n_citations": citations.height,
        "claims": claims, "citations": citations,
    }
