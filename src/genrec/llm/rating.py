"""An LLM as a rating predictor, compared with the rating models on the same test ratings.

The LLM is asked (zero- or few-shot, :func:`genrec.llm.prompts.rating_messages`) for one
number under a bounded JSON schema. An answer that is not a number is a *parse failure*: it is
counted and reported, and its rating is left out of the LLM's RMSE, never filled in with a
default. The CF models' RMSE is reported both on the whole sample and on exactly the ratings
the LLM answered, so the comparison is like for like.

:func:`run_llm_rating` is :func:`genrec.runs.rating.run_rating` with an ``on_fold`` hook that
runs the LLM on a seeded sample of each fold's test ratings.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from genrec.config import LLMRatingSection, RatingExperimentConfig
from genrec.data.interactions import Columns
from genrec.data.ratings import RatingSplit
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.rating import mae, rmse
from genrec.llm.client import ChatMessage, LLMClient, LLMError, OpenAIClient
from genrec.llm.parsing import parse_json_object
from genrec.llm.prompts import PROMPT_VERSIONS, rating_messages, rating_schema
from genrec.models.rating.base import RatingModel
from genrec.runs.experiment import load_data
from genrec.runs.rating import FoldHook, run_rating

__all__ = ["LLMRatingPredictor", "RatingAnswer", "llm_rating_hook", "parse_rating",
           "run_llm_rating"]

_log = logging.getLogger(__name__)

U, I, R, T = Columns.user, Columns.item, Columns.rating, Columns.timestamp
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class RatingAnswer:
    """One LLM answer: the rating (clipped to the scale) or None with the reason.

    Attributes:
        rating: The parsed, clipped rating; None for a parse failure or a failed request.
        raw: The completion text ("" when the request failed).
        error: Why ``rating`` is None (None when it is not).
        clipped: Whether the parsed number lay outside the scale and was clipped.
        request_failed: The request itself failed (endpoint down, timeout): no completion
            came back, so there was nothing to parse.
    """

    rating: float | None
    raw: str
    error: str | None = None
    clipped: bool = False
    request_failed: bool = False


def parse_rating(text: str, scale: tuple[float, float] = (1.0, 5.0)) -> RatingAnswer:
    """Read ``{"rating": x}`` (or a bare number) from ``text``; clip ``x`` to ``scale``.

    Anything else (no JSON object, no ``rating`` key, a non-numeric or non-finite value) is a
    parse failure: ``rating`` is None and ``error`` says why.
    """
    value: Any
    if (m := _NUMBER.match(text)) is not None:
        value = m.group(1)
    else:
        obj = parse_json_object(text)
        if obj is None:
            return RatingAnswer(None, text, "no JSON object")
        if "rating" not in obj:
            return RatingAnswer(None, text, "no 'rating' key")
        value = obj["rating"]
    if isinstance(value, bool):
        return RatingAnswer(None, text, f"rating is not a number: {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an integer too large for a float ({"rating": 10**400})
        return RatingAnswer(None, text, "rating is not finite")
    except (TypeError, ValueError):
        return RatingAnswer(None, text, f"rating is not a number: {str(value)[:40]!r}")
    if not math.isfinite(x):
        return RatingAnswer(None, text, "rating is not finite")
    lo, hi = scale
    y = min(max(x, lo), hi)
    return RatingAnswer(y, text, None, clipped=y != x)


class LLMRatingPredictor:
    """Asks an :class:`LLMClient` for ratings.

    Args:
        client: The chat model (never built here).
        catalog: Item text for the prompts.
        config: Prompt settings (history length, completion budget).
        scale: The rating scale; answers are clipped to it.
    """

    def __init__(self, client: LLMClient, catalog: Catalogue, config: LLMRatingSection,
                 scale: tuple[float, float] = (1.0, 5.0)) -> None:
        self.client = client
        self.catalog = catalog
        self.config = config
        self.scale = scale

    def messages(self, rated: list[tuple[int, float]], item: int,
                 examples: list[tuple[list[tuple[int, float]], int, float]]
                 ) -> list[ChatMessage]:
        """The prompt for one ``(user history, item)`` pair."""
        return rating_messages(self.catalog, rated[-self.config.history:], item,
                               scale=self.scale, examples=examples)

    def ask(self, prompts: list[list[ChatMessage]]) -> list[RatingAnswer]:
        """One answer per prompt (a failed request is a failure with its error)."""
        kw = {"schema": rating_schema(self.scale), "max_tokens": self.config.max_tokens,
              "temperature": 0.0, "seed": 0}
        requests = [{"messages": p, **kw} for p in prompts]
        outs: list[Any]
        if isinstance(self.client, OpenAIClient):  # concurrent, errors returned in place
            outs = self.client.chat_many(requests)
        else:
            outs = []
            for r in requests:
                try:
                    outs.append(self.client.chat(**r))
                except LLMError as e:  # counted as a failure, never filled in
                    outs.append(e)
        return [RatingAnswer(None, "", f"request failed: {o}", request_failed=True)
                if isinstance(o, LLMError) else parse_rating(o.text, self.scale) for o in outs]


def _histories(train: pl.DataFrame) -> dict[int, list[tuple[int, float]]]:
    """Each user's training ``(item, rating)`` pairs, oldest first."""
    order = [T, I] if T in train.columns else [I]
    grouped = (train.sort([U, *order]).group_by(U, maintain_order=True)
               .agg(pl.col(I), pl.col(R)))
    return {int(u): list(zip(map(int, its), map(float, rs), strict=True))
            for u, its, rs in grouped.iter_rows()}


