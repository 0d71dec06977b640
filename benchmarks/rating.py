"""Rating prediction on MovieLens-100K, official GroupLens folds u1-u5 (mean ± std over the
five folds): every rating model of genrec, one ``run_rating`` call (the same glue as
``genrec rate``). Writes ``benchmarks/results/ml-100k/<name>.json``.

    GENREC_DATA_DIR=../shared/datasets python benchmarks/rating.py
    GENREC_DATA_DIR=../shared/datasets python benchmarks/rating.py --models biased_mf --name x
    GENREC_DATA_DIR=../shared/datasets python benchmarks/rating.py --llm-gguf smollm2 \
        --set 'protocol.folds=[u1]' --name rating-llm   # + the LLM on a sample of u1
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from genrec.config import RatingExperimentConfig, load_config
from genrec.evaluation.rating import summarise_folds
from genrec.llm.rating import run_llm_rating
from genrec.llm.runner import llm_client
from genrec.runs.rating import format_rating_results, run_rating

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "configs" / "rating-ml100k.yaml"))
    ap.add_argument("--models", default=None, help="comma-separated kinds (default: config's)")
    ap.add_argument("--set", dest="set_", action="append", default=[])
    ap.add_argument("--name", default="rating")
    ap.add_argument("--llm-gguf", default=None, help="also an LLM: a GGUF file or smollm2")
    ap.add_argument("--fold-jobs", type=int, default=1,
                    help="run the folds in this many processes (same numbers: every fold is "
                         "seeded on its own); not with --llm-gguf")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        if args.fold_jobs > 1 and args.llm_gguf is None:
            models = args.models.split(",") if args.models else None
            results = _parallel_folds(args.config, models, args.set_, args.fold_jobs, tmp)
        else:
            results = _one_run(args, tmp)
    results["command"] = ("GENREC_DATA_DIR=../shared/datasets python benchmarks/rating.py "
                          + " ".join(f"--{k} {v}" for k, v in
                                     [("models", args.models), ("llm-gguf", args.llm_gguf)]
                                     if v)
                          + "".join(f" --set '{s}'" for s in args.set_)
                          + (f" --fold-jobs {args.fold_jobs}" if args.fold_jobs > 1 else "")
                          + f" --name {args.name}")
    out = ROOT / "benchmarks" / "results" / "ml-100k" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(format_rating_results(results))
    print(f"written to {out}")


def _fold_run(config: str, models: list[str] | None, sets: list[str], fold: str,
              out: str) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(config, [f"output={out}", "save_models=false", *sets,
                               f"protocol.folds=[{fold}]"], models=models,
                      cls=RatingExperimentConfig)
    return run_rating(cfg)


def _parallel_folds(config: str, models: list[str] | None, sets: list[str], jobs: int,
                    tmp: str) -> dict[str, Any]:
    """Each fold in its own process, then the per-fold rows merged exactly as
    ``run_rating`` summarises them (mean, sample std, t-interval over folds)."""
    cfg = load_config(config, [f"output={tmp}", *sets], models=models,
                      cls=RatingExperimentConfig)
    if cfg.protocol.split != "official":
        raise SystemExit("--fold-jobs runs the official folds; this protocol has seeds")
    folds = list(cfg.protocol.folds)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        parts = list(pool.map(_fold_run, [config] * len(folds), [models] * len(folds),
                              [sets] * len(folds), folds,
                              [str(Path(tmp) / f) for f in folds]))
    merged = copy.deepcopy(parts[0])
    merged["protocol"] = cfg.protocol.model_dump(mode="json")
    merged["protocol_text"] = cfg.protocol.describe()
    for row in merged["results"]:
        rows = [next(r for r in p["results"] if r["model"] == row["model"]) for p in parts]
        row["folds"] = [f for r in rows for f in r["folds"]]
        for key in ("rmse", "mae"):
            row[key] = summarise_folds([f[key] for f in row["folds"]])
        row["fit_seconds"] = round(float(np.mean([f["fit_seconds"] for f in row["folds"]])), 3)
    return merged


def _one_run(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    models = args.models.split(",") if args.models else None
    cfg = load_config(args.config, [f"output={tmp}", "save_models=false", *args.set_],
                      models=models, cls=RatingExperimentConfig)
    with llm_client(gguf=args.llm_gguf) as client:
        return (run_rating(cfg) if client is None else
                run_llm_rating(cfg, client, label=Path(args.llm_gguf).stem))


if __name__ == "__main__":
    main()
