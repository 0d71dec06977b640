"""Holistic comparison on one dataset: accuracy, beyond-accuracy, fairness, significance.

Runs ``genrec compare`` (every model under one protocol), then times the report alone
(analysis + plots + HTML/Markdown) after training, and copies the machine-readable results
and the Markdown report into ``benchmarks/results/<dataset>/``.

Usage::

    GENREC_DATA_DIR=../shared/datasets python benchmarks/holistic.py --dataset amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from genrec.config import load_config
from genrec.evaluation.compare import HolisticOptions
from genrec.evaluation.report import write_report
from genrec.runs.compare import run_comparison

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "pop": {},
    "itemknn": {"k": 200, "shrink": 10.0},
    "ease": {"l2": 50.0},
    "graph_heuristic": {},
    "bprmf": {"train": {"epochs": 20, "eval_every": 4, "progress": False, "device": "cpu"}},
    "sasrec": {"train": {"epochs": 4, "progress": False, "device": "cpu"}},
}
"""Models and settings (the baselines' validation-chosen settings; short neural trainings)."""


def main() -> None:
    """Compare, time the report, copy the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    kinds = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        overrides = [f"dataset.name={args.dataset}", f"output={out}", "save_models=false",
                     "checkpoints=false"]
        cfg = load_config(None, overrides, models=kinds)
        cfg = cfg.model_validate(cfg.model_dump() | {
            "models": [{"kind": k, **MODELS.get(k, {})} for k in kinds]})
        t0 = time.perf_counter()
        results = run_comparison(cfg, HolisticOptions(), report=False)
        train_eval_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        _, md = write_report(out)
        report_s = time.perf_counter() - t1
        dest = ROOT / "benchmarks" / "results" / args.dataset
        dest.mkdir(parents=True, exist_ok=True)
        results["benchmark"] = {
            "command": f"python benchmarks/holistic.py --dataset {args.dataset} --models "
                       f"{args.models}",
            "models": len(kinds), "train_and_eval_seconds": round(train_eval_s, 1),
            "report_seconds_after_training": round(report_s, 1),
            "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()}
        (dest / "holistic.json").write_text(json.dumps(results, indent=2) + "\n")
        shutil.copy(md, dest / "holistic.md")
        shutil.copytree(out / "plots", dest / "plots", dirs_exist_ok=True)
        print(f"{len(kinds)} models: train+eval {train_eval_s:.1f}s, report {report_s:.1f}s")
        print(f"written to {dest.relative_to(ROOT)}/holistic.json and holistic.md")


if __name__ == "__main__":
    main()
