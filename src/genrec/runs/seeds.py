"""Several seeds per model: mean, spread and intervals of every metric, and paired tests.

With ``seeds: N`` (``genrec run --seeds N``) every model is fitted and evaluated ``N`` times,
with the protocol seed ``protocol.seed + i`` for run ``i`` (initialisation, shuffling, dropout,
negative sampling, sampled candidates). The split stays the one ``protocol.split`` makes, so
every run sees the same train / valid / test users and items, and runs of different models
with the same seed index are paired.

A model's results row then reports, per metric:

* ``test`` / ``valid``: the mean over the seeds (the headline number);
* ``test_std``: the standard deviation over the seeds (``ddof=1``);
* ``test_ci95``: a 95% t-interval of that mean over the seeds;
* ``test_bootstrap_ci95``: a 95% percentile-bootstrap interval over the test users of the
  seed-averaged per-user metric (how much the number depends on which users were tested);
* ``per_seed``: each run's seed, valid and test metrics, fit seconds and training record.

Paired tests (t-test and Wilcoxon, Holm-corrected, :func:`genrec.evaluation.stats.
pairwise_significance`) compare the models on the seed-averaged per-user metrics of the same
test users. The first seed's model is saved as ``models/<name>`` (the model's ``name``, else
its kind; what ``genrec export`` reads), the others as ``models/<name>-seed-<s>`` (checkpoints
likewise).

A model that does not depend on the seed (``Recommender.seed_dependent`` is False: EASE,
ItemKNN, popularity, the graph heuristic) under a protocol whose evaluation does not either
(full ranking; sampled candidates are drawn with the seed) is fitted and evaluated **once**:
every seed would give the same model and the same numbers, so the other seeds' records repeat
the first one's, marked ``"same_as_seed"``, and no ``models/<name>-seed-<s>`` is written. Their
std is then 0, as it would be had they been refitted; the paired tests are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from genrec.config import ExperimentConfig
from genrec.evaluation.evaluator import EvalResult
from genrec.evaluation.stats import bootstrap_ci, pairwise_significance, t_interval
from genrec.models.base import ModelConfig
from genrec.models.registry import MODELS

if TYPE_CHECKING:  # experiment.py calls this module with its fit_and_evaluate
    from genrec.runs.experiment import Prepared

FitAndEvaluate = Callable[..., tuple[Any, dict[str, Any], EvalResult]]

__all__ = ["SIGNIFICANCE_METRICS", "fit_and_evaluate_seeds", "fits_once", "seed_row",
           "seed_significance"]

_log = logging.getLogger(__name__)

SIGNIFICANCE_METRICS = ("recall@10", "ndcg@10")
"""Test metrics compared between models (when the protocol measures them), besides the
protocol's validation metric."""


def fit_and_evaluate_seeds(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig,
                           fit_and_evaluate: FitAndEvaluate, *, progress: bool = False
                           ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Fit and evaluate ``mcfg`` once per seed of ``cfg`` (with ``fit_and_evaluate``, the
    glue's one fit-and-evaluate path); aggregate the rows.

    Returns:
        ``(row, per_user)``: the results row (see the module docstring) and the test metrics
        per user averaged over the seeds (for paired tests between models).
    """
    runs: list[dict[str, Any]] = []
    per_user: dict[str, list[np.ndarray]] = {}
    once = fits_once(mcfg, cfg)
    for i in range(cfg.seeds):
        seed = cfg.protocol.seed + i
        if once and i > 0:
            _log.info("%s: seed %d repeats seed %d (the model and the full-ranking evaluation "
                      "do not depend on the seed)", mcfg.label, seed, cfg.protocol.seed)
            runs.append(runs[0] | {"seed": seed, "same_as_seed": cfg.protocol.seed})
            for values in per_user.values():
                values.append(values[0])
            continue
        cfg_i = cfg.model_copy(update={"protocol": cfg.protocol.model_copy(update={"seed": seed})})
        name = mcfg.label if i == 0 else f"{mcfg.label}-seed-{seed}"
        _log.info("%s: seed %d (%d of %d)", mcfg.label, seed, i + 1, cfg.seeds)
        _, row, test = fit_and_evaluate(mcfg, data, cfg_i, progress=progress, name=name)
        runs.append({"seed": seed} | {k: row[k] for k in ("valid", "test", "fit_seconds",
                                                           "eval_seconds")}
                    | ({"training": row["training"]} if "training" in row else {}))
        for metric, values in test.per_user.items():
            per_user.setdefault(metric, []).append(values)
    mean_user = {m: np.mean(np.stack(v), axis=0) for m, v in per_user.items()}
    agg = seed_row(mcfg.label, runs)
    boot = {m: bootstrap_ci(mean_user[m], seed=cfg.protocol.seed) for m in agg["test"]}
    row = {**mcfg.results_fields(),
           **{k: v for k, v in agg.items() if k not in ("model", "per_seed")},
           "test_bootstrap_ci95": {m: [round(ci.low, 6), round(ci.high, 6)]
                                   for m, ci in boot.items()},
           "per_seed": runs}
    return row, mean_user


def fits_once(mcfg: ModelConfig, cfg: ExperimentConfig) -> bool:
    """Whether every seed of ``cfg`` would fit and evaluate ``mcfg`` to the same numbers: the
    model does not depend on the seed, and the protocol ranks all items (sampled candidates
    are drawn with the seed)."""
    return not MODELS[mcfg.kind].seed_dependent and cfg.protocol.candidates == "full"


def seed_row(model: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The results row of one model from its per-seed records (``seed``, ``valid``, ``test``,
    ``fit_seconds``, ``eval_seconds``): means, std over the seeds and their t-interval. The
    per-user bootstrap interval needs the per-user metrics and is added by the caller that has
    them (:func:`fit_and_evaluate_seeds`)."""
    metrics = list(runs[0]["test"])
    return {
        "model": model,
        "seeds": [r["seed"] for r in runs],
        "fit_seconds": round(float(np.mean([r["fit_seconds"] for r in runs])), 3),
        "eval_seconds": round(float(np.mean([r["eval_seconds"] for r in runs])), 3),
        "valid": {m: round(float(np.mean([r["valid"][m] for r in runs])), 6)
                  for m in runs[0]["valid"]},
        "test": {m: round(float(np.mean([r["test"][m] for r in runs])), 6) for m in metrics},
        "test_std": {m: round(float(np.std([r["test"][m] for r in runs], ddof=1)), 6)
                     if len(runs) > 1 else 0.0 for m in metrics},
        "test_ci95": {m: [round(x, 6) for x in t_interval([r["test"][m] for r in runs])]
                      for m in metrics},
        "per_seed": runs,
    }


def seed_significance(per_model: dict[str, dict[str, np.ndarray]], cfg: ExperimentConfig
                      ) -> list[dict[str, Any]]:
    """Paired tests between every pair of models on the seed-averaged per-user test metrics
    (Holm-corrected within each metric)."""
    if len(per_model) < 2:
        return []
    wanted = dict.fromkeys([cfg.protocol.valid_metric, *SIGNIFICANCE_METRICS])
    metrics = [m for m in wanted if all(m in v for v in per_model.values())]
    table = pairwise_significance(per_model, metrics)
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
            for r in table.to_dicts()]
