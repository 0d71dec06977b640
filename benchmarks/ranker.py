"""The ranking stage: two-stage vs retriever alone, towers, and AdamW vs Clippy stability.

For every seed the two-stage model of the config (``configs/ranker-<dataset>.yaml``) is fitted
once under the run's protocol (held-out retriever, labelled pairs, refitted retriever, default
ranker); the other rankers reuse its retriever and training pairs
(:meth:`TwoStage.refit_ranker`), so every comparison within a seed is paired. The config's
other models are never fitted, so ``--set`` may only edit the two-stage one
(:func:`two_stage_index`).

(a) ``two_stage``: the pipeline vs its own (full-train) retriever alone on the test split,
    full ranking, seen items excluded; mean and t-interval over seeds, paired t / Wilcoxon
    tests on the seed-averaged per-user metrics (:func:`pairwise_significance`).
(b) ``towers``: shared-bottom, MMoE and DSelect-k: AUC / logloss per head on the ranker's
    held-out users' pairs, rating RMSE, test NDCG@10; the DSelect-k gates' experts in use.
(c) ``stability``: the ranker at ``--high-lr`` (no gradient clipping, no patience; the
    epoch with the best held-out logloss is kept) with AdamW and with Clippy: NaN restarts,
    loss spikes, final metrics. A run is *divergent* when it needed a NaN restart or its
    ranking collapsed (held-out interaction AUC below 0.55, i.e. about chance).

    GENREC_THREADS=1 GENREC_DATA_DIR=../shared/datasets python benchmarks/ranker.py
    GENREC_THREADS=1 ... python benchmarks/ranker.py --dataset amazon-beauty --parts a

Writes ``benchmarks/results/<dataset>/ranker.json`` (``--name`` changes the file name).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec._io import atomic_write_text
from genrec.config import load_config
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.stats import pairwise_significance, t_interval
from genrec.models.ranker import TwoStage
from genrec.runs.experiment import environment, fit_context, prepare

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ml-100k": "ranker-ml100k.yaml", "amazon-beauty": "ranker-beauty.yaml"}
_log = logging.getLogger("ranker-bench")


def _summary(values: list[float]) -> dict[str, Any]:
    lo, hi = t_interval(values)
    return {"mean": round(float(np.mean(values)), 6), "ci95": [round(lo, 6), round(hi, 6)],
            "per_seed": [round(v, 6) for v in values]}


def two_stage_index(kinds: list[str], sets: list[str]) -> int:
    """Index of the config's ``two_stage`` model, after checking that every ``--set
    models.N...`` override edits that model: the benchmark runs only it (its baseline is the
    model's own retriever, not the config's other models), so an override of another model
    would change nothing, silently. Raises ``SystemExit`` with the reason otherwise."""
    if "two_stage" not in kinds:
        raise SystemExit(f"benchmarks/ranker.py: the config has no two_stage model "
                         f"(models: {', '.join(kinds)})")
    i = kinds.index("two_stage")
    for s in sets:
        parts = s.partition("=")[0].strip().split(".")  # as config.apply_overrides reads it
        if parts[0] == "models" and len(parts) > 1 and parts[1] != str(i):
            raise SystemExit(
                f"benchmarks/ranker.py runs only models.{i} (two_stage) and compares it with "
                f"its own retriever; --set {s!r} edits another model, which it never fits. "
                f"Set models.{i}.retriever... to change the retriever.")
    return i


def _base_rate_logloss(model: TwoStage) -> float:
    y = model.pairs_.labels[model.pairs_.valid][:, 0].double()
    p = float(y.mean().clamp(1e-9, 1 - 1e-9))
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _gates(model: TwoStage) -> list[int] | None:
    tower = model.net_.tower
    if tower.kind != "dselect_k":
        return None
    x = torch.zeros(1, tower.experts[0][0].in_features)
    with torch.no_grad():
        g = tower.gate_weights(x)[0]
    return [int(v) for v in (g > 1e-6).sum(1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="ml-100k", choices=sorted(CONFIGS))
    ap.add_argument("--config", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--parts", default="a,b,c")
    ap.add_argument("--high-lr", type=float, default=0.3)
    ap.add_argument("--stability-epochs", type=int, default=5)
    ap.add_argument("--set", dest="set_", action="append", default=[])
    ap.add_argument("--name", default="ranker")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parts = set(args.parts.split(","))
    config = args.config or str(ROOT / "configs" / CONFIGS[args.dataset])
    cfg = load_config(config, ["output=/tmp/genrec-ranker-bench", "save_models=false",
                               *args.set_])
    mcfg = cfg.models[two_stage_index([m.kind for m in cfg.models], args.set_)]
    data = prepare(cfg, write=False)
    proto = cfg.protocol
    kw = {"item_popularity": data.split.train.item_counts(), "batch_size": cfg.eval_batch_size}

    a_runs: list[dict[str, Any]] = []
    per_user: dict[str, dict[str, list[np.ndarray]]] = {"two_stage": {}, "retriever": {}}
    b_runs: dict[str, list[dict[str, Any]]] = {}
    c_runs: dict[str, list[dict[str, Any]]] = {}

    def write() -> Path:
        """Write what the finished seeds measured (after every seed: a run cut short keeps
        its seeds)."""
        out: dict[str, Any] = {"dataset": args.dataset, "seeds": len(a_runs),
                               "config": str(Path(config).resolve().relative_to(ROOT)),
                               "protocol": proto.describe()}
        metrics = list(a_runs[0]["two_stage"])
        out["two_stage"] = {
            "runs": a_runs,
            "summary": {name: {m: _summary([r[name][m] for r in a_runs]) for m in metrics}
                        for name in ("two_stage", "retriever")},
            "significance": [
                {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                for r in pairwise_significance(
                    {n: {m: np.mean(np.stack(v), 0) for m, v in d.items()}
                     for n, d in per_user.items()}, ["ndcg@10", "recall@10"]).to_dicts()]}
        if b_runs:
            out["towers"] = {t: {"runs": runs, "summary": {
                k: _summary([r["held_out"][k] for r in runs if k in r["held_out"]])
                for k in runs[0]["held_out"] if k != "pairs"} | {
                "test_ndcg@10": _summary([r["test_ndcg@10"] for r in runs])}}
                for t, runs in b_runs.items()}
        if c_runs:
            out["stability"] = {"lr": args.high_lr, "epochs": args.stability_epochs,
                                "optimizers": {o: {
                                    "runs": runs,
                                    "divergent_runs": sum(r["divergent"] for r in runs),
                                    "nan_restarts": sum(r["nan_restarts"] for r in runs),
                                    "loss_spikes": sum(r["loss_spikes"] for r in runs),
                                    "test_ndcg@10": _summary([r["test_ndcg@10"] for r in runs])}
                                    for o, runs in c_runs.items()}}
        threads = os.environ.get("GENREC_THREADS", "1")
        out["command"] = (f"GENREC_THREADS={threads} GENREC_DATA_DIR=../shared/datasets python "
                          f"benchmarks/ranker.py --dataset {args.dataset} --seeds {args.seeds} "
                          f"--parts {args.parts} --high-lr {args.high_lr} --stability-epochs "
                          f"{args.stability_epochs}" + "".join(f" --set '{s}'" for s in args.set_)
                          + (f" --name {args.name}" if args.name != "ranker" else ""))
        out["environment"] = environment(cfg.threads)
        dest = ROOT / "benchmarks" / "results" / args.dataset / f"{args.name}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, json.dumps(out, indent=2))
        return dest

    for i in range(args.seeds):
        seed = proto.seed + i
        cfg_i = cfg.model_copy(update={"protocol": proto.model_copy(update={"seed": seed})})
        ctx = fit_context(mcfg, data, cfg_i)
        t0 = time.perf_counter()
        model = TwoStage(mcfg).fit(data.split.train, ctx)  # type: ignore[arg-type]
        fit_s = time.perf_counter() - t0
        base_ll = _base_rate_logloss(model)
        row: dict[str, Any] = {"seed": seed, "fit_seconds": round(fit_s, 1),
                               "pairs": len(model.pairs_),
                               "pair_recall": round(model.pair_recall_, 4),
                               "base_rate_logloss": round(base_ll, 6)}  # held-out pairs
        for name, m in (("two_stage", model), ("retriever", model.retriever_)):
            res = evaluate(m, data.test_set, proto, **kw)
            row[name] = {k: round(v, 6) for k, v in res.summary().items()}
            row[name + "_valid"] = round(evaluate(m, data.valid_set, proto.with_valid_metric(),
                                                  **kw).summary()[proto.valid_metric], 6)
            for metric, vals in res.per_user.items():
                per_user[name].setdefault(metric, []).append(vals)
        row["ranker_held_out"] = {k: round(v, 6) for k, v in model.ranker_metrics_.items()}
        row["training"] = {"epochs": len(model.train_result_.history),
                           "best_epoch": model.train_result_.best_epoch,
                           **model.stability_}
        a_runs.append(row)
        _log.info("seed %d: two-stage %s, retriever %s", seed, row["two_stage"]["ndcg@10"],
                  row["retriever"]["ndcg@10"])

        base = mcfg.ranker.model_dump()  # type: ignore[attr-defined]
        if "b" in parts:
            for tower in ("shared_bottom", "mmoe", "dselect_k"):
                # the config's own tower is the model above (same seed, same pairs)
                other = model if tower == base["tower"] else model.refit_ranker(
                    base | {"tower": tower}, ctx)
                res = evaluate(other, data.test_set, proto, **kw).summary()
                b_runs.setdefault(tower, []).append({
                    "seed": seed, "held_out": {k: round(v, 6) for k, v in
                                               other.ranker_metrics_.items()},
                    "test_ndcg@10": round(res["ndcg@10"], 6), "gate_experts": _gates(other),
                    "epochs": len(other.train_result_.history)})
        if "c" in parts:
            for opt in ("adamw", "clippy"):
                other = model.refit_ranker(base | {
                    "optimizer": opt, "lr": args.high_lr, "grad_clip": None, "patience": None,
                    "epochs": args.stability_epochs}, type(ctx)(items=ctx.items, seed=seed,
                                                                progress=False))
                res = evaluate(other, data.test_set, proto, **kw).summary()
                held = other.ranker_metrics_
                hist = other.train_result_.history
                divergent = bool(other.stability_["nan_restarts"] > 0
                                 or held.get("interaction_auc", 0.5) < 0.55)
                c_runs.setdefault(opt, []).append({
                    "seed": seed, **other.stability_, "divergent": divergent,
                    "epoch_losses": [round(h["loss"], 4) for h in hist],
                    "held_out": {k: round(v, 6) for k, v in held.items()},
                    "test_ndcg@10": round(res["ndcg@10"], 6)})
        write()

    dest = write()
    print(f"written to {dest}")


if __name__ == "__main__":
    main()
