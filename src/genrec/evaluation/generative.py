"""One call for every generative-risk metric of a model, and its place in a run's report.

:func:`generative_risks` resolves a model's outputs against the catalogue and returns the
headline rates; :func:`save_risks` adds them to ``holistic/risks.json`` of a run folder, which
``genrec report`` shows as the "Generative risks" table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genrec._io import atomic_write_text
from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.grounding import Explanation, explanation_grounding
from genrec.evaluation.risks import Policy, duplicate_rate, hallucination_rate, policy_violations

__all__ = ["generative_risks", "save_risks"]

_log = logging.getLogger(__name__)


def generative_risks(outputs: Sequence[Sequence[Any]], catalogue: Catalogue, *,
                     users: np.ndarray | None = None, histories: Histories | None = None,
                     policy: Policy | None = None,
                     explanations: Sequence[Explanation] | None = None,
                     kind: Literal["auto", "ids", "titles"] = "auto",
                     fuzzy_threshold: float = 0.9,
                     embedding_threshold: float = 0.85) -> dict[str, float]:
    """Hallucination, duplicate, policy and grounding rates of one model's outputs.

    Args:
        outputs: One list of emitted items (ids or titles) per user.
        catalogue: The item catalogue.
        users: Dense user id of each output (for seen-item policies and citations).
        histories: Histories of those users.
        policy: Rules to check; by default only ``exclude_seen`` when histories are given.
        explanations: Explanations to check for grounding, if the model gives any.
        kind: How to read the outputs, see :meth:`Catalogue.resolve`.
        fuzzy_threshold: Title matching threshold.
        embedding_threshold: Embedding matching threshold.

    Returns:
        ``hallucination_rate``, the share of each match kind (``match_<kind>``),
        ``duplicate_rate``, ``policy_violation_rate`` and, with explanations,
        ``grounding_rate``, ``contradiction_rate``, ``citation_rate`` and
        ``hallucinated_citation_rate``.

    Raises:
        ValueError: If explanations are given without histories.
    """
    kw: dict[str, Any] = dict(fuzzy_threshold=fuzzy_threshold,
                              embedding_threshold=embedding_threshold)
    resolved = catalogue.resolve(outputs, kind=kind, **kw)
    hall = hallucination_rate(resolved)
    out: dict[str, float] = {"hallucination_rate": hall["rate"],
                             "duplicate_rate": duplicate_rate(resolved)["rate"]}
    n = max(hall["n"], 1)
    out |= {f"match_{k}": v / n for k, v in hall["by_kind"].items() if k != "none"}
    have_hist = users is not None and histories is not None
    if policy is None:
        policy = Policy(exclude_seen=have_hist)
    out["policy_violation_rate"] = policy_violations(
        resolved, catalogue, policy, users=users, histories=histories)["rate"]
    if explanations:
        if histories is None:
            raise ValueError("explanation grounding needs the users' histories")
        g = explanation_grounding(explanations, catalogue, histories, **kw)
        out |= {k: g[k] for k in ("grounding_rate", "contradiction_rate", "citation_rate",
                                  "hallucinated_citation_rate")}
    return {k: float(v) for k, v in out.items()}


def save_risks(run_dir: str | Path, model: str, summary: dict[str, float]) -> Path:
    """Add one model's :func:`generative_risks` summary to ``holistic/risks.json``.

    Args:
        run_dir: A run folder.
        model: The model's name in the report.
        summary: Its risk rates.

    Returns:
        The path of ``risks.json``.
    """
    path = Path(run_dir) / "holistic" / "risks.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[model] = summary
    atomic_write_text(path, json.dumps(data, indent=2))
    return path
