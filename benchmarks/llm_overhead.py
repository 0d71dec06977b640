"""Benchmark of the LLM layer on Amazon Beauty.

Measures, and writes to ``benchmarks/results/amazon-beauty/llm.json``:

1. raw LLM error rates (hallucinated, out-of-candidate, duplicate, format errors) of the tiny
   GGUF models served by llama.cpp (xllamacpp, 1 thread), listwise reranking the top-20 of the
   candidate model, with and without a JSON schema; and that the final lists stay grounded;
2. genrec's own overhead per rerank request (LLM and text-encoder time excluded), measured
   live and by replaying the recorded model outputs through a scripted client;
3. simulated-user success within 5 turns with and without critique-driven conversation, for
   the candidate model, with the overhead per turn (model scoring, encoder and LLM excluded);
4. an LLM-phrased simulated user (tiny model): how often its phrasing kept the facts.

Run: ``python benchmarks/llm_overhead.py [--users 1000] [--rerank-users 50]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from genrec._io import atomic_write_text
from genrec.config import load_config
from genrec.llm import LLMReranker, OpenAIClient, RerankConfig, SentenceEncoder
from genrec.llm.local import LocalLlamaServer
from genrec.llm.runner import _rows, prepare, run_simulation
from genrec.llm.scripted import ScriptedClient

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models"
GGUF = {"stories260K": "stories260K.gguf", "llama-2-tiny-random": "llama-2-tiny-random.gguf"}


def rerank_block(p, client, rows, cfg: RerankConfig, encoder) -> dict:
    """Rerank the sampled users; check the guarantee on every list; return rates + timing."""
    ev = _rows(p.test, rows)
    cands = p.model.recommend(ev.histories, cfg.n_candidates)
    rr = LLMReranker(client, p.catalog, cfg, encoder=encoder)
    out = rr.rerank(ev.histories, cands)
    leaks = 0
    for r in range(len(rows)):
        got = [int(i) for i in out.items[r] if i >= 0]
        offered = {int(i) for i in cands.items[r] if i >= 0}
        leaks += len(got) != len(set(got)) or not set(got) <= offered
    s = rr.stats_
    return {"stats": s.to_dict(), "overhead_ms_per_request": s.overhead_ms(),
            "encoder_ms_per_request": 1000 * s.encoder_s / max(s.requests, 1),
            "llm_ms_per_request": 1000 * s.llm_s / max(s.requests, 1),
            "final_lists_with_ungrounded_items": int(leaks),
            "raw_outputs": [t for res in rr.results_ for t in res.raw_outputs]}


def replay_overhead(p, rows, cfg: RerankConfig, outputs: list[str], encoder,
                    repeats: int = 3) -> dict:
    """Overhead per request when the recorded outputs are replayed (no server at all)."""
    ev = _rows(p.test, rows)
    cands = p.model.recommend(ev.histories, cfg.n_candidates)
    per = []
    for _ in range(repeats):
        rr = LLMReranker(ScriptedClient(outputs), p.catalog, cfg, encoder=encoder)
        rr.rerank(ev.histories, cands)
        per.append(rr.stats_.overhead_ms())
    return {"overhead_ms_per_request": float(np.median(per)), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--model", default="ease")
    ap.add_argument("--users", type=int, default=1000, help="simulated users")
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--rerank-users", type=int, default=50)
    ap.add_argument("--data-dir", default=os.environ.get("GENREC_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    t0 = time.perf_counter()
    cfg = load_config(None, [f"dataset.name={a.dataset}", f"dataset.data_dir={a.data_dir}",
                             f"output={Path(a.output) / 'runs' / a.dataset}"], models=[a.model])
    p = prepare(cfg)
    print(f"{a.dataset}: {p.dataset}; {a.model} fitted in {p.fit_seconds:.1f}s", flush=True)
    encoder = SentenceEncoder()
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(p.test), a.rerank_users, replace=False))
    result: dict = {"dataset": a.dataset, "model": a.model, "fit_seconds": p.fit_seconds,
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "command": "python benchmarks/llm_overhead.py " + " ".join(
                        f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
                        if k in ("users", "turns", "rerank_users")),
                    "rerank": {}}

    # 1-2. raw error rates of the tiny models, live overhead, replayed overhead
    for name, fname in GGUF.items():
        with LocalLlamaServer(MODELS / fname, n_ctx=4096, threads=1, alias=name) as srv, \
                OpenAIClient(base_url=srv.base_url, model=name, timeout_s=60,
                             max_retries=1) as client:
            for structured in (True, False):
                cfg = RerankConfig(n_candidates=20, k=10, history_len=10, title_chars=60,
                                   structured=structured)
                block = rerank_block(p, client, rows, cfg, encoder)
                outputs = block.pop("raw_outputs")
                block["replay"] = replay_overhead(p, rows, cfg, outputs, encoder)
                block["examples"] = outputs[:3]
                block["usage"] = client.usage.to_dict()
                key = f"{name}/{'json_schema' if structured else 'free_text'}"
                result["rerank"][key] = block
                r = block["stats"]
                print(f"{key:36s} halluc={r['hallucination_rate']:.3f} "
                      f"ooc={r['out_of_candidate_rate']:.3f} dup={r['duplicate_rate']:.3f} "
                      f"fmt={r['format_error_rate']:.3f} leaks="
                      f"{block['final_lists_with_ungrounded_items']} overhead="
                      f"{block['overhead_ms_per_request']:.2f}ms (replay "
                      f"{block['replay']['overhead_ms_per_request']:.2f}ms) llm="
                      f"{block['llm_ms_per_request']:.0f}ms", flush=True)

            if name == "stories260K":  # 4. LLM-phrased simulated user, small sample
                sim = run_simulation(p, turns=a.turns, users=20, client=client, phrasing="llm",
                                     baseline=False, encoder=encoder)["with_critiques"]
                sim.pop("transcripts")
                result["llm_phrased_user"] = sim
                print(f"LLM-phrased user (20 users): success@{a.turns}="
                      f"{sim['success_rate']:.3f}, phrasings kept={sim['llm_phrasings']}, "
                      f"fell back to template={sim['llm_phrasing_fallbacks']}", flush=True)

    # 3. simulated users with and without critiques
    sim = run_simulation(p, turns=a.turns, users=a.users, encoder=encoder)
    for key in ("with_critiques", "without_critiques"):
        sim[key].pop("transcripts")
        r = sim[key]
        print(f"{key:18s} success@{a.turns}={r['success_rate']:.3f} mean turns="
              f"{r['mean_turns_to_success']} recall@10/turn={[round(x, 3) for x in r['recall']['@10']]}"
              f" overhead/turn mean={r['overhead_ms_per_turn']['mean']:.2f} p50="
              f"{r['overhead_ms_per_turn']['p50']:.2f} p95={r['overhead_ms_per_turn']['p95']:.2f}"
              f" ms (model {r['model_ms_per_turn']:.2f} ms, encoder {r['encoder_ms_per_turn']:.2f}"
              f" ms)", flush=True)
    result["simulation"] = sim
    result["seconds"] = time.perf_counter() - t0
    out = Path(a.output) / a.dataset / "llm.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"written to {out} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
