"""The RecBole half of ``benchmarks/recbole_ttq.py``; runs in a separate RecBole venv.

Not part of genrec and never imported by it: ``recbole_ttq.py`` starts this file with the
RecBole interpreter. It prepares RecBole's SASRec exactly as ``_recbole_side.py`` does (same
atomic file, same config), checks that RecBole's validation users, targets and histories are
the sequences file's (target = each user's second-to-last item, history = everything before
it), prints ``READY`` and waits for a line on stdin, then trains in its own loop (RecBole's
model, loss, optimizer and shuffled training loader; its Trainer cannot validate mid-epoch)
and validates every ``--check-every`` training batches and once more when the budget is
reached. Validation NDCG@10 is computed from RecBole's full scores by ``_ttq_ndcg.py``
(genrec's definition: full ranking, the user's training items excluded); RecBole's own
sequential full-sort evaluation does not exclude seen items, so its metric is not used.

Writes its curve as JSON to ``--output`` and prints ``RECBOLE_TTQ_JSON {...}`` last.

Run by hand (from anywhere; ``--no-wait`` starts training without the stdin handshake)::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 OMP_NUM_THREADS=1 /work/recbole-venv/bin/python \
        benchmarks/_recbole_ttq_side.py --no-wait --budget-min 1 --output /tmp/rb.json \
        --sequences ../shared/datasets/ml-1m/sequences_min5_chronological.txt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _recbole_side import load_now, prepare_recbole
from _ttq_ndcg import ndcg_single_target

MARKER = "RECBOLE_TTQ_JSON "


def log(msg: str) -> None:
    """Progress to stderr (stdout carries only READY and the result line)."""
    sys.stderr.write(f"[recbole {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def read_sequences(path: Path) -> dict[str, list[str]]:
    """``user -> [item, ...]`` (chronological) from ``user item1 item2 ...`` lines."""
    out = {}
    with open(path) as f:
        for line in f:
            user, *items = line.split()
            out[user] = items
    return out


def validation_arrays(valid_data: Any, dataset: Any, seqs: dict[str, list[str]],
                      max_len: int) -> dict[str, Any]:
    """Cache RecBole's validation batches and build the targets and seen-item CSR (RecBole ids).

    Checks, per user, that RecBole's target is the sequences file's second-to-last item and
    that its (truncated) input sequence is the tail of everything before it.
    """
    uid, iid = dataset.uid_field, dataset.iid_field
    seq_f, len_f = "item_id_list", "item_length"
    tok = dataset.field2token_id[iid]
    batches, targets, users = [], [], []
    for interaction, history_index, _, positive_i in valid_data:
        assert history_index is None  # sequential full sort: RecBole masks nothing
        batches.append(interaction)
        targets.append(positive_i.numpy())
        users.append(interaction[uid].numpy())
    targets_a, users_a = np.concatenate(targets), np.concatenate(users)
    raw_users = dataset.id2token(uid, users_a)
    raw_targets = dataset.id2token(iid, targets_a)
    seen_items, indptr = [], [0]
    row = 0
    for b in batches:
        seq, lens = b[seq_f].numpy(), b[len_f].numpy()
        for j in range(len(seq)):
            items = seqs[str(raw_users[row])]
            assert raw_targets[row] == items[-2], (raw_users[row], raw_targets[row], items[-2])
            hist = items[:-2]
            got = list(dataset.id2token(iid, seq[j, :lens[j]]))
            assert got == hist[-max_len:], f"history of user {raw_users[row]} differs"
            seen_items.extend(tok[x] for x in hist)
            indptr.append(len(seen_items))
            row += 1
    assert len(set(raw_users.tolist())) == len(seqs) == len(raw_users), "validation users"
    return {"batches": batches, "targets": targets_a,
            "seen_indptr": np.asarray(indptr, dtype=np.int64),
            "seen_items": np.asarray(seen_items, dtype=np.int64)}


def validate(model: Any, val: dict[str, Any], torch: Any) -> tuple[float, float]:
    """Mean NDCG@10 over the validation users, and the seconds it took."""
    t0 = time.perf_counter()
    model.eval()
    parts, lo = [], 0
    with torch.no_grad():
        for inter in val["batches"]:
            scores = model.full_sort_predict(inter).numpy()              # (B, I + 1)
            hi = lo + len(scores)
            ptr = val["seen_indptr"][lo:hi + 1]
            parts.append(ndcg_single_target(
                scores, val["targets"][lo:hi], ptr - ptr[0],
                val["seen_items"][ptr[0]:ptr[-1]], k=10, invalid=np.array([0])))
            lo = hi
    model.train()
    return float(np.concatenate(parts).mean()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sequences", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-min", type=float, default=45.0)
    ap.add_argument("--check-every", type=int, default=250, help="training batches")
    ap.add_argument("--patience", type=int, default=10,
                    help="stop after this many checks without improvement")
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-batch-size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-wait", action="store_true", help="start without the stdin handshake")
    args = ap.parse_args()

    import recbole
    import torch
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"recbole": recbole.__version__, "torch": torch.__version__,
                           "torch_threads": args.threads, "budget_minutes": args.budget_min,
                           "check_every_batches": args.check_every,
                           "patience_checks": args.patience}
    sequences = args.sequences.resolve()
    output = args.output.resolve()
    with tempfile.TemporaryDirectory(prefix="recbole-ttq-") as tmp:
        tmp_path = Path(tmp)
        os.chdir(tmp_path)  # RecBole writes log/ and saved/ into the working directory
        t0 = time.perf_counter()
        config, dataset, (train_data, valid_data, _) = prepare_recbole(sequences, tmp_path,
                                                                       args, out)
        val = validation_arrays(valid_data, dataset, read_sequences(sequences), args.max_len)
        out["data_prep_seconds"] = time.perf_counter() - t0
        out["dataset"] = {"users": dataset.user_num - 1, "items": dataset.item_num - 1,
                          "interactions": dataset.inter_num,
                          "train_samples": len(train_data.dataset),
                          "batches_per_epoch": len(train_data),
                          "valid_users": len(val["targets"]),
                          "valid_check": "targets = second-to-last item, input = the items "
                                         "before it (last max_len), every user: verified"}
        init_seed(config["seed"], config["reproducibility"])
        model = SASRec(config, train_data.dataset).to(config["device"])
        trainer = Trainer(config, model)  # for RecBole's optimizer (adam, lr 1e-3)
        optimizer = trainer.optimizer
        out["params"] = sum(p.numel() for p in model.parameters())
        log(f"ready after {out['data_prep_seconds']:.0f}s: "
            f"{out['dataset']['batches_per_epoch']} batches per epoch")

        if not args.no_wait:
            print("READY", flush=True)
            sys.stdin.readline()
        budget = args.budget_min * 60.0
        points: list[dict[str, Any]] = []
        valid_total, batches, epoch, best, bad = 0.0, 0, 0, -1.0, 0
        loss_sum, loss_n = 0.0, 0
        stop = None
        out["load_average_at_start"] = load_now()
        start = time.perf_counter()
        started_cpu = time.process_time()
        last_batch = 0.0

        def check() -> None:
            nonlocal valid_total, best, bad, loss_sum, loss_n
            wall = time.perf_counter() - start
            ndcg, secs = validate(model, val, torch)
            points.append({"batches": batches, "epochs": batches / len(train_data),
                           "train_seconds": wall - valid_total, "wall_seconds": wall,
                           "valid_seconds": secs, "ndcg@10": ndcg,
                           "mean_loss": loss_sum / max(1, loss_n), "load": load_now()})
            valid_total += secs
            if ndcg > best:
                best, bad = ndcg, 0
            else:
                bad += 1
            loss_sum, loss_n = 0.0, 0
            log(f"batch {batches} ({batches / len(train_data):.3f} ep): ndcg@10 {ndcg:.4f}, "
                f"train {wall - valid_total + secs:.0f}s, valid {secs:.1f}s")

        model.train()
        while stop is None:
            for interaction in train_data:
                if time.perf_counter() - start + last_batch > budget:
                    stop = "budget"
                    break
                b0 = time.perf_counter()
                interaction = interaction.to(config["device"])
                optimizer.zero_grad()
                loss = model.calculate_loss(interaction)
                loss.backward()
                optimizer.step()
                batches += 1
                loss_sum += float(loss.detach())
                loss_n += 1
                last_batch = time.perf_counter() - b0
                if batches % args.check_every == 0:
                    check()
                    if bad >= args.patience:
                        stop = "patience"
                        break
            else:
                epoch += 1
        if not points or points[-1]["batches"] != batches:
            check()
        out["stopped_by"] = stop
        out["cpu_seconds"] = time.process_time() - started_cpu
        out["points"] = points
        out["load_average_at_end"] = load_now()
    tmp_out = output.with_suffix(output.suffix + ".tmp")
    tmp_out.write_text(json.dumps(out) + "\n")
    os.replace(tmp_out, output)
    print(MARKER + json.dumps({"output": str(output), "points": len(points)}), flush=True)


if __name__ == "__main__":
    main()
