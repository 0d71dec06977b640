"""Benchmark generative retrieval, second generation: TIGER vs MTGRec vs a LETTER-style
collaborative tokenizer vs cold-item fusion, several seeds, beam 20 and 50, paired tests.

Each variant is the recipe's TIGER with one switch changed (:func:`variant_overrides`); every
variant is fitted and evaluated once per seed with the glue's one path
(:func:`genrec.runs.seeds.fit_and_evaluate_seeds` over
:func:`genrec.runs.experiment.fit_and_evaluate`), then each fitted model is also scored with
beam 50, and its constrained beams are checked for invalid items
(:func:`genrec.evaluation.generative.beam_risks`). The ``cold`` run uses the cold-start
protocol (``protocol.split.cold_items``, default 0.1): TIGER is fitted per seed and scored
without and with cold-item fusion (``cold_items: prefix``) for each ``--cold-weights`` value;
every prefix length ``1..L`` is tried with each weight, and the setting is chosen on
validation twice: by Recall@10 over all users, and by cold-target Recall@10 among the
settings that keep warm-target Recall@10 within ``--warm-tolerance`` (5%) of no fusion
(:func:`choose_cold_setting`, the issue's cold target stated on validation); cold / warm
target metrics are :func:`genrec.runs.experiment.cold_warm`'s.

Usage (one process per group of variants; results per variant, then a summary)::

    GENREC_THREADS=1 GENREC_DATA_DIR=../shared/datasets python benchmarks/tiger_next.py \\
        configs/tiger-next-ml100k.yaml --variants tiger letter
    python benchmarks/tiger_next.py configs/tiger-next-ml100k.yaml --variants mtgrec
    python benchmarks/tiger_next.py configs/tiger-next-ml100k.yaml --variants cold
    python benchmarks/tiger_next.py configs/tiger-next-ml100k.yaml --summarize

Writes ``benchmarks/results/<dataset>/tiger-next-<variant>.json`` per variant and, with
``--summarize``, ``tiger-next.json`` (seed means with 95% t-intervals, paired tests of each
variant against TIGER on the seed-averaged per-user metrics) and a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from genrec._io import atomic_write_text
from genrec.config import ExperimentConfig, load_config
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.generative import beam_risks
from genrec.evaluation.stats import paired_tests, t_interval
from genrec.models.tiger import TIGER, TIGERConfig
from genrec.runs.experiment import cold_warm, environment, fit_and_evaluate, prepare
from genrec.runs.seeds import fit_and_evaluate_seeds

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")

VARIANT_NAMES = ("tiger", "mtgrec", "mtgrec-uniform", "letter", "letter-no-collab")


def variant_overrides(name: str, base: TIGERConfig) -> dict[str, Any]:
    """The config switches of a variant, derived from the recipe's TIGER ``base``.

    MTGRec gets the same total epochs as TIGER (half multi-identifier pre-training, half
    fine-tuning); LETTER the recipe tokenizer's levels, codebook size and seed.
    """
    half = max(1, base.train.epochs // 2)
    multi = {"groups": 3, "pretrain_epochs": half, "update_every": 20}
    tok = base.tokenizer
    letter = {"kind": "letter", "n_levels": tok.n_levels, "codebook_size": tok.codebook_size,
              "seed": tok.seed, "latent_dim": 32, "hidden_dims": [256, 128], "epochs": 100,
              "batch_size": 256, "collab_weight": 0.1, "balance_weight": 0.1}
    return {
        "tiger": {},
        "mtgrec": {"multi_id": multi, "train": {"epochs": max(1, base.train.epochs - half)}},
        "mtgrec-uniform": {"multi_id": multi | {"curriculum": "uniform"},
                           "train": {"epochs": max(1, base.train.epochs - half)}},
        "letter": {"tokenizer": letter},
        # Ablation: the same RQ-VAE + balance term without the collaborative alignment.
        "letter-no-collab": {"tokenizer": letter | {"collab_weight": 0.0}},
        "cold": {},
    }[name]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            and k != "tokenizer" else v
    return out


def _train_seconds_to_best(model: TIGER) -> dict[str, Any]:
    """Training seconds up to the reported (best) epoch, pre-training included."""
    tr = model.train_result_
    best = tr.best_epoch or len(tr.history)
    seconds = sum(h["seconds"] for h in tr.history[:best])
    pre = getattr(model, "pretrain_result_", None)
    pre_s = sum(h["seconds"] for h in pre.history) if pre is not None else 0.0
    return {"best_epoch": best, "epochs_run": len(tr.history),
            "pretrain_epochs_run": len(pre.history) if pre is not None else 0,
            "train_seconds_to_best": round(seconds + pre_s, 1)}


def _per_user(result: Any) -> dict[str, np.ndarray]:
    return {m: np.asarray(result.per_user[m], dtype=np.float64) for m in METRICS
            if m in result.per_user}


def run_variant(name: str, cfg: ExperimentConfig, cold_weights: list[float],
                cold_fraction: float = 0.1,
                cold_levels: list[int] | None = None) -> dict[str, Any]:
    """Fit and evaluate one variant on every seed; the per-variant results document."""
    cold = name == "cold"
    if cold:
        split = cfg.protocol.split.model_copy(update={"cold_items": cold_fraction})
        cfg = cfg.model_copy(update={"protocol": cfg.protocol.model_copy(
            update={"split": split})})
    base = TIGERConfig.model_validate(cfg.models[0].model_dump())
    mcfg = TIGERConfig.model_validate(_merge(base.model_dump(), variant_overrides(name, base)))
    cfg = cfg.model_copy(update={"output": str(Path(cfg.output) / name)})
    data = prepare(cfg)
    catalogue = Catalogue.from_dataset(data.dataset)
    kw = {"item_popularity": data.split.train.item_counts(), "batch_size": cfg.eval_batch_size}
    extra: list[dict[str, Any]] = []
    beam50_users: list[dict[str, np.ndarray]] = []
    # Cold fusion settings "levels:weight": every prefix length, every weight.
    levels_tried = cold_levels or range(1, mcfg.tokenizer.n_levels + 1)
    cold_users: dict[str, list[dict[str, np.ndarray]]] = {
        f"{n}:{w}": [] for n in levels_tried for w in cold_weights}

    def fit_eval(mcfg_i: Any, data_i: Any, cfg_i: ExperimentConfig, **kwargs: Any):
        model, row, test = fit_and_evaluate(mcfg_i, data_i, cfg_i, **kwargs)
        seed = cfg_i.protocol.seed
        rec: dict[str, Any] = {"seed": seed, "fit_seconds": row["fit_seconds"],
                               **_train_seconds_to_best(model)}
        if getattr(model, "curriculum_", None):
            rec["curriculum_final_weights"] = model.curriculum_[-1]["weights"]
            rec["curriculum_updates"] = len(model.curriculum_)
        hist = data.test_set.histories
        for beam in (20, 50):
            m = copy.copy(model)
            m.config = model.config.model_copy(update={"beam_size": beam})
            risks = beam_risks(m.generate(hist), catalogue, histories=hist)
            rec[f"beam{beam}_invalid_items"] = int(risks["invalid_items"])
            if beam == 50:
                res = evaluate(m, data.test_set, cfg_i.protocol, **kw)
                rec["beam50"] = {k: round(v, 6) for k, v in res.summary().items()
                                 if k in METRICS}
                beam50_users.append(_per_user(res))
        if cold:
            rec["cold_start"] = {"off": row.get("cold_start")}
            # Validation split by target (cold / warm) without fusion: the baseline of the
            # constrained choice in summarize().
            valid_off = evaluate(model, data.valid_set, cfg_i.protocol.with_valid_metric(), **kw)
            rec["cold_valid_off"] = cold_warm(valid_off, data.valid_set, data.split.cold_items)
            for key, users in cold_users.items():
                lv, wv = key.split(":")
                levels, w = int(lv), float(wv)
                m = copy.copy(model)
                m.__dict__.pop("_cold_table", None)
                m.config = model.config.model_copy(update={
                    "cold_items": "prefix", "cold_weight": w, "cold_prefix_levels": levels})
                valid = evaluate(m, data.valid_set, cfg_i.protocol.with_valid_metric(), **kw)
                res = evaluate(m, data.test_set, cfg_i.protocol, keep_top_items=True, **kw)
                top = np.asarray(res.top_items)[:, :10] if res.top_items is not None else None
                outside = int(((top >= data.dataset.n_items) | (top < -1)).sum()) \
                    if top is not None else None
                n_cold = int(np.isin(top, data.split.cold_items).sum()) if top is not None \
                    else None
                rec["cold_start"][key] = {
                    "valid": {k: round(v, 6) for k, v in valid.summary().items()
                              if k in METRICS},
                    "test": {k: round(v, 6) for k, v in res.summary().items() if k in METRICS},
                    "split": cold_warm(res, data.test_set, data.split.cold_items),
                    "valid_split": cold_warm(valid, data.valid_set, data.split.cold_items),
                    "non_catalogue_items_top10": outside, "cold_items_in_top10": n_cold}
                users.append(_per_user(res))
        extra.append(rec)
        return model, row, test

    row, mean_user = fit_and_evaluate_seeds(mcfg, data, cfg, fit_eval)
    doc: dict[str, Any] = {
        "variant": name, "config": mcfg.model_dump(mode="json"),
        "protocol_text": cfg.protocol.describe() + f"; seeds {row['seeds']}",
        "dataset": {"name": data.dataset.name, "users": data.dataset.n_users,
                    "items": data.dataset.n_items,
                    "cold_items": len(data.split.cold_items)},
        "row": row, "per_seed_extra": extra,
        "per_user_mean": {m: mean_user[m].round(6).tolist() for m in METRICS
                          if m in mean_user},
        "per_user_mean_beam50": {m: np.mean([u[m] for u in beam50_users], 0).round(6).tolist()
                                 for m in METRICS},
    }
    if cold:
        doc["per_user_mean_cold"] = {w: {m: np.mean([u[m] for u in us], 0).round(6)
                                              .tolist() for m in ("recall@10", "ndcg@10")}
                                     for w, us in cold_users.items()}
    doc["benchmark"] = {"command": " ".join(["python benchmarks/tiger_next.py", *sys.argv[1:]]),
                        "cpus": os.cpu_count(), "environment": environment(cfg.threads)}
    return doc


def _folder(dataset: str, tag: str | None) -> Path:
    folder = ROOT / "benchmarks" / "results" / dataset
    return folder / tag if tag else folder


def _ci(values: list[float]) -> list[float]:
    return [round(x, 6) for x in t_interval(values)]


def _merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's document from the documents of runs on disjoint seeds (``--part``):
    per-seed records concatenated, per-user means averaged with the seed counts as weights.
    The merged ``row`` keeps only its per-seed list (what the cold summary reads)."""
    if len(parts) == 1:
        return parts[0]
    n = np.asarray([len(d["per_seed_extra"]) for d in parts], dtype=float)

    def wmean(arrays: list[list[float]]) -> list[float]:
        return (np.tensordot(n, arrays, 1) / n.sum()).round(6).tolist()

    doc = dict(parts[0])
    doc["per_seed_extra"] = [e for d in parts for e in d["per_seed_extra"]]
    doc["row"] = {"per_seed": [r for d in parts for r in d["row"]["per_seed"]],
                  "seeds": [s for d in parts for s in d["row"]["seeds"]]}
    for key in ("per_user_mean", "per_user_mean_beam50"):
        doc[key] = {m: wmean([d[key][m] for d in parts]) for m in parts[0][key]}
    if "per_user_mean_cold" in parts[0]:
        doc["per_user_mean_cold"] = {
            w: {m: wmean([d["per_user_mean_cold"][w][m] for d in parts]) for m in ms}
            for w, ms in parts[0]["per_user_mean_cold"].items()}
    doc["merged_from_parts"] = [d["benchmark"]["command"] for d in parts]
    return doc


