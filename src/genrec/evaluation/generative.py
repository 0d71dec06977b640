"""Generative risks of a model, measured once and written into a run's report.

:func:`generative_risks` resolves any model's outputs (ids or titles) against the catalogue
and returns the rates of :mod:`genrec.evaluation.risks`; :func:`beam_risks` does it for the
beams of a model that decodes item codes (TIGER: anything with ``generate(histories,
beam_size=..., constrained=...)``), and :func:`decoding_risks` decodes and measures in one
call; :func:`save_risks` adds a summary to ``holistic/risks.json`` of a run folder, which the
report shows as its "Generative risks" section.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genrec._io import atomic_write_text, read_json
from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Catalogue, Matcher, Resolved
from genrec.evaluation.grounding import Explanation, GroundingChecker, explanation_grounding
from genrec.evaluation.risks import EntryCounts, Policy, policy_violations, share
from genrec.semantic_ids import BeamResult
from genrec.text.encoders import TextEncoder

__all__ = ["beam_risks", "decoding_risks", "generative_risks", "is_generative", "load_risks",
           "resolved_risks", "sample_users", "save_risks"]

_log = logging.getLogger(__name__)


def resolved_risks(resolved: Resolved, catalogue: Catalogue, *,
                   users: np.ndarray | None = None, histories: Histories | None = None,
                   policy: Policy | None = None, offered: bool = False) -> dict[str, float]:
    """The entry rates of resolved outputs (see :data:`~genrec.evaluation.risks.RATES`).

    Args:
        resolved: Resolved outputs.
        catalogue: The catalogue.
        users: Dense user id of each output (None: output ``i`` is history row ``i``).
        histories: Histories of those users (for seen-item policies).
        policy: Rules to check; by default only ``exclude_seen`` when histories are given.
        offered: The outputs were resolved against candidates (adds
            ``out_of_candidate_rate``).

    Returns:
        ``entries``, ``invalid_items`` (counts), ``hallucination_rate``, ``invalid_rate``,
        ``duplicate_rate``, ``policy_violation_rate``, ``out_of_candidate_rate`` with
        ``offered``, and the share of each match kind (``match_<kind>``) when
        entries were matched by more than their id.
    """
    counts = EntryCounts.from_resolved(resolved)
    rates = counts.rates()
    if not offered:
        rates.pop("out_of_candidate_rate")
    out: dict[str, float] = {"entries": counts.entries, "invalid_items": counts.invalid,
                             **rates}
    if any(v for k, v in counts.matched.items() if k != "id"):
        out |= {f"match_{k}": share(v, counts.entries) for k, v in counts.matched.items()}
    if policy is None:
        policy = Policy(exclude_seen=histories is not None)
    out["policy_violation_rate"] = policy_violations(
        resolved, catalogue, policy, users=users, histories=histories)["rate"]
    return {k: float(v) for k, v in out.items()}


def generative_risks(outputs: Sequence[Sequence[Any]], catalogue: Catalogue, *,
                     candidates: Sequence[Sequence[int]] | None = None,
                     users: np.ndarray | None = None, histories: Histories | None = None,
                     policy: Policy | None = None,
                     explanations: Sequence[Explanation] | None = None,
                     kind: Literal["auto", "ids", "titles"] = "auto",
                     encoder: TextEncoder | None = None, fuzzy_threshold: float = 0.9,
                     embedding_threshold: float = 0.85) -> dict[str, float]:
    """Every generative-risk rate of one model's outputs (and explanations).

    Args:
        outputs: One list of emitted items (ids or titles) per user.
        catalogue: The item catalogue.
        candidates: The items each output was offered (an LLM reranker's input), if any.
        users: Dense user id of each output (None: output ``i`` is history row ``i``).
        histories: Histories of those users (for seen-item policies and citations).
        policy: Rules to check; by default only ``exclude_seen`` when histories are given.
        explanations: Explanations to check for grounding, if the model gives any.
        kind: How to read the outputs, see :meth:`Matcher.resolve`.
        encoder: Text encoder of the embedding match step.
        fuzzy_threshold: Title matching threshold.
        embedding_threshold: Embedding matching threshold.

    Returns:
        :func:`resolved_risks` and, with explanations, the claim rates of
        :meth:`~genrec.evaluation.risks.ClaimCounts.rates`.

    Raises:
        ValueError: If explanations are given without histories.
    """
    matcher = Matcher(catalogue, encoder, fuzzy_threshold=fuzzy_threshold,
                      embedding_threshold=embedding_threshold)
    out = resolved_risks(matcher.resolve(outputs, candidates, kind=kind), catalogue,
                         users=users, histories=histories, policy=policy,
                         offered=candidates is not None)
    if explanations:
        if histories is None:
            raise ValueError("explanation grounding needs the users' histories")
        g = explanation_grounding(explanations, GroundingChecker(catalogue, matcher), histories)
        out |= {k: float(v) for k, v in g.items() if k.endswith("_rate")}
    return out


def is_generative(model: Any) -> bool:
    """Whether ``model`` decodes items itself: it has ``generate(histories, *, beam_size,
    constrained)`` returning beams (TIGER)."""
    gen = getattr(model, "generate", None)
    if not callable(gen):
        return False
    try:
        params = inspect.signature(gen).parameters
    except (TypeError, ValueError):
        return False
    return "constrained" in params and "beam_size" in params


def sample_users(histories: Histories, max_users: int | None, seed: int) -> Histories:
    """A seeded sample of ``max_users`` rows of ``histories`` (all of them when fewer), in
    their original order."""
    n = len(histories)
    if max_users is None or n <= max_users:
        return histories
    return histories.take(np.sort(np.random.default_rng(seed).choice(n, max_users,
                                                                      replace=False)))


def beam_risks(result: BeamResult, catalogue: Catalogue, *,
               histories: Histories | None = None) -> dict[str, float]:
    """The entry rates of beam-search results (TIGER's :meth:`generate`).

    Every non-empty beam (finite score) is one emitted entry; a beam whose code is no item
    (possible only without constraints) is a hallucinated entry. With ``histories`` (the
    users the beams were decoded for, in order), seen items are policy violations.

    Args:
        result: The beams, ``(B, W)``.
        catalogue: The catalogue.
        histories: The decoded users' histories.

    Returns:
        :func:`resolved_risks` plus ``users`` and ``beam_size``.
    """
    items = torch.as_tensor(result.items).cpu().numpy()
    live = torch.isfinite(torch.as_tensor(result.scores)).cpu().numpy()
    outputs = [row[ok].tolist() for row, ok in zip(items, live, strict=True)]
    resolved = Matcher(catalogue).resolve(outputs, kind="ids")
    out = resolved_risks(resolved, catalogue, histories=histories)
    return {"users": float(items.shape[0]), "beam_size": float(items.shape[1]), **out}


def decoding_risks(model: Any, histories: Histories, catalogue: Catalogue, *,
                   constrained: bool, beam_size: int | None = None) -> dict[str, float]:
    """Decode the next items of ``histories`` and measure them with :func:`beam_risks`.

    Args:
        model: A generative model (see :func:`is_generative`).
        histories: The users.
        catalogue: The catalogue.
        constrained: Decode on the trie of the catalogue's codes.
        beam_size: Beams per user (default: the model's).

    Returns:
        :func:`beam_risks` of the beams (seen items counted as policy violations).
    """
    res = model.generate(histories, beam_size=beam_size, constrained=constrained)
    return beam_risks(res, catalogue, histories=histories)


def save_risks(run_dir: str | Path, name: str, summary: dict[str, float], *,
               protocol: str = "") -> Path:
    """Add one summary (a model, or a model under one decoding) to ``holistic/risks.json``.

    Args:
        run_dir: A run folder.
        name: The row's name in the report, e.g. ``tiger (constrained)``.
        summary: Its rates and counts.
        protocol: How it was measured (users, sample, decoding), shown with the table.

    Returns:
        The path of ``risks.json``.
    """
    path = Path(run_dir) / "holistic" / "risks.json"
    data = load_risks(run_dir)
    data[name] = {"protocol": protocol, "rates": {k: float(v) for k, v in summary.items()}}
    atomic_write_text(path, json.dumps(data, indent=2))
    return path


def load_risks(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``holistic/risks.json`` of a run folder (empty when absent):
    ``name -> {"protocol": str, "rates": {rate: value}}``."""
    path = Path(run_dir) / "holistic" / "risks.json"
    return read_json(path) if path.is_file() else {}
