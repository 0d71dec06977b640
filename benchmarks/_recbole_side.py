"""The RecBole half of ``benchmarks/recbole_speed.py``; runs in a separate RecBole venv.

Not part of genrec and never imported by it: ``recbole_speed.py`` starts this file with the
RecBole interpreter (``--recbole-python``), and this file prints one line
``RECBOLE_SPEED_JSON {...}`` with its timings as the last thing it does.

It writes the ML-1M sequences as RecBole atomic files (``timestamp`` = position in the
user's sequence), builds RecBole's SASRec with the same shape as genrec's recipe, times a
fixed number of training batches after a warm-up (an epoch is extrapolated by batch count:
a full RecBole epoch is one sample per target interaction, ~988k samples), then times a
full-ranking evaluation of every test user.

Run by hand (from anywhere)::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /work/recbole-venv/bin/python benchmarks/_recbole_side.py \
        --sequences ../shared/datasets/ml-1m/sequences_min5_chronological.txt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

MARKER = "RECBOLE_SPEED_JSON "
DATASET = "ml-1m-seq"


def load_now() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def write_atomic(sequences: Path, folder: Path) -> int:
    """Write ``folder/ml-1m-seq/ml-1m-seq.inter`` from ``user item1 item2 ...`` lines.

    Returns:
        The number of interactions written.
    """
    out = folder / DATASET
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(sequences) as src, open(out / f"{DATASET}.inter", "w") as dst:
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in src:
            user, *items = line.split()
            dst.writelines(f"{user}\t{item}\t{pos}\n" for pos, item in enumerate(items))
            n += len(items)
    return n


def recbole_config(data_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """SASRec as in genrec's configs/ml-1m/sasrec.yaml, with RecBole's key names."""
    return {
        # data: the file as it is (already 5-core), leave-one-out by position
        "data_path": str(data_path), "dataset": DATASET,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        # model
        "n_layers": 2, "n_heads": 1, "hidden_size": 64, "inner_size": 64,
        "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "relu",
        "loss_type": "CE", "train_neg_sample_args": None,
        # training
        "epochs": 1, "train_batch_size": args.batch_size, "learner": "adam",
        "learning_rate": 1e-3, "weight_decay": 0.0, "clip_grad_norm": None,
        # evaluation
        "topk": [10], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
        "eval_batch_size": args.eval_batch_size,
        # environment
        "use_gpu": False, "device": "cpu", "seed": args.seed, "reproducibility": True,
        "worker": 0, "show_progress": False, "log_wandb": False, "state": "WARNING",
        "checkpoint_dir": str(data_path / "saved"),
    }


def first_batches(loader: Iterable[Any], n: int, marks: list[float]) -> Iterator[Any]:
    """Yield the first ``n`` batches of ``loader``; ``marks[i]`` is the time just before
    batch ``i`` is fetched and ``marks[n]`` the time the consumer asked for batch ``n``, so
    ``marks[j] - marks[i]`` covers loading and training batches ``i .. j-1``."""
    it = iter(loader)
    for _ in range(n):
        marks.append(time.perf_counter())
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch
    marks.append(time.perf_counter())


def prepare_recbole(sequences: Path, folder: Path, args: argparse.Namespace,
                    out: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Write the atomic file into ``folder``, build RecBole's config (recorded in ``out``
    without its paths), seed, quiet its logger, set the thread count after RecBole's own
    set-up, and build its dataset and ``(train, valid, test)`` loaders."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    out["interactions_written"] = write_atomic(sequences, folder)
    cfg_dict = recbole_config(folder, args)
    out["config"] = {k: v for k, v in cfg_dict.items()
                     if k not in ("data_path", "checkpoint_dir")}
    config = Config(model="SASRec", dataset=DATASET, config_dict=cfg_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)  # after RecBole's own set-up, to be sure
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sequences", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-batch-size", type=int, default=2048,
                    help="users per evaluation batch (RecBole's sequential full-sort loader "
                         "counts users, not user-item pairs)")
    ap.add_argument("--warmup-batches", type=int, default=10)
    ap.add_argument("--timed-batches", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    import recbole
    import torch
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"recbole": recbole.__version__, "torch": torch.__version__,
                           "torch_threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="recbole-speed-") as tmp:
        tmp_path = Path(tmp)
        sequences = args.sequences.resolve()  # before the chdir below
        os.chdir(tmp_path)  # RecBole writes log/ and saved/ into the working directory
        t0 = time.perf_counter()
        config, dataset, (train_data, valid_data, test_data) = prepare_recbole(
            sequences, tmp_path, args, out)
        out["data_prep_seconds"] = time.perf_counter() - t0
        out["dataset"] = {"users": dataset.user_num - 1, "items": dataset.item_num - 1,
                          "interactions": dataset.inter_num,
                          "train_samples": len(train_data.dataset),
                          "valid_users": len(valid_data.dataset),
                          "test_users": len(test_data.dataset)}

        init_seed(config["seed"], config["reproducibility"])
        model = SASRec(config, train_data.dataset).to(config["device"])
        trainer = Trainer(config, model)
        out["params"] = sum(p.numel() for p in model.parameters())

        # -- training: warm-up + timed batches, extrapolated to the epoch -----------------
        total = len(train_data)
        n = args.warmup_batches + args.timed_batches
        runs = []
        for r in range(args.repeats):
            marks: list[float] = []
            c0 = time.process_time()
            loss = trainer._train_epoch(first_batches(train_data, n, marks), epoch_idx=r)
            cpu = time.process_time() - c0
            timed = marks[n] - marks[args.warmup_batches]
            runs.append({"timed_seconds": timed, "cpu_seconds_all_batches": cpu,
                         "wall_seconds_all_batches": marks[n] - marks[0],
                         "seconds_per_batch": timed / args.timed_batches,
                         "epoch_seconds_extrapolated": timed / args.timed_batches * total,
                         "mean_loss": loss / n, "load_after": load_now()})
        best = min(runs, key=lambda x: x["timed_seconds"])
        out["train"] = {"total_batches": total, "warmup_batches": args.warmup_batches,
                        "timed_batches": args.timed_batches, "extrapolated": True,
                        "runs": runs, "best": best,
                        "epoch_seconds": best["epoch_seconds_extrapolated"]}

        # -- full-ranking evaluation of every test user -----------------------------------
        runs = []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
            runs.append({"seconds": time.perf_counter() - t0,
                         "cpu_seconds": time.process_time() - c0,
                         "metrics": {k: float(v) for k, v in result.items()},
                         "load_after": load_now()})
        best = min(runs, key=lambda x: x["seconds"])
        out["eval"] = {"users": len(test_data.dataset), "eval_batch_size": args.eval_batch_size,
                       "model_state": (f"after the {args.repeats} x {n} timed training "
                                       "batches above (speed does not depend on the weights)"),
                       "runs": runs, "seconds": best["seconds"], "metrics": best["metrics"]}
    print(MARKER + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
