"""Data-parallel training with 2 CPU processes (torchrun + gloo) against 1 process.

The loop runs unchanged under ``torchrun``. Both runs see the same global batches (each of
the 2 processes takes every other row of a batch), dropout is off, and every user has more
items than the model reads, so every row has the same number of target positions: the mean
of the two processes' losses then equals the one-process mean over the whole batch, and the
gradients agree in exact arithmetic. They still differ in float rounding: each process sums
its own half of the batch and gloo adds the two halves, a different order of additions than
one process summing the whole batch. Adam's normalised steps turn those ~1e-7 differences
into slightly different weights after a few epochs, so the comparison uses a tolerance
(1e-4 on scores, 1e-3 on metrics; about 1e-7 was seen) instead of bitwise equality. (With
rows of different lengths the per-process means would weight positions differently, and the
gap grows: 0.05 on scores in a variant of this test with histories of 4-12 items.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    from genrec.data.splits import split
    from genrec.evaluation.evaluator import evaluate
    from genrec.evaluation.protocol import Protocol
    from genrec.models.base import FitContext
    from genrec.models.sasrec import SASRec
    from genrec.runs.experiment import validation_callback
    from genrec.testing import random_dataset

    out = sys.argv[1]
    sp = split(random_dataset(n_users=64, n_items=40, min_len=10, max_len=14, seed=3))
    train = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "device": "cpu", "progress": False}
    model = SASRec(dim=16, max_len=6, n_layers=1, n_heads=2, dropout=0.0, train=train)
    model.fit(sp.train, FitContext(validate=validation_callback(sp.valid_set(), Protocol()),
                                   checkpoint_dir=os.path.join(out, "ckpt")))
    if int(os.environ.get("RANK", "0")) == 0:
        test = evaluate(model, sp.test_set(), Protocol()).summary()
        json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "test": test,
                   "history": model.train_result_.history}, open(os.path.join(out, "m.json"), "w"))
        save_file({"scores": model.score(sp.test_set().histories)},
                  os.path.join(out, "scores.safetensors"))
""")


def run(script: Path, out: Path, nproc: int) -> dict:
    out.mkdir()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *cmd[1:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "m.json").read_text()) | load_file(str(out / "scores.safetensors"))


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    one = run(script, tmp_path / "one", 1)
    two = run(script, tmp_path / "two", 2)
    assert (one["world"], two["world"]) == (1, 2)
    # Same number of optimizer steps, epochs and validations.
    assert [r["epoch"] for r in two["history"]] == [r["epoch"] for r in one["history"]]
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
        assert b["metric"] == pytest.approx(a["metric"], abs=1e-3)
    for name in ("ndcg@10", "recall@10"):
        assert two["test"][name] == pytest.approx(one["test"][name], abs=1e-3)
    torch.testing.assert_close(two["scores"], one["scores"], atol=1e-4, rtol=0)
    # ...and it is not the same computation: the 2-process run really was data-parallel.
    assert not torch.equal(two["scores"], one["scores"])
    # Only rank 0 wrote a checkpoint, and it is complete.
    assert json.loads((tmp_path / "two" / "ckpt" / "latest.json").read_text()) == {
        "dir": "epoch-0003"}
