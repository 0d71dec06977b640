"""One experiment, end to end: load, preprocess, split, fit, evaluate, write results.

``results.json`` shape::

    {"protocol": {...}, "protocol_text": "...", "dataset": {"name", "users", "items",
     "interactions"}, "results": [{"model", "params", "fit_seconds", "eval_seconds",
     "peak_rss_mb", "valid": {...}, "test": {...}}], "environment": {...}}
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from genrec._io import atomic_write_text
from genrec.config import DataConfig, ExperimentConfig
from genrec.data.interactions import Dataset, EvalSet
from genrec.data.preprocess import preprocess
from genrec.data.splits import Split, split
from genrec.evaluation.evaluator import EvalResult, evaluate
from genrec.evaluation.protocol import Protocol
from genrec.models.base import ModelConfig, Recommender
from genrec.models.registry import build_model

__all__ = ["Prepared", "TEST_COLUMNS", "bind_run", "fit_and_evaluate", "format_results",
           "load_data", "make_split", "prepare", "results_document", "run_experiment",
           "write_results"]

_log = logging.getLogger(__name__)

TEST_COLUMNS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "mrr@10", "map@10", "recall@20",
                "ndcg@20"]
"""Test metrics shown in results.md (all metrics are in results.json)."""


def load_data(cfg: DataConfig) -> Dataset:
    """Load a recipe or a custom file, then preprocess it as configured."""
    from genrec.data import readers
    from genrec.data.recipes import load_dataset

    if cfg.path is None:
        ds = load_dataset(cfg.name, data_dir=cfg.data_dir)
    else:
        if cfg.format is None:
            raise ValueError("dataset.format is required with dataset.path")
        path = Path(cfg.path)
        match cfg.format:
            case "csv":
                ds = readers.read_csv(path, columns=cfg.columns, sep=cfg.sep)
            case "parquet":
                ds = readers.read_parquet(path, columns=cfg.columns)
            case "recbole":
                ds = readers.read_recbole_atomic(path)
            case "p5":
                ds = readers.read_p5(path)
            case "sequences":
                ds = readers.read_sequences(path)
            case "ml-100k":
                ds = readers.read_ml100k(path)
            case "ml-1m":
                ds = readers.read_ml1m(path)
        ds.name = cfg.name
    return preprocess(ds, cfg.preprocess)


def make_split(ds: Dataset, protocol: Protocol, split_path: str | None) -> Split:
    """Reuse a saved split (checked against ``ds``) or make a new one."""
    if split_path is not None:
        sp = Split.load(Path(split_path), ds)
        if sp.config != protocol.split:
            raise ValueError(f"split at {split_path} was made with {sp.config}, "
                             f"but the protocol asks for {protocol.split}")
        return sp
    return split(ds, protocol.split)


def bind_run(mcfg: ModelConfig, cfg: ExperimentConfig) -> ModelConfig:
    """Settings a trained model takes from the run: it selects (early-stops) on the protocol's
    valid metric with the protocol's seed, and checkpoints into the output folder."""
    if "train" not in type(mcfg).model_fields:
        return mcfg
    update: dict[str, Any] = {"valid_metric": cfg.protocol.valid_metric, "seed": cfg.protocol.seed}
    train = getattr(mcfg, "train")
    if cfg.checkpoints and train.checkpoint_dir is None:
        update["checkpoint_dir"] = str(Path(cfg.output) / "checkpoints" / mcfg.kind)
    if cfg.resume:
        update["resume"] = True
    return mcfg.model_copy(update={"train": train.model_copy(update=update)})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}


@dataclass
class Prepared:
    """What every model of a run shares: the dataset, its split and the evaluation sets."""

    dataset: Dataset
    split: Split
    valid_set: EvalSet
    test_set: EvalSet


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Write the resolved config, seed, load, preprocess, split and save the split."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"),
                                                          sort_keys=False))
    torch.manual_seed(cfg.protocol.seed)
    np.random.seed(cfg.protocol.seed)
    ds = load_data(cfg.dataset)
    sp = make_split(ds, cfg.protocol, cfg.split_path)
    sp.save(out / "split")
    _log.info("%r; protocol: %s", ds, cfg.protocol.describe())
    return Prepared(ds, sp, sp.valid_set(), sp.test_set())


def fit_model(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig
              ) -> tuple[Recommender[Any], float]:
    """Build the model of ``mcfg`` bound to the run, give it the item features it reads, fit
    it on the training part (validating on ``data.valid_set``); return it and the fit seconds."""
    model = build_model(bind_run(mcfg, cfg))
    if hasattr(model, "set_item_features"):  # text / semantic-ID models render item text
        model.set_item_features(data.dataset.items)
    _log.info("fitting %r", model)
    t0 = time.perf_counter()
    model.fit(data.split.train, data.valid_set)
    return model, time.perf_counter() - t0