def choose_cold_setting(ext: list[dict[str, Any]], tolerance: float = 0.05
                        ) -> dict[str, Any] | None:
    """The cold-fusion setting chosen on validation the way the cold target is stated: the
    highest validation cold-target Recall@10 (mean over seeds) among the settings whose
    validation warm-target Recall@10 is at least ``1 - tolerance`` of no fusion's; ``"off"``
    when no such setting reaches more cold Recall@10 than no fusion. ``None`` for runs that
    recorded no validation split by target (made before it was recorded)."""
    if not ext or not all("cold_valid_off" in e for e in ext):
        return None

    def mean(splits: list[dict[str, Any]], group: str) -> float:
        return float(np.mean([sp[group]["recall@10"] for sp in splits]))

    off = [e["cold_valid_off"] for e in ext]
    floor = (1 - tolerance) * mean(off, "warm")
    valid = {"off": {"warm_recall@10": round(mean(off, "warm"), 6),
                     "cold_recall@10": round(mean(off, "cold"), 6)}}
    chosen, best = "off", mean(off, "cold")
    for w in (k for k in ext[0]["cold_start"] if k != "off"):
        splits = [e["cold_start"][w]["valid_split"] for e in ext]
        warm, cold = mean(splits, "warm"), mean(splits, "cold")
        valid[w] = {"warm_recall@10": round(warm, 6), "cold_recall@10": round(cold, 6),
                    "warm_within_tolerance": warm >= floor}
        if warm >= floor and cold > best:
            chosen, best = w, cold
    return {"setting": chosen, "warm_tolerance": tolerance, "valid": valid}


