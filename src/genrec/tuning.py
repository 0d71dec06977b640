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
once, for the chosen configuration, by the ordinary :func:`genrec.experiment.fit_and_evaluate`.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genrec._io import atomic_write_text
from genrec.evaluation.evaluator import evaluate

if TYPE_CHECKING:  # genrec.config imports this module for TuneSection
    import optuna

    from genrec.config import ExperimentConfig
    from genrec.experiment import Prepared
    from genrec.models.base import ModelConfig

__all__ = ["CategoricalParam", "FloatParam", "IntParam", "ParamSpec", "TuneSection", "tune"]

_log = logging.getLogger(__name__)

Choice = bool | int | float | str | None


class FloatParam(BaseModel):
    """A float drawn from ``[low, high]`` (log-uniformly with ``log: true``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self


class IntParam(BaseModel):
    """An integer drawn from ``low, low + step, ..., high`` (log-uniformly with ``log``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log: true needs low >= 1 and step 1")
        return self


class CategoricalParam(BaseModel):
    """One of a list of values (the grid sampler tries each)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Choice]) -> list[Choice]:
        if len({(type(c), c) for c in v}) != len(v):
            raise ValueError(f"choices must be distinct, got {v}")
        return v


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class TuneSection(BaseModel):
    """The ``tune:`` section of an experiment config: what ``genrec tune`` searches.

    The direction is always to maximise ``protocol.valid_metric`` on the validation set.
    """

    model_config = ConfigDict(extra="forbid")

    n_trials: int = Field(20, ge=1)
    """Trials to run (the grid sampler stops earlier once every combination is tried)."""
    timeout_minutes: float | None = Field(None, gt=0)
    """Start no new trial after this many minutes (a running trial is not interrupted)."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """Optuna sampler; ``grid`` needs every parameter to be categorical."""
    seed: int = 42
    """Seed of the sampler."""
    space: dict[str, ParamSpec] = Field(min_length=1)
    """Dotted config key of the model (``models.0.l2``) -> its range or choices."""

    @field_validator("space")
    @classmethod
    def _model_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            parts = key.split(".")
            # Data, split and protocol are prepared once and shared by all trials, so only
            # the model's own settings may vary.
            if len(parts) < 3 or parts[:2] != ["models", "0"] or not all(parts):
                raise ValueError(f"{key!r}: a tuned key must be a setting of the model, "
                                 "e.g. models.0.l2 or models.0.train.lr")
            if parts[2] == "kind":
                raise ValueError(f"{key!r}: the model kind cannot be tuned")
        return v

    @model_validator(mode="after")
    def _grid_is_categorical(self) -> TuneSection:
        if self.sampler == "grid":
            other = [k for k, s in self.space.items() if not isinstance(s, CategoricalParam)]
            if other:
                raise ValueError(f"the grid sampler needs categorical parameters, not {other}")
        return self


def tune(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Search ``cfg.tune.space`` on validation, then fit and test the best configuration once.

    Data are loaded and split once. Each trial fits the model with the sampled values and
    scores it on the validation set only; a trial whose configuration is invalid or whose
    fit raises ``ValueError`` (or runs out of GPU memory) is recorded as failed and the search
    goes on. The best trial's configuration is then refitted with
    :func:`genrec.experiment.fit_and_evaluate` (valid and test). Written to ``cfg.output``:
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
    import optuna

    from genrec.experiment import fit_and_evaluate, prepare, results_document

    section = cfg.tune
    if section is None:
        raise ValueError("no tune section: add `tune: {space: {models.0.KEY: ...}}` to the config")
    if len(cfg.models) != 1:
        raise ValueError(f"genrec tune tunes one model per config, got {len(cfg.models)}: "
                         f"{[m.kind for m in cfg.models]}")
    base = cfg.model_dump(mode="json", exclude={"tune"})
    _check_space(base, section)

    data = prepare(cfg)
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
    _, row, _ = fit_and_evaluate(best_cfg.models[0], data, best_cfg, progress=progress)
    tuning = {"metric": vm, "sampler": section.sampler, "seed": section.seed,
              "space": {k: s.model_dump() for k, s in section.space.items()},
              "n_trials": len(records), "n_failed": len(records) - len(done),
              "best_trial": best["number"], "best_params": best["params"],
              "best_valid": best["valid"], "trials": records}
    results = results_document(cfg, data, [row], tuning=tuning)
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
    from genrec.config import ExperimentConfig, apply_overrides

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
    import optuna

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
    from genrec.experiment import fit_model, training_record

    model, fit_s = fit_model(mcfg, data, cfg)
    valid = evaluate(model, data.valid_set, cfg.protocol, item_popularity=popularity,
                     batch_size=cfg.eval_batch_size, progress=progress)
    info: dict[str, Any] = {"fit_seconds": round(fit_s, 3)}
    if (training := training_record(model)) is not None:  # torch models
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
    import json

    from genrec.experiment import format_results

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
