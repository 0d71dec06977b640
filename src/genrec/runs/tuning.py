"""Hyperparameter search with Optuna, selecting on the validation metric only.

The ``tune:`` section of an experiment config declares the search: a sampler, a trial budget
and a space whose keys are dotted config keys of the (single) model, e.g.::

    tune:
      n_trials: 20
      pruner: median          # or halving, none
      workers: 2              # trials in 2 processes at once
      space:
        models.0.l2: {type: float, low: 10, high: 2000, log: true}
        models.0.train.lr: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
        models.0.n_layers: {type: categorical, choices: [1, 2, 3]}

Every trial fits on the training part and is scored on validation; a model that validates
during training (the torch models) reports each validation round to the pruner, which may
stop it early. The test set is evaluated once, for the chosen configuration, by the ordinary
:func:`genrec.runs.experiment.fit_and_evaluate`. The study is stored in a journal file
(:mod:`genrec.runs.tuning_study`): rerunning the command continues it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import yaml
from optuna.trial import TrialState
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
from genrec.models.base import ModelConfig, Recommender
from genrec.models.registry import build_model
from genrec.runs import experiment
from genrec.runs.experiment import Prepared
from genrec.runs.threads import resolve_threads
from genrec.runs.tuning_study import (
    finished_count,
    mark_interrupted,
    open_study,
    pruner,
    sampler,
    spawn_workers,
    storage_path,
    study_identity,
    study_lock,
    worker_share,
)

__all__ = ["run_worker", "tune"]

_log = logging.getLogger(__name__)

RECORD_EVERY = 30.0
"""Seconds between two writes of the study's spent wall time while a run goes: a run that is
killed (SIGTERM, SIGKILL, a lost machine) has still used that much of ``tune.timeout_minutes``."""

_TRIAL_INFO = ("fit_seconds", "epochs_run", "best_epoch", "pruned_at_round", "worker", "error")
"""User attributes of a stored trial copied into its ``results.json`` record."""


def tune(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Search ``cfg.tune.space`` on validation, then fit and test the best configuration once.

    Data are loaded and split once (``tune.workers`` processes reuse the split written to
    ``cfg.output``). Each trial fits the model with the sampled values and scores it on the
    validation set only; a torch model reports every validation round to ``tune.pruner``,
    which may stop the trial (recorded as ``pruned``). A trial whose configuration is invalid
    or whose fit raises ``ValueError`` (or runs out of GPU memory) is recorded as failed and
    the search goes on. The study is kept in ``tune.storage``: a rerun continues it (up to
    ``n_trials`` finished trials and ``timeout_minutes`` in all) and refuses another search.
    The best trial's configuration is then refitted with
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
            is not a setting of the model or a value it rejects, for a stored study of
            another search, or when no trial completes.
        RuntimeError: If another ``genrec tune`` runs the same study, or a worker process
            dies (the study keeps its finished trials; rerun to continue).
    """
    section = cfg.tune
    if section is None:
        raise ValueError("no tune section: add `tune: {space: {models.0.KEY: ...}}` to the config")
    if len(cfg.models) != 1:
        raise ValueError(f"genrec tune tunes one model per config, got {len(cfg.models)}: "
                         f"{[m.label for m in cfg.models]}")
    base = cfg.model_dump(mode="json", exclude={"tune"})
    _check_space(base, section)

    data = experiment.prepare(cfg, write=False)
    path = storage_path(cfg)
    # Trials only compare on validation: nothing of theirs is saved, checkpointed or resumed.
    trial_base = base | {"checkpoints": False, "save_models": False, "resume": False}
    verbosity = optuna.logging.get_verbosity()
    # genrec logs every trial, with the cause of a failure; Optuna's warnings would only add
    # that the nan returned for it "is not acceptable".
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with study_lock(path):
            study = open_study(path, study_identity(cfg, data.identity),
                               sampler=optuna.samplers.RandomSampler(), pruner=pruner(section))
            # Written once the study is known to be this one: a refused rerun leaves the
            # folder as the study's own run wrote it.
            experiment.write_prepared(cfg, data)
            run = _run_study(study, cfg, trial_base, data, progress)
    finally:
        optuna.logging.set_verbosity(verbosity)

    records = _records(study, list(section.space))
    done = [r for r in records if r["state"] == "complete"]
    if not done:
        first = next((r["error"] for r in records if "error" in r), "no trial completed")
        raise ValueError(f"none of the {len(records)} trials completed "
                         f"({sum(r['state'] == 'pruned' for r in records)} pruned); "
                         f"the first error: {first}")
    best = records[study.best_trial.number]
    vm = cfg.protocol.valid_metric
    _log.info("best of %d trials: %s (valid %s=%.4f); refitting it for the test set",
              len(records), _format_values(best["params"]), vm, best["valid"])

    best_cfg = _with_values(base, best["params"])
    _, row, _ = experiment.fit_and_evaluate(best_cfg.models[0], data, best_cfg, progress=progress)
    count = {s: sum(r["state"] == s for r in records) for s in ("failed", "pruned")}
    tuning = {"metric": vm, "sampler": section.sampler, "seed": section.seed,
              "pruner": section.pruner, "workers": section.workers, "storage": str(path),
              "timeout_minutes": section.timeout_minutes,
              "space": {k: s.model_dump() for k, s in section.space.items()},
              "n_trials": len(records), "n_failed": count["failed"],
              "n_pruned": count["pruned"], **run,
              "best_trial": best["number"], "best_params": best["params"],
              "best_valid": best["valid"], "trials": records}
    # The refit is one fit on the protocol seed, whatever ``seeds`` the recipe keeps for
    # `genrec run` (best.yaml keeps it); the protocol text says so.
    results = experiment.results_document(cfg.model_copy(update={"seeds": 1}), data, [row],
                                          tuning=tuning)
    _write(Path(cfg.output), results, best_cfg)
    return results


