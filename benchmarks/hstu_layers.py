"""HSTU training step: the attention block updated in place, with a float mask built once.

An HSTU layer weighs each key by ``SiLU(q.k + rab) / n`` and zeroes the keys a query may
not read. Until this benchmark every layer turned the boolean mask into floats and allocated a
new ``(B, H, L, L)`` block for each of ``+ rab``, ``/ n`` and ``* mask``; the net now builds the
float mask once per forward, and each layer applies the three in place on the blocks autograd
does not keep (matmul and SiLU save their inputs, not their outputs). This times one training
step (forward, full-softmax loss, backward) of HSTU-large on ML-1M both ways, in one process,
alternating the two so that load on the machine hits both alike, and reports the ratio. The
reference is the previous layer, kept here verbatim. The arithmetic is the same, operation for
operation, so outputs, loss and gradients are bit-identical; the script checks the outputs and
the loss with dropout off.

Inputs are real: the ML-1M training split of ``configs/ml-1m/hstu-large.yaml`` (leave-one-out),
each user's last ``max_len + 1`` training items, left-padded as :meth:`HSTU._fit` builds them,
in batches of the recipe's size drawn with a fixed seed.

Usage::

    GENREC_DATA_DIR=../shared/datasets GENREC_THREADS=1 python benchmarks/hstu_layers.py \\
        --out benchmarks/results/ml-1m/hstu-layers.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genrec._io import atomic_write_text
from genrec.config import load_config
from genrec.models._sequential import log_proposal, next_item_loss
from genrec.models.hstu import HSTULayer, HSTUNet
from genrec.runs.experiment import prepare
from genrec.runs.threads import apply_threads

ROOT = Path(__file__).resolve().parents[1]


def reference_layer(layer: HSTULayer, x: torch.Tensor, mask: torch.Tensor,
                    buckets: torch.Tensor, n: int) -> torch.Tensor:
    """The previous :meth:`HSTULayer.forward`: boolean ``mask`` and the normaliser ``n``
    applied inside every layer."""
    b, length, dim = x.shape
    u, v, q, k = F.silu(layer.f1(layer.ln_in(x))).split(dim, dim=2)
    q, k, v = (t.view(b, length, layer.n_heads, dim // layer.n_heads).transpose(1, 2)
               for t in (q, k, v))
    rab = layer.rab(buckets).permute(2, 0, 1)
    attn = F.silu(q @ k.transpose(-2, -1) + rab) / n
    attn = attn * mask
    y = (attn @ v).transpose(1, 2).reshape(b, length, dim)
    return x + layer.f2(layer.drop(layer.ln_attn(y) * u))


def reference_forward(net: HSTUNet, seq: torch.Tensor, targets: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`HSTUNet.forward` (dot-product scores) with :func:`reference_layer`."""
    length, max_len = seq.shape[1], net.pos_emb.num_embeddings
    dim = net.item_emb.embedding_dim
    pos = torch.arange(max_len - length, max_len)
    x = net.drop(net.item_emb(seq) * dim ** 0.5 + net.pos_emb(pos))
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = (causal & (seq > 0)[:, None, :])[:, None]
    buckets = net.buckets[-length:, -length:]
    for layer in net.layers:
        x = reference_layer(layer, x, mask, buckets, max_len)
    hidden = net.ln_f(x)
    return hidden, next_item_loss(hidden, targets, net.output_items(), loss=net.loss,
                                  n_negatives=net.n_negatives, logq=net.logq)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ml-1m/hstu-large.yaml")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="also print the reference step's top operators by own CPU time")
    args = ap.parse_args()
    threads = apply_threads(None)
    cfg = load_config(ROOT / args.config)
    c = cfg.models[0]
    data = prepare(cfg, write=False)
    train = data.split.train
    seq = train.histories().padded(c.max_len + 1)
    inputs, targets = seq[:, :-1], seq[:, 1:]
    keep = (targets > 0).any(dim=1)
    inputs, targets = inputs[keep], targets[keep]
    torch.manual_seed(0)
    net = HSTUNet(train.n_items, c.max_len, c.dim, c.n_layers, c.n_heads, c.dropout, c.n_buckets,
                  c.temperature, c.loss, c.n_negatives, log_proposal(train.item_counts(),
                                                                     train.n_items))
    rng = np.random.default_rng(0)
    batches = [torch.as_tensor(rng.choice(len(inputs), c.train.batch_size, replace=False))
               for _ in range(args.steps + 1)]

    # Same weights, same inputs, dropout off: how far apart the two computations are.
    net.eval()
    with torch.no_grad():
        b = batches[0]
        h_new, loss_new = net(inputs[b], targets[b])
        h_ref, loss_ref = reference_forward(net, inputs[b], targets[b])
    diff = {"hidden_max_abs": float((h_new - h_ref).abs().max()),
            "hidden_bit_identical": bool(torch.equal(h_new, h_ref)),
            "loss_abs": float(abs(loss_new - loss_ref))}

    net.train()
    variants = {"in_place": lambda s, t: net(s, t), "reference": lambda s, t:
                reference_forward(net, s, t)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i, b in enumerate(batches):
        for name, fwd in variants.items() if i % 2 == 0 else reversed(variants.items()):
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            _, loss = fwd(inputs[b], targets[b])
            loss.backward()
            if i > 0:  # the first batch warms both paths up
                times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        net.zero_grad(set_to_none=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            reference_forward(net, inputs[batches[0]], targets[batches[0]])[1].backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    doc: dict[str, Any] = {
        "benchmark": "hstu_layers",
        "what": "one HSTU-large training step on ML-1M (forward, full-softmax CE, backward): "
                "float mask built once per forward and the attention block updated in place "
                "vs. the previous layer (reference: boolean mask, a new block per operation)",
        "config": args.config, "model": c.model_dump(mode="json"),
        "batch": c.train.batch_size, "max_len": c.max_len, "steps": args.steps,
        "seconds_per_step": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 4) for k, v in med.items()},
        "speedup_reference_over_in_place": round(med["reference"] / med["in_place"], 3),
        "difference": diff,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": threads, "cpus": os.cpu_count(), "processor": platform.processor() or
        platform.machine(), "torch": torch.__version__, "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps({k: doc[k] for k in ("median_seconds", "speedup_reference_over_in_place",
                                          "difference")}, indent=2))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