def summarize(dataset: str, tag: str | None = None, warm_tolerance: float = 0.05
              ) -> dict[str, Any]:
    """Merge the per-variant files: means, intervals, paired tests against TIGER.

    Files ``tiger-next-<variant>.<part>.json`` (runs of one variant on different seeds) are
    merged into the variant first. Without a ``tiger`` run only the cold study is summarised
    (its own no-fusion decoding is the baseline there). The cold study's setting is chosen
    on validation twice: by all-user Recall@10, and by :func:`choose_cold_setting` (cold
    Recall@10 with warm Recall@10 within ``warm_tolerance`` of no fusion)."""
    folder = _folder(dataset, tag)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(folder.glob("tiger-next-*.json")):
        grouped.setdefault(p.stem.removeprefix("tiger-next-").split(".")[0], []).append(
            json.loads(p.read_text()))
    docs = {name: _merge_parts(parts) for name, parts in grouped.items()}
    if "tiger" not in docs and "cold" not in docs:
        raise SystemExit(f"no tiger-next-tiger.json in {folder}: run --variants tiger first")
    base = docs.get("tiger", docs.get("cold"))
    out: dict[str, Any] = {"dataset": dataset, "variants": {}}
    for name, d in docs.items():
        if name == "cold":
            continue
        runs = d["row"]["per_seed"]
        ext = d["per_seed_extra"]
        v: dict[str, Any] = {
            "seeds": d["row"]["seeds"],
            "test": {m: d["row"]["test"][m] for m in METRICS},
            "test_std": {m: d["row"]["test_std"][m] for m in METRICS},
            "test_ci95": {m: d["row"]["test_ci95"][m] for m in METRICS},
            "beam50": {m: round(float(np.mean([e["beam50"][m] for e in ext])), 6)
                       for m in METRICS},
            "beam50_ci95": {m: _ci([e["beam50"][m] for e in ext]) for m in METRICS},
            "invalid_items": {b: sum(e[f"beam{b}_invalid_items"] for e in ext)
                              for b in (20, 50)},
            "fit_seconds_mean": round(float(np.mean([r["fit_seconds"] for r in runs])), 1),
            "train_seconds_to_best_mean": round(float(np.mean(
                [e["train_seconds_to_best"] for e in ext])), 1),
            "best_epochs": [e["best_epoch"] for e in ext],
        }
        if name != "tiger":
            v["paired_vs_tiger"] = {}
            for key, beam in (("per_user_mean", 20), ("per_user_mean_beam50", 50)):
                for m in ("recall@10", "ndcg@10"):
                    a, b = np.asarray(d[key][m]), np.asarray(base[key][m])
                    seed_a = [r["test"][m] for r in runs] if beam == 20 else \
                        [e["beam50"][m] for e in ext]
                    seed_b = [r["test"][m] for r in base["row"]["per_seed"]] if beam == 20 \
                        else [e["beam50"][m] for e in base["per_seed_extra"]]
                    v["paired_vs_tiger"][f"beam{beam}/{m}"] = {
                        "diff": round(float(a.mean() - b.mean()), 6),
                        "per_user": {k: round(x, 6) for k, x in paired_tests(a, b).items()},
                        "per_seed_t_p": round(paired_tests(np.asarray(seed_a),
                                                           np.asarray(seed_b))["t_p"], 6)}
        out["variants"][name] = v
    if "cold" in docs:
        d = docs["cold"]
        ext = d["per_seed_extra"]
        weights = [k for k in ext[0]["cold_start"] if k != "off"]
        chosen = max(weights, key=lambda w: np.mean([e["cold_start"][w]["valid"]["recall@10"]
                                                      for e in ext]))
        cold: dict[str, Any] = {"cold_items": d["dataset"]["cold_items"],
                                "users": ext[0]["cold_start"]["off"]["users"],
                                "chosen_on_valid_recall@10": chosen,
                                "chosen_on_valid_cold_warm": choose_cold_setting(
                                    ext, warm_tolerance),
                                "by_weight": {}}
        for w in ["off", *weights]:
            if w == "off":
                parts = [e["cold_start"]["off"] for e in ext]
                alls = [r["test"] for r in d["row"]["per_seed"]]
            else:
                parts = [e["cold_start"][w]["split"] for e in ext]
                alls = [e["cold_start"][w]["test"] for e in ext]
            cold["by_weight"][w] = {
                "all_recall@10": round(float(np.mean([a["recall@10"] for a in alls])), 6),
                "all_ndcg@10": round(float(np.mean([a["ndcg@10"] for a in alls])), 6),
                **{f"{g}_{m}": round(float(np.mean([p[g][m] for p in parts])), 6)
                   for g in ("warm", "cold") for m in ("recall@10", "ndcg@10", "recall@20")},
                "cold_recall@10_ci95": _ci([p["cold"]["recall@10"] for p in parts]),
                "warm_recall@10_ci95": _ci([p["warm"]["recall@10"] for p in parts]),
                "non_catalogue_items_top10": (None if w == "off" else sum(
                    e["cold_start"][w]["non_catalogue_items_top10"] for e in ext)),
                "cold_items_in_top10": (None if w == "off" else sum(
                    e["cold_start"][w]["cold_items_in_top10"] for e in ext)),
            }
            if w != "off":
                a = np.asarray(d["per_user_mean_cold"][w]["recall@10"])
                b = np.asarray(d["per_user_mean"]["recall@10"])
                cold["by_weight"][w]["paired_vs_off_recall@10"] = {
                    k: round(x, 6) for k, x in paired_tests(a, b).items()}
        out["cold"] = cold
    out["environment"] = base["benchmark"]["environment"]
    return out


