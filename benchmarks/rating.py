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
import json
import logging
import tempfile
from pathlib import Path

from genrec.config import RatingExperimentConfig, load_config
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models.split(",") if args.models else None
        cfg = load_config(args.config, [f"output={tmp}", "save_models=false", *args.set_],
                          models=models, cls=RatingExperimentConfig)
        with llm_client(gguf=args.llm_gguf) as client:
            results = (run_rating(cfg) if client is None else
                       run_llm_rating(cfg, client, label=Path(args.llm_gguf).stem))
    results["command"] = ("GENREC_DATA_DIR=../shared/datasets python benchmarks/rating.py "
                          + " ".join(f"--{k} {v}" for k, v in
                                     [("models", args.models), ("llm-gguf", args.llm_gguf)]
                                     if v)
                          + "".join(f" --set '{s}'" for s in args.set_)
                          + f" --name {args.name}")
    out = ROOT / "benchmarks" / "results" / "ml-100k" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(format_rating_results(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