def _run_study(study: optuna.Study, cfg: ExperimentConfig, trial_base: dict[str, Any],
               data: Prepared, progress: bool) -> dict[str, Any]:
    """Run the rest of the study's budget, in this process or in ``tune.workers`` spawned
    ones; return what this run did (for the ``tuning`` block)."""
    section = cfg.tune
    assert section is not None
    interrupted = mark_interrupted(study)
    n_before, finished = len(study.trials), finished_count(study)
    remaining = max(0, section.n_trials - finished)
    spent = float(study.user_attrs.get("wall_seconds", 0.0))
    time_left = None if section.timeout_minutes is None else section.timeout_minutes * 60 - spent
    if n_before:
        _log.info("continuing the study in %s: %d trials finished (%d interrupted), %d to run"
                  "%s", storage_path(cfg), finished, interrupted, remaining,
                  "" if time_left is None else f", {max(0.0, time_left) / 60:.1f} minutes left")
    if time_left is not None and time_left <= 0 and remaining:
        _log.warning("the study's time budget (%.1f minutes) is spent: no new trial; raise "
                     "tune.timeout_minutes to continue it", section.timeout_minutes)
        remaining = 0
    shares = worker_share(remaining, section.workers)
    with _recording_wall_time(study, spent) as elapsed:
        if section.workers == 1 and remaining:
            study.sampler = sampler(section, n_before=n_before, worker=0, workers=1)
            _run_trials(study, trial_base, section, data, remaining, time_left, progress,
                        worker=0)
        elif remaining:
            threads = max(1, resolve_threads(cfg.threads)[0] // section.workers)
            worker_cfg = trial_base | {"threads": threads,
                                       "split_path": cfg.split_path
                                       or str(Path(cfg.output) / "split")}
            level = logging.getLogger().getEffectiveLevel()
            _log.info("%d workers, %d threads each, run %s trials", section.workers, threads,
                      "+".join(map(str, shares)))
            jobs = [{"cfg": worker_cfg, "tune": section.model_dump(mode="json"),
                     "storage": str(storage_path(cfg)), "worker": i, "n_trials": n,
                     "timeout": time_left, "n_before": n_before, "log_level": level}
                    for i, n in enumerate(shares) if n]
            codes = spawn_workers(jobs)
            lost = mark_interrupted(study)
            if any(codes):
                raise RuntimeError(f"tuning worker(s) failed (exit codes {codes}; {lost} trial"
                                   "(s) interrupted); see the log above. Finished trials are "
                                   "kept: rerun the same command to continue the study.")
    took = elapsed()
    return {"continued_from": finished, "n_interrupted": interrupted,
            "run_seconds": round(took, 3), "wall_seconds": round(spent + took, 3)}


@contextlib.contextmanager
def _recording_wall_time(study: optuna.Study, spent: float) -> Iterator[Callable[[], float]]:
    """Keep ``wall_seconds`` (``spent`` before this run plus this run's time) in the study
    up to date: every :data:`RECORD_EVERY` seconds from a background thread, and once more
    on the way out. Yields the seconds this run has taken so far (frozen at the exit), so a
    run that is killed loses at most one interval of its budget's accounting, and the rerun
    of the same command does not get a fresh ``tune.timeout_minutes``."""
    t0 = time.perf_counter()
    took: list[float] = []
    stop = threading.Event()

    def elapsed() -> float:
        return took[0] if took else time.perf_counter() - t0

    def record() -> None:
        study.set_user_attr("wall_seconds", round(spent + elapsed(), 3))

    def beat() -> None:
        while not stop.wait(RECORD_EVERY):
            try:
                record()
            except Exception as e:  # a failed write costs accounting, never the study
                _log.warning("could not record the study's wall time: %s", e)

    thread = threading.Thread(target=beat, name="genrec-tune-wall-clock", daemon=True)
    thread.start()
    try:
        yield elapsed
    finally:
        stop.set()
        thread.join()
        took.append(time.perf_counter() - t0)
        record()


def run_worker(job: dict[str, Any]) -> None:
    """One tuning worker process (:mod:`genrec.runs.tuning_worker`): reload the data and the
    split, join the stored study and run its share of trials.

    Args:
        job: ``cfg`` (the trials' experiment, as a dict, with ``split_path`` and ``threads``
            set), ``tune`` (the section), ``storage``, ``worker`` (its index), ``n_trials``,
            ``timeout`` (seconds or None), ``n_before`` (trials in the study when the run
            began) and ``log_level``.
    """
    worker = job["worker"]
    logging.basicConfig(level=job["log_level"], format=f"%(asctime)s worker {worker} "
                        "%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    section = TuneSection.model_validate(job["tune"])
    data = experiment.prepare(ExperimentConfig.model_validate(job["cfg"]), write=False)
    study = open_study(Path(job["storage"]), None, pruner=pruner(section), sampler=sampler(
        section, n_before=job["n_before"], worker=worker, workers=section.workers))
    _run_trials(study, job["cfg"], section, data, job["n_trials"], job["timeout"], False,
                worker=worker)


def _run_trials(study: optuna.Study, trial_base: dict[str, Any], section: TuneSection,
                data: Prepared, n_trials: int, timeout: float | None, progress: bool, *,
                worker: int) -> None:
    """Run ``n_trials`` trials of ``study`` (fewer if ``timeout`` seconds run out or a grid
    is exhausted) in this process; ``trial_base`` is the experiment each trial's values
    are set in (as a dict)."""
    space = section.space
    popularity = data.split.train.item_counts()
    vm = trial_base["protocol"]["valid_metric"]

    def objective(trial: optuna.Trial) -> float:
        values = {key: _suggest(trial, key, spec) for key, spec in space.items()}
        trial.set_user_attr("worker", worker)
        t0 = time.perf_counter()
        try:
            tcfg = _with_values(trial_base, values)
            valid, info = _fit_and_validate(tcfg.models[0], data, tcfg, popularity, progress,
                                            trial)
            if not math.isfinite(valid):
                raise ValueError(f"valid {vm} is {valid}")
        except optuna.TrialPruned as e:
            trial.set_user_attr("fit_seconds", round(time.perf_counter() - t0, 3))
            _log.info("trial %d (%s) pruned: %s %s", trial.number, _format_values(values), vm,
                      e)
            raise
        except (ValueError, torch.OutOfMemoryError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
            trial.set_user_attr("error", _error_text(e))
            _log.warning("trial %d failed (%s): %s", trial.number, _format_values(values),
                         _error_text(e))
            return float("nan")  # Optuna records a nan objective as a failed trial
        for key, value in info.items():
            trial.set_user_attr(key, value)
        _log.info("trial %d: %s -> valid %s=%.4f (fit %.2fs)", trial.number,
                  _format_values(values), vm, valid, info["fit_seconds"])
        return valid

    study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=True)


def _reporting(validate: Callable[[Recommender[Any]], float], trial: optuna.Trial
               ) -> Callable[[Recommender[Any]], float]:
    """``validate`` that reports each value to the trial (step = the validation round, from
    1) and stops the training with :class:`optuna.TrialPruned` when the pruner says so."""
    rounds = itertools.count(1)

    def report(model: Recommender[Any]) -> float:
        value = validate(model)
        step = next(rounds)
        if math.isfinite(value):
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_round", step)
                raise optuna.TrialPruned(f"valid {value:.4f} at validation round {step}")
        return value

    return report


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
                      popularity: np.ndarray, progress: bool, trial: optuna.Trial | None = None
                      ) -> tuple[float, dict[str, Any]]:
    """Fit one trial's model (its validation rounds reported to ``trial``) and score it on
    the validation set only."""
    ctx = experiment.fit_context(mcfg, data, cfg)
    if trial is not None and ctx.validate is not None:
        ctx = dataclasses.replace(ctx, validate=_reporting(ctx.validate, trial))
    model = build_model(mcfg)
    t0 = time.perf_counter()
    model.fit(data.split.train, ctx)
    fit_s = time.perf_counter() - t0
    valid = experiment.evaluate(model, data.valid_set, cfg.protocol.with_valid_metric(),
                                item_popularity=popularity, batch_size=cfg.eval_batch_size,
                                progress=progress)
    info: dict[str, Any] = {"fit_seconds": round(fit_s, 3)}
    if (training := experiment.training_record(model)) is not None:  # torch models
        info |= {k: training[k] for k in ("epochs_run", "best_epoch")}
    return float(valid.summary()[cfg.protocol.valid_metric]), info


def _records(study: optuna.Study, keys: list[str]) -> list[dict[str, Any]]:
    """Every stored trial as a ``results.json`` record, by number."""
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
              TrialState.FAIL: "failed"}
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        state = ("interrupted" if t.user_attrs.get("interrupted")
                 else states.get(t.state, t.state.name.lower()))
        r: dict[str, Any] = {"number": t.number,
                             "params": {k: t.params[k] for k in keys if k in t.params},
                             "state": state}
        if t.state == TrialState.COMPLETE:
            r["valid"] = t.value
        if t.intermediate_values:
            r["curve"] = [round(t.intermediate_values[s], 6)
                          for s in sorted(t.intermediate_values)]
        r |= {k: t.user_attrs[k] for k in _TRIAL_INFO if k in t.user_attrs}
        out.append(r)
    return out


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
    if t["n_pruned"]:
        title += f"; {t['n_pruned']} pruned ({t['pruner']} pruner)"
    lines = ["", title, "",
             "| trial | " + " | ".join(keys) + f" | valid {t['metric']} | rounds | fit s |",
             "|---" * (len(keys) + 4) + "|"]
    for r in t["trials"]:
        params = " | ".join(_format_value(r["params"][k]) if k in r["params"] else "-"
                            for k in keys)
        if r["state"] == "complete":
            score = f"{r['valid']:.4f}"
        elif r["state"] == "pruned":
            score = f"pruned ({max(r['curve']):.4f})"
        else:
            score = r["state"]
        rounds = str(len(r["curve"])) if "curve" in r else "-"
        fit = f"{r['fit_seconds']:.2f}" if "fit_seconds" in r else "-"
        mark = " (best)" if r["number"] == t["best_trial"] else ""
        lines.append(f"| {r['number']}{mark} | {params} | {score} | {rounds} | {fit} |")
    return "\n".join(lines) + "\n"