def _examples(hist: dict[int, list[tuple[int, float]]], user: int, n: int, length: int,
              rng: np.random.Generator) -> list[tuple[list[tuple[int, float]], int, float]]:
    """``n`` worked examples from other users' *training* ratings: a short history and the
    next rating of that user (never a test rating)."""
    others = [u for u in hist if u != user and len(hist[u]) > length]
    out = []
    for u in rng.choice(others, size=min(n, len(others)), replace=False):
        h = hist[int(u)]
        cut = int(rng.integers(length, len(h)))
        out.append((h[cut - length:cut], h[cut][0], h[cut][1]))
    return out


def llm_rating_hook(client: LLMClient, catalog: Catalogue, cfg: RatingExperimentConfig,
                    sink: list[dict[str, Any]], *, label: str = "llm") -> FoldHook:
    """An ``on_fold`` hook for :func:`run_rating` that runs the LLM on the first
    ``cfg.llm.folds`` folds and appends one record per fold to ``sink``.

    Args:
        client: The chat model.
        catalog: Item text.
        cfg: The experiment (its ``llm`` section and protocol clip).
        sink: Receives ``{"fold", "sample", "rows", "failures"}`` per fold.
        label: Name prefix of the LLM rows (e.g. the model's name).

    Returns:
        The hook.
    """
    scale = cfg.protocol.clip or (1.0, 5.0)
    predictor = LLMRatingPredictor(client, catalog, cfg.llm, scale)
    fold_no = [0]

    def hook(split: RatingSplit, fitted: dict[str, RatingModel[Any]]) -> None:
        fold_no[0] += 1
        if fold_no[0] > cfg.llm.folds:
            return
        seed = 1000 + fold_no[0]
        rng = np.random.default_rng(seed)
        test = split.test.frame
        rows_idx = np.sort(rng.choice(len(test), size=min(cfg.llm.n_ratings, len(test)),
                                      replace=False))
        sample = test[rows_idx.tolist()]
        users, items = sample[U].to_numpy(), sample[I].to_numpy()
        true = sample[R].to_numpy().astype(np.float64)
        hist = _histories(split.train.frame)
        cf = {k: np.clip(m.predict(users, items), *scale).astype(np.float64)
              for k, m in fitted.items()}
        rows: list[dict[str, Any]] = []
        for k, pred in cf.items():
            rows.append({"predictor": k, "asked": len(true), "parsed": len(true),
                         "parse_failures": 0, "rmse": rmse(pred, true), "mae": mae(pred, true)})
        failures: dict[str, list[dict[str, Any]]] = {}
        for shots in cfg.llm.shots:
            prompts = [predictor.messages(hist.get(int(u), []), int(i),
                                          _examples(hist, int(u), shots, 3, rng))
                       for u, i in zip(users, items, strict=True)]
            answers = predictor.ask(prompts)
            ok = np.array([a.rating is not None for a in answers])
            got = np.array([a.rating if a.rating is not None else np.nan for a in answers])
            name = f"{label} {'zero-shot' if shots == 0 else f'{shots}-shot'}"
            # A request that failed (endpoint down, timeout) is not an answer that failed to
            # parse: counted apart, and said out loud.
            failed = [a.error for a in answers if a.request_failed]
            n_req = len(failed)
            if failed:
                _log.warning("%s %s: %d of %d requests failed (first: %s)", split.name, name,
                             n_req, len(answers), failed[0])
            row: dict[str, Any] = {
                "predictor": name, "prompt": PROMPT_VERSIONS[
                    "rating" if shots == 0 else "rating_fewshot"],
                "shots": shots, "asked": len(answers), "parsed": int(ok.sum()),
                "request_failures": n_req,
                "parse_failures": int((~ok).sum()) - n_req,
                "parse_failure_rate": round(float((~ok).sum() - n_req) / len(answers), 4),
                "clipped": int(sum(a.clipped for a in answers)),
                "rmse": rmse(got[ok], true[ok]) if ok.any() else None,
                "mae": mae(got[ok], true[ok]) if ok.any() else None,
                # the CF models on exactly the ratings the LLM answered
                "cf_on_parsed": {k: rmse(p[ok], true[ok]) for k, p in cf.items()}
                if ok.any() else {}}
            rows.append(row)
            failures[name] = [{"raw": a.raw[:200], "error": a.error}
                              for a in answers if a.rating is None][:5]
            _log.info("%s %s: %d/%d parsed, RMSE %s", split.name, name, row["parsed"],
                      row["asked"], "–" if row["rmse"] is None else f"{row['rmse']:.4f}")
        sink.append({"fold": split.name, "sample": {"n": len(true), "seed": seed},
                     "rows": rows, "failure_examples": failures})

    return hook


