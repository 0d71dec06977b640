"""The rating-prediction glue, written once: load, split into folds, fit, predict, RMSE/MAE,
write results. ``genrec rate`` and ``benchmarks/rating.py`` call :func:`run_rating`; the LLM
rating predictor plugs into it through ``on_fold`` (it lives above this layer).

``results.json`` shape::

    {"task": "rating", "protocol": {...}, "protocol_text": "...", "dataset": {...},
     "results": [{"model", "params", "rmse": {"mean", "std", "ci95", "per_fold"}, "mae": {...},
                  "fit_seconds", "folds": [{"fold", "rmse", "mae", "fit_seconds", ...}]}],
     "llm": {...} (when an LLM was run), "environment": {...}}
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from genrec._io import atomic_write_text
from genrec.config import RatingExperimentConfig
from genrec.data.interactions import Columns, Dataset, Interactions
from genrec.data.ratings import RatingSplit, holdout, official_folds, random_rating_split
from genrec.data.recipes import cache_dir
from genrec.evaluation.rating import RatingProtocol, mae, rmse, summarise_folds
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.base import RatingModel
from genrec.models.rating.registry import build_rating_model
from genrec.runs.experiment import environment, load_data, training_record
from genrec.runs.threads import apply_threads

__all__ = ["FoldHook", "fit_rating_model", "official_folds_dir", "format_rating_results", "predict_clipped",
           "rating_splits", "run_rating", "score_ratings"]

_log = logging.getLogger(__name__)

FoldHook = Callable[[RatingSplit, dict[str, RatingModel[Any]]], None]
"""Called after every fold with the split and the fitted models (e.g. the LLM comparison)."""


def official_folds_dir(cfg: RatingExperimentConfig) -> Path:
    """Where the ``u1.base`` ... files of ML-100K are: next to ``u.data``.

    Raises:
        FileNotFoundError: If no folder holds them.
    """
    d = cfg.dataset
    if d.path is not None:
        candidates = [Path(d.path) if Path(d.path).is_dir() else Path(d.path).parent]
    else:
        roots = [Path(d.data_dir)] if d.data_dir else (
            [Path(os.environ["GENREC_DATA_DIR"])] if os.environ.get("GENREC_DATA_DIR") else [])
        candidates = [r / "ml-100k" / "raw" for r in [*roots, cache_dir()]]
    for c in candidates:
        if (c / f"{cfg.protocol.folds[0]}.base").is_file():
            return c
    own = (" Other data has no official folds: use a seeded hold-out, --split random "
           "(protocol.split: random)." if d.path is not None else "")
    raise FileNotFoundError("split: official needs the GroupLens ML-100K fold files "
                            f"({cfg.protocol.folds[0]}.base, ...); looked in the folder(s) "
                            f"{', '.join(str(c.resolve()) for c in candidates)}"
                            f".{own}")


def rating_splits(cfg: RatingExperimentConfig, ds: Dataset) -> list[RatingSplit]:
    """The folds (``official``) or seeded hold-outs (``random``) of the protocol."""
    p = cfg.protocol
    if p.split == "official":
        return official_folds(ds, official_folds_dir(cfg), tuple(p.folds))
    return [random_rating_split(ds, p.test_ratio, seed) for seed in p.seeds]


def predict_clipped(model: RatingModel[Any], data: Interactions,
                    protocol: RatingProtocol) -> np.ndarray:
    """The model's predictions for the pairs of ``data``, clipped to the rating scale."""
    f = data.frame
    pred = model.predict(f[Columns.user].to_numpy(), f[Columns.item].to_numpy())
    return np.clip(pred, *protocol.clip) if protocol.clip is not None else pred


def score_ratings(model: RatingModel[Any], data: Interactions,
                  protocol: RatingProtocol) -> dict[str, float]:
    """RMSE and MAE of ``model`` on the ratings of ``data``."""
    pred = predict_clipped(model, data, protocol)
    true = data.frame[Columns.rating].to_numpy()
    return {"rmse": rmse(pred, true), "mae": mae(pred, true)}


def fit_rating_model(mcfg: ModelConfig, split: RatingSplit, ds: Dataset,
                     protocol: RatingProtocol, seed: int
                     ) -> tuple[RatingModel[Any], float, dict[str, float] | None]:
    """Fit one model on a fold's training part (minus the validation hold-out, which only
    drives early stopping); return it, the fit seconds and its validation scores."""
    train, valid = split.train, None
    if protocol.valid_ratio > 0:
        train, valid = holdout(split.train, protocol.valid_ratio, seed)

    def validate(model: Any) -> float:
        assert valid is not None
        return -score_ratings(model, valid, protocol)["rmse"]  # higher is better

    ctx = FitContext(items=ds.items, validate=validate if valid is not None else None,
                     valid_metric="-rmse", seed=seed, progress=False)
    model = build_rating_model(mcfg)
    t0 = time.perf_counter()
    model.fit(train, ctx)
    fit_s = time.perf_counter() - t0
    return model, fit_s, (score_ratings(model, valid, protocol) if valid is not None else None)


