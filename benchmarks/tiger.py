"""Benchmark TIGER (semantic IDs + generative retrieval) from a recipe config.

Runs the experiment of the config (item text embeddings, tokenizer, TIGER training with
early stopping on validation, valid and test evaluation under the protocol), then, on the
first ``--sample-users`` test users: constrained (with and without the history ban) vs
unconstrained decoding time (``--decode-repeats`` interleaved repeats; medians of wall and of
process CPU time), the
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
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from genrec._io import atomic_write_text
from genrec.config import ExperimentConfig, load_config
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.generative import beam_risks
from genrec.evaluation.protocol import Protocol
from genrec.models.base import FitContext
from genrec.models.tiger import TIGER, TIGERConfig
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
    ap.add_argument("config", type=Path, help="recipe (with --summarize: the output JSON)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--sample-users", type=int, default=2000)
    ap.add_argument("--parity-users", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tokenizers-only", action="store_true")
    ap.add_argument("--decode-only", action="store_true",
                    help="time decoding of the recipe's untrained network (no training)")
    ap.add_argument("--note", default="", help="how the run was made (load, concurrency)")
    ap.add_argument("--rqvae-epochs", type=int, default=100)
    ap.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSON",
                    help="combine results files of one recipe over seeds into --out "
                         "(mean, std and a 95%% t-interval per test metric)")
    ap.add_argument("--paired-with", type=Path, default=None, metavar="SUMMARY_JSON",
                    help="with --summarize: a paired t-test over the seeds both summaries "
                         "share, against another recipe's summary (e.g. the TIGER CPU recipe)")
    ap.add_argument("--decode-repeats", type=int, default=3,
                    help="interleaved timing repeats of each decoding variant (medians)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.summarize:
        summarize(args.summarize, args.out or args.config, args.paired_with)
        return
    cfg = load_config(args.config, args.overrides)
    if len(cfg.models) != 1 or cfg.models[0].kind != "tiger":
        raise SystemExit("the config must list exactly one model, of kind tiger")
    if args.tokenizers_only:
        compare_tokenizers(cfg, args.rqvae_epochs, args.out)
        return
    if args.decode_only:
        decode_only(cfg, args)
        return
    data = prepare(cfg)
    model, row, _ = fit_and_evaluate(cfg.models[0], data, cfg)

    # -- decoding: constrained vs unconstrained, hallucinations, beam vs exact ----------------
    n = min(args.sample_users, len(data.test_set))
    catalogue = Catalogue.from_dataset(data.dataset)
    hist = data.test_set.histories.slice(0, n)
    decoding = decode_timings(model, hist, catalogue, args.decode_repeats)
    invalid = decoding.pop("constrained_invalid_items")
    hallucination = decoding.pop("unconstrained_hallucination_rate")
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
        **decoding,
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
          f"({tiger['constrained_over_unconstrained']}x wall, "
          f"{tiger['constrained_over_unconstrained_cpu']}x CPU; without the history ban "
          f"{tiger['constrained_no_ban_over_unconstrained_cpu']}x CPU); unconstrained "
          f"hallucination rate "
          f"{hallucination:.2%}")
    print(f"beam vs exact on {len(parity_set)} users: recall@10 {r_beam:.4f} vs {r_exact:.4f}, "
          f"ndcg@10 {beam_m['ndcg@10']:.4f} vs {exact_m['ndcg@10']:.4f}")
    print(f"\nwritten: {out}")


def decode_timings(model: Any, hist: Any, catalogue: Catalogue, repeats: int) -> dict[str, Any]:
    """Constrained (with and without the history ban) vs unconstrained beam search of
    ``model`` on ``hist``: ``repeats`` interleaved rounds (so a change in machine load hits
    every variant alike), wall and process CPU time of each, ratios on the medians, the
    invalid items of constrained decoding and the hallucination rate of unconstrained."""
    banless = copy.copy(model)
    banless.config = model.config.model_copy(update={"exclude_history": False})
    variants = (("constrained", model, True), ("unconstrained", model, False),
                ("constrained_no_ban", banless, True))
    walls: dict[str, list[float]] = {v: [] for v, _, _ in variants}
    cpus: dict[str, list[float]] = {v: [] for v, _, _ in variants}
    invalid, hallucination = 0, 0.0
    for _ in range(repeats):
        for name, m, constrained in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            res = m.generate(hist, constrained=constrained)
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
            risks = beam_risks(res, catalogue, histories=hist)
            if name == "unconstrained":
                hallucination = risks["hallucination_rate"]
            elif name == "constrained":
                invalid = max(invalid, int(risks["invalid_items"]))
    wall = {v: statistics.median(w) for v, w in walls.items()}
    cpu = {v: statistics.median(c) for v, c in cpus.items()}
    return {
        "decoding_sample_users": len(hist),
        "constrained_seconds": round(wall["constrained"], 3),
        "unconstrained_seconds": round(wall["unconstrained"], 3),
        "constrained_no_ban_seconds": round(wall["constrained_no_ban"], 3),
        "constrained_over_unconstrained": round(wall["constrained"] / wall["unconstrained"], 3),
        "decode_repeats": repeats,
        "decode_wall_seconds": {v: [round(x, 3) for x in w] for v, w in walls.items()},
        "decode_cpu_seconds": {v: [round(x, 3) for x in c] for v, c in cpus.items()},
        "constrained_over_unconstrained_cpu": round(cpu["constrained"] / cpu["unconstrained"], 3),
        "constrained_no_ban_over_unconstrained_cpu": round(cpu["constrained_no_ban"]
                                                           / cpu["unconstrained"], 3),
        "constrained_invalid_items": invalid,
        "unconstrained_hallucination_rate": round(hallucination, 6),
    }


def decode_only(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    """Decoding cost of the recipe's network shape without training it: the semantic IDs
    are fitted as in ``fit``, the network keeps its seeded initial weights. Beam search does
    the same work whatever the weights (``beam_size`` beams per level, the same trie masks
    and history bans), so the constrained / unconstrained ratio is the trained model's;
    accuracy and hallucination figures of an untrained network mean nothing and are not
    reported."""
    data = prepare(cfg)
    train = data.split.train
    model = TIGER(TIGERConfig.model_validate(cfg.models[0].model_dump()))
    model.fit_semantic_ids(train, FitContext(items=data.dataset.items, seed=cfg.protocol.seed))
    # What fit sets before training (TIGER._fit), then the untrained network.
    model.net_vocab_ = list(model.semantic_ids_.vocab_sizes_)
    model.cold_ = train.item_counts() == 0
    torch.manual_seed(cfg.protocol.seed)
    model.net_ = model._build_net().eval()
    model.n_users_, model.n_items_ = train.n_users, train.n_items
    n = min(args.sample_users, len(data.test_set))
    hist = data.test_set.histories.slice(0, n)
    decoding = decode_timings(model, hist, Catalogue.from_dataset(data.dataset),
                              args.decode_repeats)
    decoding.pop("unconstrained_hallucination_rate")
    c = model.config
    doc = {"dataset": data.dataset.name, "protocol_text": cfg.protocol.describe(),
           "network": {"dim": c.dim, "n_layers": c.n_layers, "n_heads": c.n_heads,
                       "ff_dim": c.ff_dim, "max_len": c.max_len, "beam_size": c.beam_size,
                       "parameters": sum(p.numel() for p in model.net_.parameters()),
                       "weights": "seeded initialisation, untrained"},
           "codebook_health": model.health_.to_dict(), "decoding": decoding,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch_threads": torch.get_num_threads(),
                       "load_average": [round(x, 2) for x in os.getloadavg()]},
           "note": args.note,
           "command": " ".join(["python benchmarks/tiger.py", *sys.argv[1:]])}
    out = args.out or ROOT / "benchmarks" / "results" / data.dataset.name / \
        f"tiger-decoding-{args.config.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"{c.n_layers}+{c.n_layers} blocks, width {c.dim}, beam {c.beam_size}, {n} users: "
          f"constrained {decoding['constrained_over_unconstrained_cpu']}x unconstrained CPU "
          f"({decoding['constrained_over_unconstrained']}x wall), without the history ban "
          f"{decoding['constrained_no_ban_over_unconstrained_cpu']}x; "
          f"{decoding['constrained_invalid_items']} invalid items\nwritten: {out}")


def paired_over_seeds(doc: dict[str, Any], other: dict[str, Any],
                      metrics: tuple[str, ...] = ("recall@10", "ndcg@10", "recall@20",
                                                  "ndcg@20")) -> dict[str, Any]:
    """Paired t-test over the seeds two seed summaries share: per metric the mean difference
    ``doc - other`` and its two-sided p-value (one test value per seed on each side)."""
    seeds = [r["seed"] for r in doc["runs"]]
    o_seeds = [r["seed"] for r in other["runs"]]
    shared = [s for s in seeds if s in o_seeds]
    if len(shared) < 2:
        raise SystemExit(f"--paired-with: the summaries share seeds {shared}; need 2 or more")
    out: dict[str, Any] = {"model": other["model"], "seeds": shared, "metrics": {}}
    for m in metrics:
        a = np.array([doc["test"][m]["values"][seeds.index(s)] for s in shared])
        b = np.array([other["test"][m]["values"][o_seeds.index(s)] for s in shared])
        p = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
        out["metrics"][m] = {"mean": round(float(a.mean()), 6),
                             "other_mean": round(float(b.mean()), 6),
                             "diff": round(float((a - b).mean()), 6), "p_paired_t": round(p, 4)}
    return out


def summarize(files: list[Path], out: Path, paired_with: Path | None = None) -> None:
    """Seed summary of several runs of one recipe: per test metric the mean, the sample std
    and a 95% t-interval over the seeds, plus each run's seed, epochs and times; with
    ``paired_with``, a paired t-test over the shared seeds against that summary."""
    docs = [json.loads(Path(f).read_text()) for f in files]
    if len({d["protocol_text"].rsplit("seed=", 1)[0] for d in docs}) != 1:
        raise SystemExit("the runs differ in protocol (beyond the seed)")
    rows = [d["results"][0] for d in docs]
    metrics: dict[str, Any] = {}
    for m in rows[0]["test"]:
        v = np.array([r["test"][m] for r in rows], dtype=np.float64)
        half = (float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
                if len(v) > 1 else float("nan"))
        metrics[m] = {"mean": round(float(v.mean()), 6), "std": round(float(v.std(ddof=1)), 6)
                      if len(v) > 1 else None, "ci95": [round(float(v.mean()) - half, 6),
                                                        round(float(v.mean()) + half, 6)],
                      "values": [round(float(x), 6) for x in v]}
    runs = [{"file": str(f), "seed": d["protocol"]["seed"], "fit_seconds": r["fit_seconds"],
             "epochs": (r.get("training") or {}).get("epochs_run"),
             "note": d.get("benchmark", {}).get("note", ""),
             "constrained_over_unconstrained_cpu":
                 d["tiger"].get("constrained_over_unconstrained_cpu"),
             "constrained_invalid_items": d["tiger"]["constrained_invalid_items"]}
            for f, d, r in zip(files, docs, rows, strict=True)]
    doc = {"protocol_text": docs[0]["protocol_text"], "dataset": docs[0]["dataset"]["name"],
           "model": rows[0]["model"], "seeds": len(rows), "test": metrics, "runs": runs,
           "command": " ".join(["python benchmarks/tiger.py", *sys.argv[1:]])}
    if paired_with is not None:
        doc["paired_with"] = {"file": str(paired_with), **paired_over_seeds(
            doc, json.loads(Path(paired_with).read_text()))}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=2))
    print(f"# {doc['model']} on {doc['dataset']}, {len(rows)} seeds ({doc['protocol_text']})\n")
    print("| metric | mean | std | 95% CI |\n|---|---|---|---|")
    for m in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        r = metrics[m]
        print(f"| {m} | {r['mean']:.4f} | {r['std'] if r['std'] is not None else float('nan'):.4f} | "
              f"{r['ci95'][0]:.4f}–{r['ci95'][1]:.4f} |")
    if paired_with is not None:
        pw = doc["paired_with"]
        print(f"\npaired t over seeds {pw['seeds']} against {pw['model']} ({paired_with}):")
        for m, r in pw["metrics"].items():
            print(f"  {m}: {r['mean']:.4f} vs {r['other_mean']:.4f}, diff {r['diff']:+.4f}, "
                  f"p = {r['p_paired_t']:.3f}")
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
