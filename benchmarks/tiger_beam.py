"""Beam width as an evaluation setting: re-evaluate saved TIGER models at several beam widths.

Each ``--variant NAME=RUN[,RUN...]`` names the run folders of one recipe over seeds (what
``benchmarks/tiger.py`` or ``genrec run`` wrote: ``config.yaml``, ``split/`` and
``models/tiger``). Every model is loaded (safetensors + JSON), its run's data and saved split
are reopened, and the full test set is evaluated under the run's own protocol once per
``--beams`` width, with nothing else changed. Per variant and width: the test metrics per seed,
their mean, std and 95% t-interval, the decoding seconds, and paired tests (over the test
users, on the seed-averaged per-user metrics) between the widths, and, with two or more
variants run on the same seeds, between the variants at each width. The width the model was
trained with, when among ``--beams``, is checked against the run's own ``results.json``: it
must reproduce the recorded test metrics.

Usage::

    OMP_NUM_THREADS=2 GENREC_DATA_DIR=../shared/datasets python benchmarks/tiger_beam.py \\
        --variant tiger=runs/tiger-beauty-cpu-hour,runs/tiger-beauty-cpu-hour-43,runs/tiger-beauty-cpu-hour-44 \\
        --beams 20 50 --out benchmarks/results/amazon-beauty/tiger-beam-cpu-hour.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from genrec._io import atomic_write_text
from genrec.evaluation.stats import pairwise_significance
from genrec.runs.experiment import open_saved_model
from genrec.runs.seeds import SIGNIFICANCE_METRICS, seed_row

_log = logging.getLogger("tiger_beam")

REPRODUCE_TOL = 1e-6
"""Largest difference allowed between a run's recorded test metric and its re-evaluation at
the recorded beam width (both are rounded to 6 decimals)."""


def evaluate_run(run: Path, beams: list[int]) -> dict[str, Any]:
    """One saved TIGER run evaluated on its test set at each width of ``beams``."""
    saved = open_saved_model(run, "tiger")
    cfg, model = saved.config, saved.model
    out: dict[str, Any] = {"run": str(run), "seed": cfg.protocol.seed,
                           "dataset": cfg.dataset.name, "protocol_text": cfg.protocol.describe(),
                           "protocol": cfg.protocol.model_dump(mode="json", exclude={"seed"}),
                           "trained_beam": model.config.beam_size, "per_beam": {}}
    per_user: dict[int, dict[str, np.ndarray]] = {}
    base = model.config
    for beam in beams:
        model.config = base.model_copy(update={"beam_size": beam})
        res = saved.evaluate_test()
        test = {k: round(float(v), 6) for k, v in res.summary().items()}
        out["per_beam"][str(beam)] = {"test": test, "eval_seconds": round(res.seconds, 3)}
        per_user[beam] = res.per_user
        out["_users"] = res.users
        _log.info("%s (seed %d) beam %d: recall@10 %.4f ndcg@10 %.4f (%.1fs)", run,
                  cfg.protocol.seed, beam, test.get("recall@10", float("nan")),
                  test.get("ndcg@10", float("nan")), res.seconds)
    model.config = base
    if base.beam_size in beams:
        again = out["per_beam"][str(base.beam_size)]["test"]
        recorded = [m for m in (saved.record or {}).get("test", {}) if m in again]
        diff = max(saved.reproduction_gaps(again, recorded).values())
        out["reproduces_recorded"] = {"max_abs_diff": round(diff, 9), "ok": diff <= REPRODUCE_TOL}
        if diff > REPRODUCE_TOL:
            _log.warning("%s: re-evaluation at beam %d differs from results.json by %.2e", run,
                         base.beam_size, diff)
    out["_per_user"] = per_user
    return out


def summarize_variant(name: str, runs: list[dict[str, Any]], beams: list[int],
                      metric_list: list[str]) -> dict[str, Any]:
    """Mean, std, t-interval per width over the seeds, and paired tests between widths."""
    per_beam = {}
    for beam in beams:
        seed_runs = [{"seed": r["seed"], "valid": {}, "test": r["per_beam"][str(beam)]["test"],
                      "fit_seconds": 0.0,
                      "eval_seconds": r["per_beam"][str(beam)]["eval_seconds"]} for r in runs]
        agg = seed_row(name, seed_runs)
        per_beam[str(beam)] = {k: agg[k] for k in ("test", "test_std", "test_ci95",
                                                   "eval_seconds")}
    averaged = {f"{name}@beam{b}": {m: np.mean(np.stack([r["_per_user"][b][m] for r in runs]),
                                               axis=0) for m in metric_list}
                for b in beams}
    tests = pairwise_significance(averaged, metric_list)
    return {"variant": name, "seeds": [r["seed"] for r in runs], "per_beam": per_beam,
            "paired_between_beams": [{k: (round(v, 6) if isinstance(v, float) else v)
                                      for k, v in t.items()} for t in tests.to_dicts()],
            "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
            "_averaged": {b: averaged[f"{name}@beam{b}"] for b in beams},
            "_users": runs[0]["_users"]}


def paired_between_variants(variants: list[dict[str, Any]], beams: list[int],
                            metric_list: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per width, paired tests between the variants over the test users, on each variant's
    seed-averaged per-user metrics (the variants must share their seeds and test users)."""
    first = variants[0]
    for v in variants[1:]:
        if sorted(v["seeds"]) != sorted(first["seeds"]):
            raise SystemExit(f"variants {first['variant']} and {v['variant']} ran other seeds: "
                             f"{first['seeds']} vs {v['seeds']}")
        if not np.array_equal(v["_users"], first["_users"]):
            raise SystemExit(f"variants {first['variant']} and {v['variant']} were tested on "
                             "other users (another split)")
    out = {}
    for b in beams:
        tests = pairwise_significance({v["variant"]: v["_averaged"][b] for v in variants},
                                      metric_list)
        out[str(b)] = [{k: (round(x, 6) if isinstance(x, float) else x) for k, x in t.items()}
                       for t in tests.to_dicts()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=RUN[,RUN...]",
                    help="a recipe's run folders over seeds (repeatable)")
    ap.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="", help="how the run was made (load, concurrency)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    variants = []
    for spec in args.variant:
        name, _, paths = spec.partition("=")
        if not name or not paths:
            ap.error(f"--variant {spec!r}: give NAME=RUN[,RUN...]")
        runs = [evaluate_run(Path(p), args.beams) for p in paths.split(",")]
        if any((r["dataset"], r["protocol"]) != (runs[0]["dataset"], runs[0]["protocol"])
               for r in runs):
            raise SystemExit(f"--variant {name}: its runs differ in dataset or protocol")
        metrics = [m for m in SIGNIFICANCE_METRICS
                   if all(m in r["_per_user"][args.beams[0]] for r in runs)]
        variants.append(summarize_variant(name, runs, args.beams, metrics))
    shared = [m for m in SIGNIFICANCE_METRICS
              if all(m in v["_averaged"][args.beams[0]] for v in variants)]
    between = (paired_between_variants(variants, args.beams, shared)
               if len(variants) > 1 else {})
    variants = [{k: v for k, v in var.items() if not k.startswith("_")} for var in variants]
    first = variants[0]["runs"][0]
    dataset, protocol_text = first["dataset"], first["protocol_text"]
    doc = {"benchmark": "tiger beam width", "dataset": dataset, "protocol_text": protocol_text,
           "beams": args.beams, "variants": variants, "paired_between_variants": between,
           "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "machine": {"cpus": os.cpu_count(), "processor": platform.machine(),
                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                       "load_average_at_end": os.getloadavg()},
           "note": args.note}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(f"protocol: {protocol_text}")
    print("| variant | beam | seeds | R@10 mean ± std [95% t] | N@10 mean ± std [95% t] | "
          "R@20 | eval s | reproduces recorded |")
    print("|---|---|---|---|---|---|---|---|")
    for v in variants:
        for b, s in v["per_beam"].items():
            t, sd, ci = s["test"], s["test_std"], s["test_ci95"]
            ok = all(r.get("reproduces_recorded", {}).get("ok", True) for r in v["runs"]) \
                if int(b) == v["runs"][0]["trained_beam"] else "–"
            print(f"| {v['variant']} | {b} | {len(v['seeds'])} | {t['recall@10']:.4f} ± "
                  f"{sd['recall@10']:.4f} [{ci['recall@10'][0]:.4f}, {ci['recall@10'][1]:.4f}]"
                  f" | {t['ndcg@10']:.4f} ± {sd['ndcg@10']:.4f} [{ci['ndcg@10'][0]:.4f}, "
                  f"{ci['ndcg@10'][1]:.4f}] | {t.get('recall@20', float('nan')):.4f} | "
                  f"{s['eval_seconds']:.1f} | {ok} |")
        for p in v["paired_between_beams"]:
            print(f"  {v['variant']} {p['metric']}: {p['model_a']} - {p['model_b']} = "
                  f"{p['diff']:+.5f} (t p_holm {p['t_p_holm']:.3g}, Wilcoxon p_holm {p['w_p_holm']:.3g})")
    for b, tests in between.items():
        for p in tests:
            print(f"  beam {b} {p['metric']}: {p['model_a']} - {p['model_b']} = {p['diff']:+.5f} "
                  f"(t p_holm {p['t_p_holm']:.3g}, Wilcoxon p_holm {p['w_p_holm']:.3g})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