def run_rating(cfg: RatingExperimentConfig, *, on_fold: FoldHook | None = None,
               extra: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fit and evaluate every rating model of ``cfg`` on every fold; write the results.

    Args:
        cfg: The experiment.
        on_fold: Called after each fold with the fitted models.
        extra: Called at the end; its keys are added to ``results.json``.

    Returns:
        The ``results.json`` content.
    """
    apply_threads(None)  # $GENREC_THREADS, else the cores this process may use
    ds = load_data(cfg.dataset)
    splits = rating_splits(cfg, ds)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"),
                                                          sort_keys=False))
    seeds = [42] * len(splits) if cfg.protocol.split == "official" else cfg.protocol.seeds
    folds: dict[str, list[dict[str, Any]]] = {m.label: [] for m in cfg.models}
    for split, seed in zip(splits, seeds, strict=True):
        fitted: dict[str, RatingModel[Any]] = {}
        for mcfg in cfg.models:
            model, fit_s, valid = fit_rating_model(mcfg, split, ds, cfg.protocol, seed)
            t0 = time.perf_counter()
            test = score_ratings(model, split.test, cfg.protocol)
            row: dict[str, Any] = {"fold": split.name, "seed": seed,
                                   "train_ratings": len(split.train),
                                   "test_ratings": len(split.test),
                                   "fit_seconds": round(fit_s, 3),
                                   "predict_seconds": round(time.perf_counter() - t0, 3),
                                   "valid": valid, **{k: round(v, 6) for k, v in test.items()}}
            if (training := training_record(model)) is not None:
                row["training"] = {k: v for k, v in training.items() if k != "history"}
            if hasattr(model, "best_epoch_"):
                row["best_epoch"] = model.best_epoch_
            folds[mcfg.label].append(row)
            _log.info("%s %s: RMSE %.4f MAE %.4f (fit %.1fs)", split.name, mcfg.label,
                      test["rmse"], test["mae"], fit_s)
            if cfg.save_models:
                model.save(out / "models" / split.name / mcfg.label)
            fitted[mcfg.label] = model
        if on_fold is not None:
            on_fold(split, fitted)
    rows = [{**m.results_fields(mode="json"),
             "rmse": summarise_folds([f["rmse"] for f in folds[m.label]]),
             "mae": summarise_folds([f["mae"] for f in folds[m.label]]),
             "fit_seconds": round(float(np.mean([f["fit_seconds"] for f in folds[m.label]])), 3),
             "folds": folds[m.label]} for m in cfg.models]
    results = {"task": "rating", "protocol": cfg.protocol.model_dump(mode="json"),
               "protocol_text": cfg.protocol.describe(),
               "dataset": {"name": ds.name, "users": ds.n_users, "items": ds.n_items,
                           "ratings": len(ds.interactions)},
               "results": rows, **(extra() if extra is not None else {}),
               "environment": environment(None)}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "results.md", format_rating_results(results))
    return results


def format_rating_results(results: dict[str, Any]) -> str:
    """Markdown: the protocol line and one row per model (mean ± std over folds)."""
    lines = [f"# Rating prediction on {results['dataset']['name']}", "",
             f"Protocol: {results['protocol_text']}", "",
             "| model | RMSE (mean ± std) | 95% CI | MAE (mean ± std) | fit s / fold |",
             "|---|---|---|---|---|"]
    for r in results["results"]:
        lines.append(f"| {r['model']} | {r['rmse']['mean']:.4f} ± {r['rmse']['std']:.4f} | "
                     f"[{r['rmse']['ci95'][0]:.4f}, {r['rmse']['ci95'][1]:.4f}] | "
                     f"{r['mae']['mean']:.4f} ± {r['mae']['std']:.4f} | {r['fit_seconds']:.2f} |")
    if "llm" in results:
        llm = results["llm"]
        lines += ["", "## LLM rating predictor (same sampled test ratings)", "",
                  f"Folds {', '.join(f['fold'] for f in llm['folds'])}; a seeded sample of "
                  f"{llm['settings']['n_ratings']} test ratings per fold. CF rows: every "
                  "sampled rating. LLM rows: RMSE over the parsed answers only (failures are "
                  "counted, never filled in); the last column is the best CF model on exactly "
                  "those ratings.", "",
                  "| predictor | parsed / asked | parse failures | RMSE (parsed) | MAE (parsed) "
                  "| best CF on the same ratings |",
                  "|---|---|---|---|---|---|"]
        for r in llm["rows"]:
            rm = "–" if r["rmse"] is None else f"{r['rmse']:.4f}"
            ma = "–" if r["mae"] is None else f"{r['mae']:.4f}"
            cf = r.get("cf_on_parsed") or {}
            best = min(cf, key=cf.__getitem__) if cf else None
            ref = f"{best} {cf[best]:.4f}" if best is not None else "–"
            fail = (f"{r['parse_failures']} ({r['parse_failure_rate']:.0%})"
                    if "parse_failure_rate" in r else str(r["parse_failures"]))
            if r.get("request_failures"):
                fail += f"; {r['request_failures']} requests failed"
            lines.append(f"| {r['predictor']} | {r['parsed']} / {r['asked']} | {fail} | "
                         f"{rm} | {ma} | {ref if 'cf_on_parsed' in r else ''} |")
    return "\n".join(lines) + "\n"
