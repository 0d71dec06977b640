"""Hyperparameter search with Optuna, selecting on the validation metric only.

The ``tune:`` section of an experiment config declares the search: a sampler, a trial budget
and a space whose keys are dotted config keys of the (single) model, e.g.::

    tune:
      n_trials: 20
      space:
        models.0.l2: {type: float, low: 10, high: 2000, log: true}
        models.0.train.lr: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
        models.0.n_layers: {type: categorical, choices: [1, 2, 3]}

Every trial fits on the training part and is scored on validation; the test set is evaluated
once, for the chosen configuration, by the ordinary :func:`genrec.runs.experiment.fit_and_evaluate`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import yaml
from pydantic import ValidationError

from genrec._io import atomic_write_text
from genrec.config import (
    CategoricalParam,
    ExperimentConfig,
    FloatParam,
    IntParam,
    TuneSection,
    apply_overrides,
)
from genrec.evaluation.results import format_results
from genrec.models.base import ModelConfig
from genrec.runs import experiment
from genrec.runs.experiment import Prepared

__all__ = ["tune"]

_log = logging.getLogger(__name__)


def tune(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Search ``cfg.tune.space`` on validation, then fit and test the best configuration once.

    Data are loaded and split once. Each trial fits the model with the sampled values and
    scores it on the validation set only; a trial whose configuration is invalid or whose
    fit raises ``ValueError`` (or runs out of GPU memory) is recorded as failed and the search
    goes on. The best trial's configuration is then refitted with
    :func:`genrec.runs.experiment.fit_and_evaluate` (valid and test). Written to ``cfg.output``:
    ``results.json`` (with a ``tuning`` block listing every trial), ``results.md`` and
    ``best.yaml``, the chosen experiment config without the ``tune`` section.

    Args:
        cfg: An experiment with exactly one model and a ``tune`` section.
        progress: Show evaluation progress bars.

    Returns:
        The ``results.json`` content.

    Raises:
        ValueError: Without a tune section, with other than one model, for a space key that
            is not a setting of the model or a value it rejects, or when every trial fails.
    """
    section = cfg.tune
    if section is None:
        raise ValueError("no tune section: add `tune: {space: {models.0.KEY: ...}}` to the config")
    if len(cfg.models) != 1:
        raise ValueError(f"genrec tune tunes one model per config, got {len(cfg.models)}: "
                         f"{[m.kind for m in cfg.models]}")
    base = cfg.model_dump(mode="json", exclude={"tune"})
    _check_space(base, section)

    data = experiment.prepare(cfg)
    popularity = data.split.train.item_counts()
    # Trials only compare on validation: nothing of theirs is saved, checkpointed or resumed.
    trial_base = base | {"checkpoints": False, "save_models": False, "resume": False}
    vm = cfg.protocol.valid_metric
    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        values = {key: _suggest(trial, key, spec) for key, spec in section.space.items()}
        record: dict[str, Any] = {"number": trial.number, "params": values}
        records.append(record)
        try:
            tcfg = _with_values(trial_base, values)
            valid, info = _fit_and_validate(tcfg.models[0], data, tcfg, popularity, progress)
            if not math.isfinite(valid):
                raise ValueError(f"valid {vm} is {valid}")
        except (ValueError, torch.OutOfMemoryError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
            record |= {"state": "failed", "error": _error_text(e)}
            _log.warning("trial %d failed (%s): %s", trial.number, _format_values(values),
                         record["error"])
            return float("nan")  # Optuna records a nan objective as a failed trial
        record |= {"state": "complete", "valid": valid} | info
        _log.info("trial %d/%d: %s -> valid %s=%.4f (fit %.2fs)", trial.number + 1,
                  section.n_trials, _format_values(values), vm, valid, info["fit_seconds"])
        return valid

    timeout = None if section.timeout_minutes is None else section.timeout_minutes * 60
    verbosity = optuna.logging.get_verbosity()
    # genrec logs every trial, with the cause of a failure; Optuna's warnings would only add
    # that the nan returned for it "is not acceptable".
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(direction="maximize", sampler=_sampler(section))
        study.optimize(objective, n_trials=section.n_trials, timeout=timeout,
                       gc_after_trial=True)
    finally:
        optuna.logging.set_verbosity(verbosity)

    done = [r for r in records if r["state"] == "complete"]
    if not done:
        raise ValueError(f"all {len(records)} trials failed; the first: {records[0]['error']}")
    best = records[study.best_trial.number]
    _log.info("best of %d trials: %s (valid %s=%.4f); refitting it for the test set",
              len(records), _format_values(best["params"]), vm, best["valid"])

    best_cfg = _with_values(base, best["params"])
    _, row, _ = experiment.fit_and_evaluate(best_cfg.models[0], data, best_cfg, progress=progress)
    tuning = {"metric": vm, "sampler": section.sampler, "seed": section.seed,
              "space": {k: s.model_dump() for k, s in section.space.items()},
              "n_trials": len(records), "n_failed": len(records) - len(done),
              "best_trial": best["number"], "best_params": best["params"],
              "best_valid": best["valid"], "trials": records}
    results = experiment.results_document(cfg, data, [row], tuning=tuning)
    _write(Path(cfg.output), results, best_cfg)
    return results


def _check_space(base: dict[str, Any], section: TuneSection) -> None:
    """Fail before any data are loaded if a key is not a setting of the model, or if the
    model rejects an end of a range or a choice."""
    for key, spec in section.space.items():
        ends = spec.choices if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
        for value in ends:
            try:
                _with_values(base, {key: value})
            except ValueError as e:
                raise ValueError(f"tune.space.{key}: {value!r} does not fit the config "
                                 f"({_error_text(e)})") from None


def _with_values(raw: dict[str, Any], values: dict[str, Any]) -> ExperimentConfig:
    """``raw`` with each dotted key set to its value, validated."""
    overrides = [f"{key}={_yaml_scalar(v)}" for key, v in values.items()]
    return ExperimentConfig.model_validate(apply_overrides(copy.deepcopy(raw), overrides))


def _yaml_scalar(value: Any) -> str:
    """The YAML text that parses back to ``value`` (``1e-05`` alone would read as a string)."""
    return yaml.safe_dump(value).removesuffix("\n...\n").strip()


def _suggest(trial: optuna.Trial, key: str, spec: FloatParam | IntParam | CategoricalParam
             ) -> Any:
    if isinstance(spec, FloatParam):
        return trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    if isinstance(spec, IntParam):
        return trial.suggest_int(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return trial.suggest_categorical(key, spec.choices)


def _sampler(section: TuneSection) -> optuna.samplers.BaseSampler:
    match section.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=section.seed)
        case "random":
            return optuna.samplers.RandomSampler(seed=section.seed)
        case "grid":
            grid = {k: s.choices for k, s in section.space.items()
                    if isinstance(s, CategoricalParam)}
            return optuna.samplers.GridSampler(grid, seed=section.seed)


def _fit_and_validate(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig,
                      popularity: np.ndarray, progress: bool) -> tuple[float, dict[str, Any]]:
    """Fit one trial's model and score it on the validation set only."""
    model, fit_s = experiment.fit_model(mcfg, data, cfg)
    valid = experiment.evaluate(model, data.valid_set, cfg.protocol.with_valid_metric(),
                                item_popularity=popularity, batch_size=cfg.eval_batch_size,
                                progress=progress)
    info: dict[str, Any] = {"fit_seconds": round(fit_s, 3)}
    if (training := experiment.training_record(model)) is not None:  # torch models
        info |= {k: training[k] for k in ("epochs_run", "best_epoch")}
    return float(valid.summary()[cfg.protocol.valid_metric]), info


def _error_text(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
    return str(e)


def _format_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _format_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_format_value(v)}" for k, v in values.items())


def _write(out: Path, results: dict[str, Any], best_cfg: ExperimentConfig) -> None:
    """results.json, results.md (with the trials) and best.yaml."""
    t = results["tuning"]
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "results.md", format_results(results) + _format_trials(t))
    # best.yaml is a recipe to keep: running it writes to its own folder, so it never
    # overwrites this tuning record.
    recipe = best_cfg.model_dump(mode="json", exclude={"tune"})
    recipe["output"] = str(out / "best")
    header = (f"# Chosen by genrec tune: trial {t['best_trial']} of {t['n_trials']} "
              f"({t['sampler']} sampler), valid {t['metric']}={t['best_valid']:.4f}\n"
              f"# {_format_values(t['best_params'])}\n")
    atomic_write_text(out / "best.yaml", header + yaml.safe_dump(recipe, sort_keys=False))


def _format_trials(t: dict[str, Any]) -> str:
    keys = list(t["space"])
    title = (f"## Tuning: {t['n_trials']} trials ({t['sampler']} sampler), selected on valid "
             f"{t['metric']}; test evaluated once, for trial {t['best_trial']}")
    lines = ["", title, "",
             "| trial | " + " | ".join(keys) + f" | valid {t['metric']} | fit s |",
             "|---" * (len(keys) + 3) + "|"]
    for r in t["trials"]:
        params = " | ".join(_format_value(r["params"][k]) for k in keys)
        score = f"{r['valid']:.4f}" if r["state"] == "complete" else "failed"
        fit = f"{r['fit_seconds']:.2f}" if "fit_seconds" in r else "-"
        mark = " (best)" if r["number"] == t["best_trial"] else ""
        lines.append(f"| {r['number']}{mark} | {params} | {score} | {fit} |")
    return "\n".join(lines) + "\n"
