"""Benchmark TIGER (semantic IDs + generative retrieval) from a recipe config.

Runs the experiment of the config (item text embeddings, tokenizer, TIGER training with
early stopping on validation, valid and test evaluation under the protocol), then, on the
first ``--sample-users`` test users: constrained vs unconstrained decoding time, the
hallucination rate of unconstrained decoding, and Recall@10 / NDCG@10 of beam vs exact
scoring (every item's full code scored) on ``--parity-users`` of them.

Usage::

    OMP_NUM_THREADS=1 GENREC_DATA_DIR=../shared/datasets \\
        python benchmarks/tiger.py configs/tiger-beauty-cpu.yaml [--set KEY=VALUE ...]

Writes ``benchmarks/results/<dataset>/tiger-<config stem>.json`` (the ``results.json`` shape
plus a ``tiger`` section) and prints a Markdown summary.

With ``--tokenizers-only`` it instead fits the config's tokenizer and an RQ-VAE
(``--rqvae-epochs``) on the same item text embeddings and writes their codebook health to
``benchmarks/results/<dataset>/tokenizers.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

from genrec.config import ExperimentConfig, load_config
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.generative import beam_risks
from genrec.evaluation.protocol import Protocol
from genrec.runs.experiment import (
    fit_and_evaluate,
    load_data,
    prepare,
    results_document,
    write_results,
)
from genrec.semantic_ids import RQVAEConfig, build_tokenizer, codebook_health
from genrec.text import item_embeddings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the config, measure decoding, write the results file and print a summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--sample-users", type=int, default=2000)
    ap.add_argument("--parity-users", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tokenizers-only", action="store_true")
    ap.add_argument("--note", default="", help="how the run was made (load, concurrency)")
    ap.add_argument("--rqvae-epochs", type=int, default=100)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = load_config(args.config, args.overrides)
    if len(cfg.models) != 1 or cfg.models[0].kind != "tiger":
        raise SystemExit("the config must list exactly one model, of kind tiger")
    if args.tokenizers_only:
        compare_tokenizers(cfg, args.rqvae_epochs, args.out)
        return
    data = prepare(cfg)
    model, row, _ = fit_and_evaluate(cfg.models[0], data, cfg)

    # -- decoding: constrained vs unconstrained, hallucinations, beam vs exact ----------------
    n = min(args.sample_users, len(data.test_set))
    catalogue = Catalogue.from_dataset(data.dataset)
    hist = data.test_set.histories.slice(0, n)
    timings = {}
    for name, constrained in (("constrained", True), ("unconstrained", False)):
        t0 = time.perf_counter()
        res = model.generate(hist, constrained=constrained)
        timings[name] = time.perf_counter() - t0
        risks = beam_risks(res, catalogue, histories=hist)
        if not constrained:
            hallucination = risks["hallucination_rate"]
        else:
            invalid = int(risks["invalid_items"])
    exact_model = copy.copy(model)  # shares the fitted state; only decoding differs
    exact_model.config = model.config.model_copy(update={"decoding": "exact"})
    parity_set = data.test_set.slice(0, min(args.parity_users, len(data.test_set)))
    protocol = Protocol(**(cfg.protocol.model_dump() | {"cutoffs": [10],
                                                         "metrics": ["recall", "ndcg"]}))
    t0 = time.perf_counter()
    beam_m = evaluate(model, parity_set, protocol).summary()
    beam_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact_m = evaluate(exact_model, parity_set, protocol).summary()
    exact_s = time.perf_counter() - t0
    r_beam, r_exact = beam_m["recall@10"], exact_m["recall@10"]
    tiger = {
        "codebook_health": model.health_.to_dict(),
        "dedup_level_size": int(model.codes_[:, -1].max()) + 1,
        "decoding_sample_users": n,
        "constrained_seconds": round(timings["constrained"], 3),
        "unconstrained_seconds": round(timings["unconstrained"], 3),
        "constrained_over_unconstrained": round(timings["constrained"]
                                                / timings["unconstrained"], 3),
        "constrained_invalid_items": invalid,
        "unconstrained_hallucination_rate": round(hallucination, 6),
        "parity_users": len(parity_set),
        "beam": {k: round(v, 6) for k, v in beam_m.items()} | {"seconds": round(beam_s, 2)},
        "exact": {k: round(v, 6) for k, v in exact_m.items()} | {"seconds": round(exact_s, 2)},
        "recall@10_relative_gap": (round(abs(r_beam - r_exact) / r_exact, 6) if r_exact
                                   else None),
        "train_history": getattr(model, "train_result_", None) and model.train_result_.history,
    }
    results = results_document(cfg, data, [row], tiger=tiger)
    results["benchmark"] = {"command": " ".join(["python benchmarks/tiger.py", *sys.argv[1:]]),
                            "note": args.note, "cpus": os.cpu_count(),
                            "gpu": results["environment"].get("gpu")}
    write_results(Path(cfg.output), results)
    out = args.out or ROOT / "benchmarks" / "results" / data.dataset.name / \
        f"tiger-{args.config.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    t = row["test"]
    print(f"# TIGER on {data.dataset.name} ({args.config.name})\n")
    print("| recall@5 | recall@10 | ndcg@10 | fit s |\n|---|---|---|---|")
    print(f"| {t['recall@5']:.4f} | {t['recall@10']:.4f} | {t['ndcg@10']:.4f} | "
          f"{row['fit_seconds']:.0f} |\n")
    print(model.health_.format())
    print(f"\nconstrained decoding: {invalid} invalid items; {tiger['constrained_seconds']}s vs "
          f"unconstrained {tiger['unconstrained_seconds']}s on {n} users "
          f"({tiger['constrained_over_unconstrained']}x); unconstrained hallucination rate "
          f"{hallucination:.2%}")
    print(f"beam vs exact on {len(parity_set)} users: recall@10 {r_beam:.4f} vs {r_exact:.4f}, "
          f"ndcg@10 {beam_m['ndcg@10']:.4f} vs {exact_m['ndcg@10']:.4f}")
    print(f"\nwritten: {out}")


def compare_tokenizers(cfg: ExperimentConfig, rqvae_epochs: int, out: Path | None) -> None:
    """Codebook health of the config's tokenizer and of an RQ-VAE on the same item vectors."""
    mcfg = cfg.models[0]
    ds = load_data(cfg.dataset)
    vectors = item_embeddings(ds.items, ds.n_items, mcfg.text)
    tok_cfg = mcfg.tokenizer
    rqvae = RQVAEConfig(n_levels=tok_cfg.n_levels, codebook_size=tok_cfg.codebook_size,
                        epochs=rqvae_epochs, seed=tok_cfg.seed)
    report = {"dataset": ds.name, "items": ds.n_items, "encoder": mcfg.text.encoder,
              "dim": int(vectors.shape[1]), "tokenizers": []}
    for tcfg in (tok_cfg, rqvae):
        t0 = time.perf_counter()
        codes = build_tokenizer(tcfg).fit_transform(vectors)
        seconds = time.perf_counter() - t0
        health = codebook_health(codes, tcfg.codebook_size)
        report["tokenizers"].append({"config": tcfg.model_dump(), "fit_seconds": round(seconds, 1),
                                     "health": health.to_dict()})
        print(f"## {tcfg.kind} ({seconds:.0f}s)\n{health.format()}\n")
    out = out or ROOT / "benchmarks" / "results" / ds.name / "tokenizers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
