"""The glue, written once: load, preprocess, split, fit, evaluate, write results.

Every command runs through here: ``genrec run``, ``compare``, ``tune``, ``tokenize``,
``export``, and the LLM commands (``rerank``, ``explain``, ``chat``, ``simulate``) all call
:func:`prepare` for the data, the split and the evaluation sets, and :func:`fit_model` for a
model fitted under the protocol (item features, validation callback, seed and checkpoints
handed over in a :class:`~genrec.models.base.FitContext`).

``results.json`` shape::

    {"protocol": {...}, "protocol_text": "...", "dataset": {"name", "users", "items",
     "interactions", "source": {"origin", "files", "text", ...}, "eval_users",
     "preprocessing"}, "results": [{"model", "params", "fit_seconds", "eval_seconds",
     "peak_rss_mb", "valid": {...}, "test": {...}}], "environment": {..., "threads",
     "threads_source", "cpus_available", "load_average_1m"}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from genrec._io import atomic_write_text, read_json
from genrec.config import ExperimentConfig, load_config
from genrec.data.describe import source_summary
from genrec.data.interactions import Dataset, EvalSet
from genrec.data.sources import load_data
from genrec.data.splits import Split, split
from genrec.evaluation.evaluator import EvalResult, evaluate, sample_users
from genrec.evaluation.protocol import Protocol
from genrec.evaluation.results import format_results
from genrec.models.base import FitContext, ModelConfig, Recommender
from genrec.models.registry import build_model, load_model
from genrec.runs.seeds import fit_and_evaluate_seeds, seed_significance
from genrec.runs.threads import apply_threads, thread_record
from genrec.training.checkpoint import CheckpointError
from genrec.training.loop import is_main_process

__all__ = ["Prepared", "SavedRun", "cold_warm", "environment", "fit_and_evaluate",
           "fit_context", "fit_model", "load_data", "make_split", "open_run", "open_saved_model",
           "prepare", "results_document", "run_experiment", "training_record",
           "unfinished_trainings", "validation_callback", "write_prepared", "write_results"]

_log = logging.getLogger(__name__)


def make_split(ds: Dataset, protocol: Protocol, split_path: str | None) -> Split:
    """Reuse a saved split (checked against ``ds``) or make a new one."""
    if split_path is not None:
        sp = Split.load(Path(split_path), ds)
        if sp.config != protocol.split:
            raise ValueError(f"split at {split_path} was made with {sp.config}, "
                             f"but the protocol asks for {protocol.split}")
        return sp
    return split(ds, protocol.split)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}


@dataclass
class Prepared:
    """What every model of a run shares: the dataset, its split and the evaluation sets.

    Attributes:
        dataset: The preprocessed dataset (its ``items`` table feeds text-aware models).
        split: Train / valid / test interactions.
        valid_set: Validation users (history = train, target = the valid items).
        test_set: Test users (history = train + valid, target = the test items).
        identity: Fingerprints of the data and the split; every training checkpoint records
            them, and a resume under other data or another split is refused.
    """

    dataset: Dataset
    split: Split
    valid_set: EvalSet
    test_set: EvalSet
    identity: dict[str, Any]


def _table_fingerprint(table: pl.DataFrame) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(",".join(f"{c}:{t}" for c, t in table.schema.items()).encode())
    h.update(np.ascontiguousarray(table.hash_rows(seed=0).to_numpy()).tobytes())
    return h.hexdigest()


def _identity(ds: Dataset, sp: Split) -> dict[str, Any]:
    return {"dataset": ds.name, "items": _table_fingerprint(ds.items),
            "split": sp.config.model_dump(mode="json"), "split_train": sp.train.fingerprint(),
            "split_valid": sp.valid.fingerprint(), "split_test": sp.test.fingerprint()}


def prepare(cfg: ExperimentConfig, *, write: bool = True) -> Prepared:
    """Set the threads, seed, load, preprocess and split; with ``write``, also write the
    resolved config and the split into ``cfg.output`` (:func:`write_prepared`)."""
    apply_threads(cfg.threads)
    out = Path(cfg.output)
    if write and not cfg.resume and cfg.checkpoints and (killed := unfinished_trainings(out)):
        # Starting afresh would overwrite the checkpoints of a training that never finished:
        # hours of work, lost to a rerun of the same command without --resume. Checked before
        # the data load; `genrec tune` (which resumes its study by rerunning) writes through
        # write_prepared and is not refused.
        raise CheckpointError(
            f"{out} holds unfinished trainings ({', '.join(killed)}: checkpoints newer than "
            "any results.json): resume: true (--resume, or --set resume=true) continues "
            "them; to start afresh, delete the folder or give another output")
    torch.manual_seed(cfg.protocol.seed)
    np.random.seed(cfg.protocol.seed)
    ds = load_data(cfg.dataset)
    sp = make_split(ds, cfg.protocol, cfg.split_path)
    # With protocol.eval_users the evaluation sets are the seeded samples, so per-user
    # arrays (cold/warm, holistic report) line up with what the evaluator scored.
    data = Prepared(ds, sp, sample_users(sp.valid_set(), cfg.protocol),
                    sample_users(sp.test_set(), cfg.protocol), _identity(ds, sp))
    if write:
        write_prepared(cfg, data)
    _log.info("%r; protocol: %s", ds, cfg.protocol.describe())
    return data


def write_prepared(cfg: ExperimentConfig, data: Prepared) -> None:
    """Write the resolved ``config.yaml`` and the split into ``cfg.output`` (rank 0 only
    under ``torchrun``)."""
    if not is_main_process():
        return
    out = Path(cfg.output)
    if (out / "results.json").is_file() or any((out / "checkpoints").glob("*/latest.json")):
        if cfg.resume:
            _log.info("%s holds an earlier run: its trainings continue from their checkpoints "
                      "(resume: true) and its results are replaced", out)
        else:
            _log.warning("%s holds an earlier run: its results are replaced and trainings "
                         "start afresh (resume: true continues them; another output keeps "
                         "both)", out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(_absolute_paths(
        cfg.model_dump(mode="json")), sort_keys=False))
    data.split.save(out / "split")


def unfinished_trainings(out: Path) -> list[str]:
    """The trainings in run folder ``out`` that were stopped before the run ended: the
    checkpoint folders (``checkpoints/<name>``) whose ``latest.json`` is newer than the run's
    ``results.json``, or all of them when there is none."""
    done = out / "results.json"
    finished = done.stat().st_mtime if done.is_file() else float("-inf")
    return sorted(p.parent.name for p in (out / "checkpoints").glob("*/latest.json")
                  if p.stat().st_mtime > finished)


def _absolute_paths(dump: dict[str, Any]) -> dict[str, Any]:
    """A config dump whose relative file paths (read from the working directory) are made
    absolute, so the run folder can be reopened (export, serve, report) from anywhere."""
    def fix(node: dict[str, Any] | None, key: str) -> None:
        if isinstance(node, dict) and isinstance(node.get(key), str) and "://" not in node[key]:
            node[key] = os.path.abspath(node[key])

    data = dump.get("dataset")
    for key in ("path", "data_dir"):
        fix(data, key)
    for side in ("items", "users"):
        fix((data or {}).get(side), "path")
    fix(dump, "split_path")
    return dump


def open_run(run_dir: str | Path, *, data_dir: str | None = None
             ) -> tuple[ExperimentConfig, Prepared]:
    """Reopen a run folder: its ``config.yaml``, its dataset (reloaded and preprocessed as
    then) and its saved split (checked against the data).

    Raises:
        FileNotFoundError: If ``run_dir`` is not a run folder.
    """
    run = Path(run_dir)
    for need in ("config.yaml", "split/split.json"):
        if not (run / need).is_file():
            raise FileNotFoundError(f"{run} is not a genrec run folder: {need} is missing")
    cfg = load_config(run / "config.yaml")
    if data_dir is not None:
        cfg.dataset.data_dir = data_dir
    cfg = cfg.model_copy(update={"split_path": str(run / "split")})
    return cfg, prepare(cfg, write=False)


@dataclass
class SavedRun:
    """A run folder reopened with one of its saved models (see :func:`open_saved_model`).

    Attributes:
        path: The run folder.
        config: Its ``config.yaml``.
        data: Its dataset and saved split, prepared as when it ran.
        name: The model's folder under ``models/`` (its name in ``results.json``).
        model: The model, loaded from safetensors + JSON.
        record: The model's row of ``results.json`` (``None`` when the run has no row for it).
    """

    path: Path
    config: ExperimentConfig
    data: Prepared
    name: str
    model: Recommender[Any]
    record: dict[str, Any] | None

    def evaluate_test(self) -> EvalResult:
        """The model on the run's test set, under the run's protocol (as ``genrec run``
        evaluated it)."""
        return evaluate(self.model, self.data.test_set, self.config.protocol,
                        item_popularity=self.data.split.train.item_counts(),
                        batch_size=self.config.eval_batch_size)

    def reproduction_gaps(self, summary: dict[str, float],
                          metrics: list[str] | None = None) -> dict[str, float]:
        """``|recomputed - recorded|`` per test metric (recomputed values rounded to the 6
        decimals ``results.json`` keeps) over ``metrics`` (default: every recorded one).

        Raises:
            ValueError: If the run recorded no test metrics for the model, or one of
                ``metrics`` is not both recorded and recomputed.
        """
        recorded = (self.record or {}).get("test")
        if not recorded:
            raise ValueError(f"{self.path}: results.json records no test metrics for "
                             f"{self.name!r}")
        names = list(recorded) if metrics is None else metrics
        missing = [m for m in names if m not in recorded or m not in summary]
        if missing:
            raise ValueError(f"{self.path}: {missing} not both recorded and recomputed")
        return {m: abs(round(float(summary[m]), 6) - float(recorded[m])) for m in names}

    def check_reproduces(self, summary: dict[str, float], metrics: list[str] | None = None,
                         tol: float = 1e-6) -> float:
        """The largest of :meth:`reproduction_gaps`, refusing one above ``tol``.

        Raises:
            ValueError: If a recomputed metric differs from the recorded one by more than
                ``tol`` (the model, data or code changed since the run).
        """
        gaps = self.reproduction_gaps(summary, metrics)
        worst = max(gaps, key=gaps.__getitem__)
        if gaps[worst] > tol:
            raise ValueError(f"{self.path}: re-evaluated {worst} {summary[worst]:.6f} differs "
                             f"from the recorded {self.record['test'][worst]} "  # type: ignore[index]
                             f"(by {gaps[worst]:.2e} > {tol:g})")
        return gaps[worst]


def open_saved_model(run_dir: str | Path, model: str | None = None, *,
                     data_dir: str | None = None) -> SavedRun:
    """Reopen a run folder (:func:`open_run`) with one of its saved models and its recorded
    results, to re-evaluate, export or serve it.

    Args:
        run_dir: The run's output folder (``config.yaml``, ``split/``, ``models/``).
        model: The saved model's name under ``models/``; may be omitted when the run saved one.
        data_dir: Overrides ``dataset.data_dir`` of the run's config.

    Raises:
        FileNotFoundError: If the run folder lacks its config, split or the model (e.g. it ran
            with ``save_models: false``).
        ValueError: If ``model`` is omitted and the run saved several, or the dataset no
            longer matches the saved split.
    """
    run = Path(run_dir)
    cfg, data = open_run(run, data_dir=data_dir)
    labels = {m.label for m in cfg.models}
    found = sorted(p.name for p in (run / "models").glob("*") if (p / "config.json").is_file())
    saved = [name for name in found if name in labels]
    if model is not None and model in found and model not in labels:
        raise ValueError(f"{run}/models/{model} is not a model of this run (its config.yaml "
                         f"has {sorted(labels)}): an earlier run in this folder left it, and "
                         "this run's split and results do not belong to it")
    if model is None:
        if len(saved) != 1:
            raise ValueError(f"{run} has saved models {saved}: choose one (--model on the CLI)")
        model = saved[0]
    if model not in saved:
        raise FileNotFoundError(f"{run}/models/{model} not found (saved models: {saved}; a run "
                                "with save_models: false keeps none)")
    record = None
    results = run / "results.json"
    if results.is_file():
        rows = read_json(results).get("results")
        record = next((r for r in rows if isinstance(r, dict) and r.get("model") == model),
                      None) if isinstance(rows, list) else None
    return SavedRun(run, cfg, data, model, load_model(run / "models" / model), record)


def validation_callback(valid_set: EvalSet, protocol: Protocol, *,
                        item_popularity: np.ndarray | None = None, batch_size: int = 2048
                        ) -> Callable[[Recommender[Any]], float]:
    """``model -> validation metric``: the protocol's ``valid_metric`` on ``valid_set``, under
    the protocol's candidates, seen-item rule and history length (only that one metric is
    computed)."""
    name, _, k = protocol.valid_metric.partition("@")
    only = protocol.model_copy(update={"metrics": [name], "cutoffs": [int(k)]})

    def validate(model: Recommender[Any]) -> float:
        result = evaluate(model, valid_set, only, item_popularity=item_popularity,
                          batch_size=batch_size)
        return result.summary()[protocol.valid_metric]

    return validate


def fit_context(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig, *,
                name: str | None = None) -> FitContext:
    """What a model of this run receives besides the training data: the item features, the
    protocol's validation callback and seed, its checkpoint folder (``checkpoints/<name>``,
    the model's :attr:`~genrec.models.base.ModelConfig.label` by default) and the run's
    identity."""
    ckpt = Path(cfg.output) / "checkpoints" / (name or mcfg.label) if cfg.checkpoints else None
    if cfg.resume and not cfg.checkpoints:
        _log.warning("resume: true with checkpoints: false: there is nothing to resume from, "
                     "%s trains from scratch", mcfg.label)
    validate = (validation_callback(data.valid_set, cfg.protocol,
                                    item_popularity=data.split.train.item_counts(),
                                    batch_size=cfg.eval_batch_size)
                if len(data.valid_set) else None)
    return FitContext(items=data.dataset.items, validate=validate,
                      valid_metric=cfg.protocol.valid_metric, seed=cfg.protocol.seed,
                      checkpoint_dir=ckpt, resume=cfg.resume,
                      identity=data.identity | _validation_identity(cfg.protocol, validate))


def _validation_identity(protocol: Protocol, validate: object) -> dict[str, Any]:
    """What a checkpoint records of how its validation scores were measured (nothing when
    there is no validation or every such setting is at its default)."""
    v = protocol.validation_identity() if validate is not None else {}
    return {"validation": v} if v else {}


def fit_model(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig, *,
              name: str | None = None) -> tuple[Recommender[Any], float]:
    """Build the model of ``mcfg``, fit it on the training part under the run's
    :func:`fit_context`; return it and the fit seconds."""
    model = build_model(mcfg)
    _log.info("fitting %r", model)
    t0 = time.perf_counter()
    model.fit(data.split.train, fit_context(mcfg, data, cfg, name=name))
    return model, time.perf_counter() - t0


def training_record(model: Recommender[Any]) -> dict[str, Any] | None:
    """How a torch model's training went (None for models without a training loop).

    ``train_seconds`` and ``seconds_to_best`` add up the epochs' seconds (training and
    validation) over the whole run, resumed processes included, up to the last epoch and to
    the epoch whose weights were kept; ``fit_seconds`` in the results row is this process's.
    """
    tr = getattr(model, "train_result_", None)
    if tr is None:
        return None
    net = getattr(model, "net_", None)
    seconds = [float(h.get("seconds", 0.0)) for h in tr.history]
    return {"epochs_run": len(tr.history), "best_epoch": tr.best_epoch,
            "best_valid": tr.best_metric, "stopped_early": tr.stopped_early,
            "out_of_time": tr.out_of_time,
            "train_seconds": round(sum(seconds), 3),
            "seconds_to_best": round(sum(seconds[:tr.best_epoch]), 3),
            "device": str(next(net.parameters()).device) if net is not None else None,
            "history": tr.history}


def fit_and_evaluate(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig, *,
                     progress: bool = False, keep_top_items: bool = False,
                     name: str | None = None
                     ) -> tuple[Recommender[Any], dict[str, Any], EvalResult]:
    """Fit one model, evaluate it on valid and test, save it (``models/<name>``, the model's
    label by default); return its results row."""
    model, fit_s = fit_model(mcfg, data, cfg, name=name)
    kw: dict[str, Any] = dict(item_popularity=data.split.train.item_counts(),
                              batch_size=cfg.eval_batch_size, progress=progress)
    # Validation always measures the selection metric, even if the test metrics omit it.
    valid = evaluate(model, data.valid_set, cfg.protocol.with_valid_metric(), **kw)
    test = evaluate(model, data.test_set, cfg.protocol, keep_top_items=keep_top_items, **kw)
    if cfg.save_models and is_main_process():
        model.save(Path(cfg.output) / "models" / (name or mcfg.label))
    row = {
        **mcfg.results_fields(),
        "fit_seconds": round(fit_s, 3),
        "eval_seconds": round(test.seconds, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "valid": _rounded(valid.summary()),
        "test": _rounded(test.summary()),
    }
    if len(data.split.cold_items):
        row["cold_start"] = cold_warm(test, data.test_set, data.split.cold_items)
    if (training := training_record(model)) is not None:
        row["training"] = training
    _log.info("%s: fit %.2fs, test eval %.2fs, test %s=%.4f", mcfg.label, fit_s, test.seconds,
              cfg.protocol.valid_metric, row["test"].get(cfg.protocol.valid_metric, float("nan")))
    return model, row, test


def cold_warm(result: EvalResult, evalset: EvalSet, cold_items: np.ndarray) -> dict[str, Any]:
    """Metrics of ``result`` split by target: users whose targets are all cold items, and
    users whose targets are all warm (users with both kinds are counted, not averaged)."""
    n_targets = np.diff(evalset.target_indptr)
    if len(n_targets) != len(result.users):
        raise ValueError("cold_warm: the result is not of this evaluation set")
    is_cold = np.isin(evalset.target_items, cold_items).astype(np.int64)
    n_cold = np.add.reduceat(is_cold, evalset.target_indptr[:-1]) if len(is_cold) else \
        np.zeros(len(n_targets), dtype=np.int64)
    groups = {"cold": n_cold == n_targets, "warm": n_cold == 0}
    out: dict[str, Any] = {"cold_items": int(len(cold_items)),
                           "users": {g: int(m.sum()) for g, m in groups.items()},
                           "mixed_users": int((~groups["cold"] & ~groups["warm"]).sum())}
    for g, m in groups.items():
        out[g] = _rounded({k: float(v[m].mean()) if m.any() else 0.0
                           for k, v in result.per_user.items()})
    return out


def results_document(cfg: ExperimentConfig, data: Prepared, rows: list[dict[str, Any]],
                     **extra: Any) -> dict[str, Any]:
    """The ``results.json`` content (``extra`` keys are added before ``environment``)."""
    ds = data.dataset
    return {
        "protocol": cfg.protocol.model_dump(mode="json"),
        "protocol_text": cfg.protocol.describe() + (
            f"; {cfg.seeds} seeds {cfg.protocol.seed}..{cfg.protocol.seed + cfg.seeds - 1} "
            "(mean ± std)" if cfg.seeds > 1 else ""),
        "dataset": {"name": ds.name, "users": ds.n_users, "items": ds.n_items,
                    "interactions": len(ds.interactions),
                    "source": source_summary(ds),
                    "eval_users": {"valid": len(data.valid_set), "test": len(data.test_set)},
                    "preprocessing": ds.log},
        "results": rows,
        **extra,
        "environment": environment(cfg.threads),
    }


def environment(threads: int | None) -> dict[str, Any]:
    """The ``environment`` block of a ``results.json``: versions, machine, threads, load, GPU."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
            **thread_record(threads),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_results(out: Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` and ``results.md`` (each atomically; rank 0 only under
    ``torchrun``)."""
    if not is_main_process():
        return
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=2))
    atomic_write_text(Path(out) / "results.md", format_results(results))


def run_experiment(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Run every model of ``cfg`` under its protocol and write the results folder.

    Returns:
        The ``results.json`` content.
    """
    # A resumed run writes its config and split only once its models are fitted: a resume
    # refused for another experiment leaves the folder as the original run wrote it.
    data = prepare(cfg, write=not cfg.resume)
    extra: dict[str, Any] = {}
    if cfg.seeds == 1:
        rows = [fit_and_evaluate(m, data, cfg, progress=progress)[1] for m in cfg.models]
    else:
        rows, per_user = [], {}
        for m in cfg.models:
            row, per_user[m.label] = fit_and_evaluate_seeds(m, data, cfg, fit_and_evaluate,
                                                           progress=progress)
            rows.append(row)
        extra["significance"] = seed_significance(per_user, cfg)
    if cfg.resume:
        write_prepared(cfg, data)
    results = results_document(cfg, data, rows, **extra)
    write_results(Path(cfg.output), results)
    return results