def training_record(model: Recommender[Any]) -> dict[str, Any] | None:
    """How a torch model's training went (None for models without a training loop)."""
    tr = getattr(model, "train_result_", None)
    if tr is None:
        return None
    net = getattr(model, "net_", None)
    return {"epochs_run": len(tr.history), "best_epoch": tr.best_epoch,
            "best_valid": tr.best_metric, "stopped_early": tr.stopped_early,
            "out_of_time": tr.out_of_time,
            "device": str(next(net.parameters()).device) if net is not None else None,
            "history": tr.history}


def fit_and_evaluate(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig, *,
                     progress: bool = False, keep_top_items: bool = False
                     ) -> tuple[Recommender[Any], dict[str, Any], EvalResult]:
    """Fit one model, evaluate it on valid and test, save it; return its results row."""
    model, fit_s = fit_model(mcfg, data, cfg)
    kw: dict[str, Any] = dict(item_popularity=data.split.train.item_counts(),
                              batch_size=cfg.eval_batch_size, progress=progress)
    valid = evaluate(model, data.valid_set, cfg.protocol, **kw)
    test = evaluate(model, data.test_set, cfg.protocol, keep_top_items=keep_top_items, **kw)
    if cfg.save_models:
        model.save(Path(cfg.output) / "models" / mcfg.kind)
    row = {
        "model": mcfg.kind,
        "params": mcfg.model_dump(exclude={"kind"}),
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
    _log.info("%s: fit %.2fs, test eval %.2fs, test %s=%.4f", mcfg.kind, fit_s, test.seconds,
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
        "protocol_text": cfg.protocol.describe(),
        "dataset": {"name": ds.name, "users": ds.n_users, "items": ds.n_items,
                    "interactions": len(ds.interactions),
                    "eval_users": {"valid": len(data.valid_set), "test": len(data.test_set)},
                    "preprocessing": ds.log},
        "results": rows,
        **extra,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
                        "gpu": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else None)},
    }


def write_results(out: Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` and ``results.md`` (each atomically)."""
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=2))
    atomic_write_text(Path(out) / "results.md", format_results(results))


def run_experiment(cfg: ExperimentConfig, *, progress: bool = False) -> dict[str, Any]:
    """Run every model of ``cfg`` under its protocol and write the results folder.

    Returns:
        The ``results.json`` content.
    """
    data = prepare(cfg)
    rows = [fit_and_evaluate(m, data, cfg, progress=progress)[1] for m in cfg.models]
    results = results_document(cfg, data, rows)
    write_results(Path(cfg.output), results)
    return results


def format_results(results: dict[str, Any]) -> str:
    """Markdown: the protocol first, then one row per model with test metrics."""
    d = results["dataset"]
    vm = results["protocol"]["valid_metric"]
    cols = [c for c in TEST_COLUMNS if any(c in r["test"] for r in results["results"])]
    lines = [
        f"# Results: {d['name']}",
        "",
        f"**Protocol**: {results['protocol_text']}",
        "",
        f"**Dataset**: {d['users']:,} users, {d['items']:,} items, "
        f"{d['interactions']:,} interactions",
        "",
        "| model | fit s | eval s | valid " + vm + " | " + " | ".join(f"test {c}" for c in cols)
        + " |",
        "|---" * (4 + len(cols)) + "|",
    ]
    for r in results["results"]:
        vals = " | ".join(f"{r['test'].get(c, float('nan')):.4f}" for c in cols)
        lines.append(f"| {r['model']} | {r['fit_seconds']:.2f} | {r['eval_seconds']:.2f} | "
                     f"{r['valid'].get(vm, float('nan')):.4f} | {vals} |")
    cold = [r for r in results["results"] if "cold_start" in r]
    if cold:
        lines += ["", f"**Cold start** ({cold[0]['cold_start']['cold_items']:,} items never in "
                      "training): test metrics by target item", "",
                  "| model | group | users | " + " | ".join(cols) + " |",
                  "|---" * (3 + len(cols)) + "|"]
        for r in cold:
            for g in ("cold", "warm"):
                c = r["cold_start"]
                vals = " | ".join(f"{c[g].get(m, float('nan')):.4f}" for m in cols)
                lines.append(f"| {r['model']} | {g} | {c['users'][g]:,} | {vals} |")
    return "\n".join(lines) + "\n"