def _pooled(folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows over all LLM folds: counts summed, RMSE/MAE averaged over folds."""
    out = []
    for j, first in enumerate(folds[0]["rows"]):
        rows = [f["rows"][j] for f in folds]
        row = dict(first)
        for key in ("asked", "parsed", "request_failures", "parse_failures", "clipped"):
            if key in first:
                row[key] = sum(r[key] for r in rows)
        if "parse_failure_rate" in first:
            row["parse_failure_rate"] = round(row["parse_failures"] / row["asked"], 4)
        for key in ("rmse", "mae"):
            vals = [r[key] for r in rows if r[key] is not None]
            row[key] = float(np.mean(vals)) if vals else None
        if "cf_on_parsed" in first:
            row["cf_on_parsed"] = {k: float(np.mean([r["cf_on_parsed"][k] for r in rows
                                                     if k in r["cf_on_parsed"]]))
                                   for k in first["cf_on_parsed"]}
        out.append(row)
    return out


def run_llm_rating(cfg: RatingExperimentConfig, client: LLMClient, *,
                   label: str = "llm") -> dict[str, Any]:
    """:func:`run_rating` plus the LLM on a seeded sample of the first ``cfg.llm.folds`` folds.

    Returns:
        The ``results.json`` content, with an ``llm`` section (``rows``: the CF models and
        each prompt variant on the same sampled ratings; ``folds``: per fold).
    """
    catalog = Catalogue.from_dataset(load_data(cfg.dataset))
    sink: list[dict[str, Any]] = []
    hook = llm_rating_hook(client, catalog, cfg, sink, label=label)

    def extra() -> dict[str, Any]:
        if not sink:
            return {}
        return {"llm": {"model": label, "settings": cfg.llm.model_dump(mode="json"),
                        "prompts": {k: PROMPT_VERSIONS[k] for k in ("rating", "rating_fewshot")},
                        "usage": _usage(client), "rows": _pooled(sink), "folds": sink}}

    return run_rating(cfg, on_fold=hook, extra=extra)


def _usage(client: LLMClient) -> dict[str, Any] | None:
    return client.usage.to_dict() if isinstance(client, OpenAIClient) else None
