"""Train one neural model with ``genrec run`` and keep its results as a benchmark.

Usage::

    GENREC_DATA_DIR=../shared/datasets python benchmarks/neural.py --dataset amazon-beauty \
        --model sasrec --name sasrec-cpu-15ep --set models.0.train.epochs=15
    GENREC_DATA_DIR=../shared/datasets python benchmarks/neural.py \
        --config configs/ml-1m/sasrec.yaml --name sasrec

Writes ``benchmarks/results/<dataset>/<name>.json`` (the ``results.json`` shape plus the exact
command, the machine and the per-epoch training history).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run, then copy the results with the command and the machine."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="a recipe from configs/ (sets dataset and model)")
    ap.add_argument("--dataset")
    ap.add_argument("--model")
    ap.add_argument("--name", required=True, help="output file stem")
    ap.add_argument("--note", default="", help="how the run was made (load, concurrency)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="config override, as for genrec run --set")
    args = ap.parse_args()
    if args.config:
        recipe = yaml.safe_load(Path(args.config).read_text())
        args.dataset = args.dataset or recipe["dataset"]["name"]
        args.model = args.model or recipe["models"][0]["kind"]
        source = [args.config]
    elif args.dataset and args.model:
        source = ["--dataset", args.dataset, "--models", args.model]
    else:
        ap.error("give --config, or --dataset and --model")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "genrec.cli", "run", *source, "--output", tmp, "--quiet",
               "--set", "save_models=false", "--set", "models.0.train.progress=false",
               *[f"--set={s}" for s in args.sets]]
        subprocess.run(cmd, check=True, cwd=ROOT)
        results = json.loads((Path(tmp) / "results.json").read_text())
    results["benchmark"] = {
        "command": " ".join(["python benchmarks/neural.py",
                             *(["--config", args.config] if args.config else
                               ["--dataset", args.dataset, "--model", args.model]),
                             "--name", args.name, *[f"--set {s}" for s in args.sets]]),
        "note": args.note, "cpus": os.cpu_count(), "processor": platform.machine(),
        "gpu": results["environment"].get("gpu"),
        "load_average_at_end": os.getloadavg()}
    dest = ROOT / "benchmarks" / "results" / args.dataset / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2) + "\n")
    r = results["results"][0]
    print(f"{args.model} on {args.dataset}: fit {r['fit_seconds']:.0f}s, test recall@10 "
          f"{r['test']['recall@10']:.4f} ndcg@10 {r['test']['ndcg@10']:.4f} -> {dest}")


if __name__ == "__main__":
    main()