def markdown(s: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables of a summary."""
    lines = [("| variant | R@10 ± std (95% CI) | N@10 ± std (95% CI) | R@10 beam 50 (95% CI) | "
              "N@10 beam 50 (95% CI) | invalid (beam 20/50) | fit s | train s to best | "
              "best epochs | Δ R@10 vs TIGER (Wilcoxon p) |"),
             "|---|---|---|---|---|---|---|---|---|---|"] if s["variants"] else []

    def cell(mean: float, ci: list[float], std: float | None = None) -> str:
        sd = f" ± {std:.4f}" if std is not None else ""
        return f"{mean:.4f}{sd} ({ci[0]:.4f}–{ci[1]:.4f})"

    for name, v in s["variants"].items():
        t, ci, sd = v["test"], v["test_ci95"], v.get("test_std", {})
        b50, b50ci = v["beam50"], v.get("beam50_ci95")
        pv = v.get("paired_vs_tiger", {}).get("beam20/recall@10")
        delta = f"{pv['diff']:+.4f} (p={pv['per_user']['w_p']:.3f})" if pv else "–"
        wide = [cell(b50[m], b50ci[m]) if b50ci else f"{b50[m]:.4f}"
                for m in ("recall@10", "ndcg@10")]
        lines.append(
            f"| {name} | {cell(t['recall@10'], ci['recall@10'], sd.get('recall@10'))} | "
            f"{cell(t['ndcg@10'], ci['ndcg@10'], sd.get('ndcg@10'))} | {wide[0]} | {wide[1]} | "
            f"{v['invalid_items'][20]}/{v['invalid_items'][50]} | {v['fit_seconds_mean']:.0f} | "
            f"{v['train_seconds_to_best_mean']:.0f} | {v['best_epochs']} | {delta} |")
    if "cold" in s:
        c = s["cold"]
        chosen = c["chosen_on_valid_recall@10"]
        cw = c.get("chosen_on_valid_cold_warm")
        also = (f"; chosen on validation cold Recall@10 with warm Recall@10 within "
                f"{cw['warm_tolerance']:.0%} of no fusion: {cw['setting']}" if cw else "")
        lines += ["", (f"Cold-start protocol: {c['cold_items']} cold items, test users "
                       f"{c['users']}; prefix levels:weight chosen on validation all-user "
                       f"Recall@10: {chosen}{also}"),
                  "", ("| decoding | all R@10 | warm R@10 | cold R@10 (95% CI) | cold R@20 | "
                       "cold items in top-10 | non-catalogue items |"),
                  "|---|---|---|---|---|---|---|"]
        for w, r in c["by_weight"].items():
            lo, hi = r["cold_recall@10_ci95"]
            name = "TIGER" if w == "off" else f"cold fusion, prefix {w.replace(':', ', weight ')}"
            lines.append(f"| {name} | "
                         f"{r['all_recall@10']:.4f} | {r['warm_recall@10']:.4f} | "
                         f"{r['cold_recall@10']:.4f} ({lo:.4f}–{hi:.4f}) | "
                         f"{r['cold_recall@20']:.4f} | {r['cold_items_in_top10']} | "
                         f"{r['non_catalogue_items_top10']} |")
    return "\n".join(lines)


def main() -> None:
    """Run the asked variants (or summarize) and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--variants", nargs="*", default=["tiger"],
                    help=f"any of {VARIANT_NAMES} and cold")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cold-weights", type=float, nargs="*", default=[0.01, 0.03, 0.1, 0.3])
    ap.add_argument("--cold-fraction", type=float, default=0.1,
                    help="protocol.split.cold_items of the cold run")
    ap.add_argument("--cold-levels", type=int, nargs="*",
                    help="prefix lengths tried by the cold run (default: every level)")
    ap.add_argument("--tag", help="keep the results in benchmarks/results/<dataset>/<tag>/ "
                                  "(a recipe other than the dataset's paper-shape one)")
    ap.add_argument("--part", help="name this run's files tiger-next-<variant>.<part>.json: "
                                   "runs of one variant on disjoint seeds (--set protocol.seed=..)"
                                   " side by side, merged by --summarize (part files hold per-user"
                                   " arrays, megabytes on Amazon data: .gitignore keeps them out;"
                                   " the summary is the committed result)")
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--warm-tolerance", type=float, default=0.05,
                    help="--summarize: the cold-fusion setting is also chosen as the best "
                         "validation cold Recall@10 whose validation warm Recall@10 is within "
                         "this share of no fusion's (the issue's cold target: 5%%)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    cfg = cfg.model_copy(update={"seeds": args.seeds})
    if len(cfg.models) != 1 or cfg.models[0].kind != "tiger":
        raise SystemExit("the config must list exactly one model, of kind tiger")
    folder = _folder(cfg.dataset.name, args.tag)
    if args.summarize:
        s = summarize(cfg.dataset.name, args.tag, args.warm_tolerance)
        atomic_write_text(folder / "tiger-next.json", json.dumps(s, indent=2))
        print(markdown(s))
        return
    for name in args.variants:
        if name not in VARIANT_NAMES and name != "cold":
            raise SystemExit(f"unknown variant {name!r}: choose from {VARIANT_NAMES}, cold")
        doc = run_variant(name, cfg, args.cold_weights, args.cold_fraction, args.cold_levels)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"tiger-next-{name}{'.' + args.part if args.part else ''}.json"
        atomic_write_text(dest, json.dumps(doc, indent=2))
        print(f"written: {dest}")


if __name__ == "__main__":
    main()
