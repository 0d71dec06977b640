"""RecSAE on SASRec: reconstruction, dead latents, accuracy kept, concept labels, steering.

Usage::

    GENREC_DATA_DIR=../shared/datasets python benchmarks/sae.py --dataset ml-100k
    GENREC_DATA_DIR=../shared/datasets python benchmarks/sae.py --dataset amazon-beauty \
        --sasrec-minutes 6

1. SASRec is fitted under the protocol (genrec.runs.experiment: leave-one-out, full ranking,
   validation early stopping, a time cap) and evaluated on test.
2. A TopK SAE is trained on the final hidden states of every training-sequence position.
3. Reported: explained variance and dead latents (on those states and on the test users'
   last states), test NDCG@10 / Recall@10 when the hidden state is replaced by its SAE
   reconstruction (retained = substituted / original), concept labels of the live latents
   (precision, base rate, lift, from the item table and from the sequences), and steering:
   for the ``--steer`` most precise sequence-labelled latents, the share of top-10 items with the
   concept before and after raising the latent, over the test users.

Writes ``benchmarks/results/<dataset>/<name>.json``.
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

import numpy as np

from genrec.config import ExperimentConfig
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.concepts import (
    Concepts,
    SAEScorer,
    concept_precision,
    label_latents,
    last_states,
    sequence_states,
    steering_effect,
)
from genrec.evaluation.evaluator import evaluate
from genrec.models.sae import RecSAE, SAEConfig
from genrec.runs import experiment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Fit, train the SAE, measure, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--name", default="sae")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--sasrec-epochs", type=int, default=200)
    ap.add_argument("--sasrec-minutes", type=float, default=3.0)
    ap.add_argument("--n-latents", type=int, default=512)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--sae-epochs", type=int, default=30)
    ap.add_argument("--steer", type=int, default=10, help="labelled latents steered")
    ap.add_argument("--strength", type=float, default=2.0,
                    help="added activation, in units of the latent's largest activation")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig.model_validate({
            "dataset": {"name": args.dataset},
            "protocol": {"cutoffs": [10, 20], "valid_metric": "ndcg@10"},
            "models": [{"kind": "sasrec", "dim": args.dim, "max_len": args.max_len,
                        "dropout": 0.2, "train": {
                            "epochs": args.sasrec_epochs, "patience": 5, "batch_size": 128,
                            "lr": 1e-3, "max_minutes": args.sasrec_minutes, "device": "cpu",
                            "progress": False}}],
            "output": tmp, "save_models": False, "checkpoints": False})
        data = experiment.prepare(cfg, write=False)
        model, row, _ = experiment.fit_and_evaluate(cfg.models[0], data, cfg)
    ds, test = data.dataset, data.test_set
    catalog = Catalogue.from_dataset(ds)
    states, nexts = sequence_states(model, data.split.train)
    test_states = last_states(model, test.histories)

    sae = RecSAE(SAEConfig(n_latents=args.n_latents, k=args.k, epochs=args.sae_epochs))
    sae.fit(states)
    train_stats, test_stats = sae.stats(states), sae.stats(test_states)

    t0 = time.perf_counter()
    protocol = cfg.protocol
    original = evaluate(SAEScorer(model, sae, substitute=False), test, protocol).summary()
    substituted = evaluate(SAEScorer(model, sae), test, protocol).summary()
    eval_s = time.perf_counter() - t0

    concepts = Concepts.from_catalogue(catalog)
    item_table = model.net_.item_table()[1:].detach()
    by_items = label_latents(sae, concepts, states, source="items", item_table=item_table)
    by_seq = label_latents(sae, concepts, states, source="sequences", next_items=nexts)
    steered = [steering_effect(model, sae, test.histories, lab, concepts,
                               strength=args.strength)
               for lab in sorted((x for x in by_seq if x.concept is not None),
                                 key=lambda x: -x.precision)[: args.steer]]
    ups = [s["share_steered"] - s["share_reconstructed"] for s in steered]

    retained = {m: substituted[m] / original[m] if original[m] else float("nan")
                for m in ("ndcg@10", "recall@10")}
    res = {
        "dataset": ds.name, "protocol_text": protocol.describe(),
        "sasrec": {"params": row["params"], "fit_seconds": row["fit_seconds"],
                   "valid": row["valid"], "test": row["test"],
                   "training": {k: v for k, v in (row.get("training") or {}).items()
                                if k != "history"}},
        "sae": {"config": sae.config.model_dump(), "fit_seconds": sae.fit_seconds_,
                "train_states": len(states), "history": sae.history_,
                "train": train_stats, "test_last_states": test_stats},
        "substitution": {"original": original, "substituted": substituted,
                         "retained": retained, "eval_seconds": eval_s},
        "concepts": {"n_concepts": len(concepts.names),
                     "items": concept_precision(by_items),
                     "sequences": concept_precision(by_seq),
                     "examples_items": [x.to_dict(catalog) for x in sorted(
                         (x for x in by_items if x.concept), key=lambda x: -x.precision)[:10]],
                     "examples_sequences": [x.to_dict(catalog) for x in sorted(
                         (x for x in by_seq if x.concept), key=lambda x: -x.precision)[:10]]},
        "steering": {"strength": args.strength, "latents": steered,
                     "mean_share_increase": float(np.mean(ups)) if ups else None,
                     "increased": int(sum(u > 0 for u in ups)), "steered": len(ups)},
        "targets": {"explained_variance>=0.9": test_stats["explained_variance"] >= 0.9,
                    "ndcg@10_retained>=0.95": retained["ndcg@10"] >= 0.95},
        "benchmark": {"command": "python benchmarks/sae.py " + " ".join(sys.argv[1:]),
                      "note": args.note, "cpus": os.cpu_count(),
                      "processor": platform.machine(), "load_average_at_end": os.getloadavg()},
    }
    dest = ROOT / "benchmarks" / "results" / ds.name / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=2) + "\n")
    print(f"{ds.name}: SASRec test ndcg@10 {original['ndcg@10']:.4f} -> substituted "
          f"{substituted['ndcg@10']:.4f} (retained {retained['ndcg@10']:.3f}); EV train "
          f"{train_stats['explained_variance']:.4f} test {test_stats['explained_variance']:.4f};"
          f" dead {train_stats['dead_latents']}/{args.n_latents}; concept precision (sequences) "
          f"{res['concepts']['sequences']['mean_precision']:.3f}; steering +"
          f"{res['steering']['mean_share_increase'] or 0:.3f} ({res['steering']['increased']}/"
          f"{len(ups)}) -> {dest}")


if __name__ == "__main__":
    main()
