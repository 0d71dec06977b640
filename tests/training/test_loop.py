"""The training loop: resuming equals an uninterrupted run, early stopping, determinism."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from genrec.config import ExperimentConfig
from genrec.data.interactions import EvalSet
from genrec.data.splits import split
from genrec.evaluation.protocol import Protocol
from genrec.models.base import FitContext
from genrec.models.sasrec import SASRec, SASRecConfig, SASRecNet
from genrec.runs.experiment import Prepared, fit_context, training_record, validation_callback
from genrec.testing import crashing, random_dataset
from genrec.training import TrainConfig, load_checkpoint, train
from genrec.training.checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    unflatten_optimizer_state,
)
from genrec.training.loop import ResumeMismatchError, _epoch_batches, _lr_at, identity_diff

TINY = {"dim": 16, "max_len": 8, "n_layers": 1, "n_heads": 2, "dropout": 0.2}


@pytest.fixture(scope="module")
def data() -> tuple:
    sp = split(random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=1))
    return sp.train, sp.valid_set()


def ctx(valid: EvalSet, **kw: Any) -> FitContext:
    """What ``genrec run`` hands a model: the protocol's validation metric on ``valid``."""
    return FitContext(validate=validation_callback(valid, Protocol()), **kw)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def tiny_net(seed: int = 0) -> SASRecNet:
    torch.manual_seed(seed)
    return SASRecNet(30, 8, 16, 1, 2, 0.2, "ce", 8, torch.zeros(30))


def tiny_rows(train) -> tuple[torch.Tensor, torch.Tensor]:
    seq = train.histories().padded(9)
    keep = (seq[:, 1:] > 0).any(1)
    return seq[keep, :-1], seq[keep, 1:]


def fast(**kw) -> TrainConfig:
    return TrainConfig(**({"batch_size": 8, "device": "cpu", "progress": False} | kw))


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "peak_mem_mb")} for r in history]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- resume ------------------------------------------------------------------------------
TRAIN3 = {"epochs": 3, "batch_size": 8, "device": "cpu", "progress": False}


def test_resume_equals_uninterrupted_run(data, tmp_path: Path) -> None:
    train_set, valid = data
    straight = SASRec(**TINY, train=TRAIN3).fit(
        train_set, ctx(valid, checkpoint_dir=tmp_path / "straight"))

    # Second run: the process "dies" while validating epoch 2, after epoch 1's checkpoint.
    dying = FitContext(validate=crashing(validation_callback(valid, Protocol()), 2),
                       checkpoint_dir=tmp_path / "crashed")
    with pytest.raises(KeyboardInterrupt):
        SASRec(**TINY, train=TRAIN3).fit(train_set, dying)
    assert load_checkpoint(tmp_path / "crashed").meta["epoch"] == 1

    torch.manual_seed(12345)  # the resumed run must not depend on the global RNG it finds
    resumed = SASRec(**TINY, train=TRAIN3).fit(
        train_set, ctx(valid, checkpoint_dir=tmp_path / "crashed", resume=True))
    assert_same_state(resumed.net_.state_dict(), straight.net_.state_dict())
    assert without_timing(resumed.train_result_.history) == without_timing(
        straight.train_result_.history)
    assert resumed.train_result_.best_epoch == straight.train_result_.best_epoch
    hist = valid.histories
    assert torch.equal(resumed.score(hist), straight.score(hist))
    # The results row's training time spans the process that died: epoch 1 ran there.
    record = training_record(resumed)
    seconds = [h["seconds"] for h in resumed.train_result_.history]
    assert seconds[0] > 0 and record is not None
    assert record["train_seconds"] == pytest.approx(sum(seconds), abs=1e-3)
    best = resumed.train_result_.best_epoch
    assert record["seconds_to_best"] == pytest.approx(sum(seconds[:best]), abs=1e-3)


def test_resume_after_the_last_epoch_trains_nothing(data, tmp_path: Path) -> None:
    train_set, valid = data
    cfg = {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}
    first = SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, checkpoint_dir=tmp_path))
    again = SASRec(**TINY, train=cfg).fit(train_set,
                                          ctx(valid, checkpoint_dir=tmp_path, resume=True))
    assert len(again.train_result_.history) == 2
    assert torch.equal(again.score(valid.histories), first.score(valid.histories))


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(
        data, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_set, valid = data
    straight = SASRec(**TINY, train=TRAIN3).fit(train_set, ctx(valid))
    dying = FitContext(validate=crashing(validation_callback(valid, Protocol()), 3),
                       checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):  # dies validating epoch 3: checkpoints 1 and 2
        SASRec(**TINY, train=TRAIN3).fit(train_set, dying)
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-0001", "epoch-0002"]
    truncate(tmp_path / "epoch-0002" / "model.safetensors")

    with caplog.at_level(logging.WARNING, logger="genrec.training"):
        resumed = SASRec(**TINY, train=TRAIN3).fit(
            train_set, ctx(valid, checkpoint_dir=tmp_path, resume=True))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "epoch-0002" in warned and "unreadable" in warned and "epoch-0001" in warned
    assert [r["epoch"] for r in resumed.train_result_.history] == [1, 2, 3]
    assert without_timing(resumed.train_result_.history) == without_timing(
        straight.train_result_.history)
    assert_same_state(resumed.net_.state_dict(), straight.net_.state_dict())
    # The rewritten epoch 2 and the new epoch 3 are whole again; epoch 1 is gone.
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-0002", "epoch-0003"]
    assert load_checkpoint(tmp_path).meta["epoch"] == 3


def test_unreadable_checkpoints_give_one_clear_error(data, tmp_path: Path) -> None:
    rows = tiny_rows(data[0])
    train(tiny_net(), rows, fast(epochs=2), checkpoint_dir=tmp_path)
    truncate(tmp_path / "epoch-0002" / "model.safetensors")
    (tmp_path / "epoch-0001" / "state.json").write_text("{")
    before = torch.are_deterministic_algorithms_enabled()
    with pytest.raises(CheckpointError) as err:
        train(tiny_net(), rows, fast(epochs=3), checkpoint_dir=tmp_path, resume=True)
    message = str(err.value)
    assert isinstance(err.value, ValueError)  # the CLI reports ValueErrors as one line
    assert "\n" not in message and "no readable checkpoint" in message
    assert "epoch-0002" in message and "epoch-0001" in message
    assert torch.are_deterministic_algorithms_enabled() == before


def test_resume_under_another_identity_is_refused(data, tmp_path: Path) -> None:
    train_set, valid = data
    cfg = {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False}
    SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, checkpoint_dir=tmp_path,
                                                 identity={"dataset": "toy"}))
    saved = (tmp_path / "epoch-0001" / "state.json").read_bytes()
    again = dict(checkpoint_dir=tmp_path, resume=True, identity={"dataset": "toy"})
    other_lr = SASRec(**TINY, train=cfg | {"lr": 0.01})
    with pytest.raises(ResumeMismatchError, match=r"model\.train\.lr: 0\.001 in the "
                       r"checkpoint, 0\.01 now") as err:
        other_lr.fit(train_set, ctx(valid, **again))
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
    with pytest.raises(ResumeMismatchError, match=r"model\.dim"):
        SASRec(**TINY | {"dim": 8}, train=cfg).fit(train_set, ctx(valid, **again))
    with pytest.raises(ResumeMismatchError, match=r"seed: 42 in the checkpoint, 7 now") as err:
        SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, **again | {"seed": 7}))
    assert "model." not in str(err.value)
    with pytest.raises(ResumeMismatchError, match=r"dataset: 'toy' in the checkpoint, 'x' now"):
        SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, **again | {"identity": {
            "dataset": "x"}}))
    other_data = split(random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=2))
    with pytest.raises(ResumeMismatchError, match="train_data"):
        SASRec(**TINY, train=cfg).fit(other_data.train, ctx(valid, **again))
    # A refused resume leaves the checkpoint as it was.
    assert (tmp_path / "epoch-0001" / "state.json").read_bytes() == saved


def test_resume_may_change_how_long_and_where_it_runs(data, tmp_path: Path) -> None:
    train_set, valid = data
    cfg = {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False}
    SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, checkpoint_dir=tmp_path))
    more = SASRec(**TINY, train=cfg | {"epochs": 2, "progress": True, "num_workers": 0,
                                       "max_minutes": 60, "device": "cpu"})
    more.fit(train_set, ctx(valid, checkpoint_dir=tmp_path, resume=True))
    assert [r["epoch"] for r in more.train_result_.history] == [1, 2]


def test_time_budget_spans_resumed_processes(data, tmp_path: Path) -> None:
    # A run that used its max_minutes is finished: resuming it must not train more (it once
    # restarted the clock, so a time-capped row changed when its command was run again).
    rows = tiny_rows(data[0])
    first = train(tiny_net(), rows, fast(epochs=5, max_minutes=1e-9), checkpoint_dir=tmp_path)
    assert first.out_of_time and len(first.history) == 1
    assert load_checkpoint(tmp_path).meta["train_seconds"] > 0
    again = train(tiny_net(), rows, fast(epochs=5, max_minutes=1e-9), checkpoint_dir=tmp_path,
                  resume=True)
    assert again.out_of_time and again.history == first.history
    # Lifting the budget (a benign change) continues the run where it stopped.
    more = train(tiny_net(), rows, fast(epochs=3), checkpoint_dir=tmp_path, resume=True)
    assert not more.out_of_time and [r["epoch"] for r in more.history] == [1, 2, 3]


def test_resume_under_another_validation_protocol_is_refused(data, tmp_path: Path) -> None:
    # Early stopping compares epochs: all of them must be measured the same way.
    train_set, _ = data
    ds = random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=1)
    sp = split(ds)
    prepared = Prepared(ds, sp, sp.valid_set(), sp.test_set(), {"dataset": "toy"})
    mcfg = SASRecConfig(**TINY, train={"epochs": 1, "batch_size": 8, "device": "cpu",
                                       "progress": False})

    def fit(resume: bool, **protocol: Any) -> None:
        cfg = ExperimentConfig(output=str(tmp_path), resume=resume, protocol=protocol)
        SASRec(mcfg).fit(train_set, fit_context(mcfg, prepared, cfg))

    assert Protocol().validation_identity() == {}  # old checkpoints keep resuming
    fit(False)
    fit(True)  # unchanged: resumes
    for change, named in [({"candidates": "sampled"}, "validation.candidates"),
                          ({"exclude_seen": False}, "validation.exclude_seen"),
                          ({"eval_users": 10}, "validation.eval_users"),
                          ({"max_history_length": 3}, "validation.max_history_length")]:
        with pytest.raises(ResumeMismatchError, match=named):
            fit(True, **change)
    fit(False, candidates="sampled", n_negatives=5)
    with pytest.raises(ResumeMismatchError, match="validation.n_negatives: 5 in the checkpoint"):
        fit(True, candidates="sampled", n_negatives=7)


def test_identity_is_compared_as_the_checkpoint_stores_it(data, tmp_path: Path) -> None:
    # JSON turns tuples into lists and int keys into strings; NaN != NaN in Python. None of
    # that may make an identical experiment look like another one.
    identity = {"split": {"ratios": (0.1, 0.1), "by_size": {1: 2.0}}, "cutoffs": (5, 10),
                "lr": 1e-3, "nan": math.nan, "none": None}
    rows = tiny_rows(data[0])
    first = train(tiny_net(), rows, fast(epochs=1), checkpoint_dir=tmp_path, identity=identity)
    more = train(tiny_net(), rows, fast(epochs=2), checkpoint_dir=tmp_path, resume=True,
                 identity=identity)
    assert len(more.history) == 2 and more.history[0] == first.history[0]
    assert identity_diff(json.loads(json.dumps(identity)), identity) == []
    assert identity_diff({"a": {"b": 1}}, {"a": {"b": 2, "c": 3}}) == [
        "a.b: 1 in the checkpoint, 2 now", "a.c: <absent> in the checkpoint, 3 now"]


def test_checkpoint_layout(data, tmp_path: Path) -> None:
    rows = tiny_rows(data[0])
    train(tiny_net(), rows, fast(epochs=3), validate=lambda n: 0.5, checkpoint_dir=tmp_path)
    assert json.loads((tmp_path / "latest.json").read_text()) == {"dir": "epoch-0003"}
    # The newest checkpoint and the one before it (the fallback) are kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002", "epoch-0003",
                                                          "latest.json"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.meta["epoch"] == 3 and ckpt.meta["best_epoch"] == 1
    train(tiny_net(), rows, fast(epochs=2), validate=lambda n: 0.5, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001", "epoch-0002",
                                                          "latest.json"]
    assert sorted(p.name for p in (tmp_path / "epoch-0002").iterdir()) == [
        "best.safetensors", "model.safetensors", "optimizer.json", "optimizer.safetensors",
        "rng.safetensors", "state.json"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.meta["epoch"] == 2 and ckpt.meta["best_epoch"] == 1
    assert ckpt.meta["identity"] == {}
    assert ckpt.rng["torch_cpu.rank0"].dtype == torch.uint8
    assert load_checkpoint(tmp_path / "nothing-here") is None


def test_optimizer_state_round_trip() -> None:
    net = tiny_net()
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8]])
    _, loss = net(seq[:, :-1], seq[:, 1:])
    loss.backward()
    opt.step()
    tensors, rest = flatten_optimizer_state(opt.state_dict())
    json.dumps(rest)  # the non-tensor part is plain JSON
    back = unflatten_optimizer_state(tensors, json.loads(json.dumps(rest)))
    fresh = torch.optim.AdamW(net.parameters(), lr=0.01)
    fresh.load_state_dict(back)
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for pid, entries in opt.state_dict()["state"].items():
        for name, value in entries.items():
            assert torch.equal(fresh.state_dict()["state"][pid][name], value)


# -- early stopping ------------------------------------------------------------------------
def test_early_stopping_restores_best_weights(data) -> None:
    rows = tiny_rows(data[0])
    metrics = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    snapshots: list[dict[str, torch.Tensor]] = []

    def validate(net: torch.nn.Module) -> float:
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
        return next(metrics)

    net = tiny_net()
    result = train(net, rows, fast(epochs=6, patience=2), validate=validate)
    assert result.stopped_early
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]  # 3 and 4 did not improve
    assert (result.best_epoch, result.best_metric) == (2, 0.5)
    assert_same_state(net.state_dict(), snapshots[1])
    assert not torch.equal(net.state_dict()["item_emb.weight"], snapshots[3]["item_emb.weight"])


def test_eval_every_and_no_patience(data) -> None:
    rows = tiny_rows(data[0])
    calls: list[int] = []

    def falling(net: torch.nn.Module) -> float:
        calls.append(1)
        return -float(len(calls))

    result = train(tiny_net(), rows, fast(epochs=5, eval_every=2, patience=None),
                   validate=falling)
    # Validated after epochs 2, 4 and the last one; the metric only falls, so epoch 2 is best.
    assert [r["epoch"] for r in result.history if "metric" in r] == [2, 4, 5]
    assert result.best_epoch == 2 and not result.stopped_early


def test_time_budget_validates_and_stops_after_the_epoch_that_spends_it(data) -> None:
    rows = tiny_rows(data[0])
    result = train(tiny_net(), rows, fast(epochs=6, eval_every=4, max_minutes=1e-9),
                   validate=lambda net: 0.5)
    assert result.out_of_time and not result.stopped_early
    assert [(r["epoch"], r.get("metric")) for r in result.history] == [(1, 0.5)]
    assert result.best_epoch == 1
    unlimited = train(tiny_net(), rows, fast(epochs=2, max_minutes=60), validate=lambda n: 0.5)
    assert not unlimited.out_of_time and len(unlimited.history) == 2


def test_without_validation_keeps_final_weights(data) -> None:
    rows = tiny_rows(data[0])
    result = train(tiny_net(), rows, fast(epochs=2))
    assert result.best_epoch == 0 and result.best_metric is None
    assert all("metric" not in r for r in result.history)
    assert result.history[1]["loss"] < result.history[0]["loss"]


# -- determinism -------------------------------------------------------------------------
def test_same_seed_same_model_other_seed_other_model(data) -> None:
    train_set, valid = data
    cfg = {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False}
    a = SASRec(**TINY, train=cfg).fit(train_set, ctx(valid))
    b = SASRec(**TINY, train=cfg).fit(train_set, ctx(valid))
    c = SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, seed=7))
    hist = valid.histories
    assert torch.equal(a.score(hist), b.score(hist))
    assert not torch.equal(a.score(hist), c.score(hist))


def test_worker_processes_give_the_same_batches(data) -> None:
    rows = tiny_rows(data[0])
    nets = [tiny_net(), tiny_net()]
    for net, workers in zip(nets, (0, 1), strict=True):
        torch.manual_seed(0)
        train(net, rows, fast(epochs=1, num_workers=workers))
    assert_same_state(nets[0].state_dict(), nets[1].state_dict())


def test_loop_leaves_global_flags_alone(data) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    train(tiny_net(), tiny_rows(data[0]), fast(epochs=1))
    assert torch.are_deterministic_algorithms_enabled() == before


# -- pieces ------------------------------------------------------------------------------
def test_epoch_batches_shard_each_global_batch() -> None:
    one = torch.cat(_epoch_batches(10, seed=3, epoch=0, rank=0, world=1, local_batch=4))
    two = [_epoch_batches(10, seed=3, epoch=0, rank=r, world=2, local_batch=2) for r in (0, 1)]
    assert sorted(one.tolist()) == list(range(10))
    for step in range(3):  # global batch `step` is split between the ranks
        merged = sorted(two[0][step].tolist() + two[1][step].tolist())
        assert merged == sorted(one[4 * step:4 * step + 4].tolist())
    odd = [torch.cat(_epoch_batches(5, 0, 0, r, 2, 2)) for r in (0, 1)]
    assert len(odd[0]) == len(odd[1]) == 3  # padded so every rank takes the same steps
    other_epoch = torch.cat(_epoch_batches(10, seed=3, epoch=1, rank=0, world=1, local_batch=4))
    assert not torch.equal(one, other_epoch)


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=4, schedule="cosine")
    lrs = [_lr_at(s, 14, cfg) for s in range(14)]
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == 1.0 and lrs[9] == pytest.approx(0.5) and lrs[-1] < 0.03
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    lin = TrainConfig(lr=1.0, schedule="linear")
    assert [_lr_at(s, 4, lin) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert _lr_at(100, 4, TrainConfig(lr=0.1)) == 0.1


def test_train_config_validation() -> None:
    with pytest.raises(ValidationError):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError):
        TrainConfig(no_such_field=1)
    # Declared once, in the experiment (protocol.valid_metric, protocol.seed, output,
    # resume) and handed over in the FitContext: a model config no longer takes them.
    for moved in ("valid_metric", "seed", "checkpoint_dir", "resume"):
        with pytest.raises(ValidationError, match=moved):
            TrainConfig(**{moved: None})


def test_empty_validation_set_is_ignored(data) -> None:
    train_set, valid = data
    empty = EvalSet(valid.histories.slice(0, 0), np.zeros(1, dtype=np.int64),
                    np.zeros(0, dtype=np.int64))
    mcfg = SASRecConfig(**TINY, train={"epochs": 1, "device": "cpu", "progress": False})
    sp = split(random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=1))
    prepared = Prepared(random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=1),
                        sp, empty, sp.test_set(), {})
    fit_ctx = fit_context(mcfg, prepared, ExperimentConfig(checkpoints=False))
    assert fit_ctx.validate is None
    m = SASRec(mcfg).fit(train_set, fit_ctx)
    assert m.train_result_.best_epoch == 0 and m.train_result_.best_metric is None


# -- GPU -----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_checkpoints_and_resumes_on_cuda(data, tmp_path: Path) -> None:
    train_set, valid = data
    cfg = {"epochs": 2, "batch_size": 8, "device": "cuda", "progress": False}
    model = SASRec(**TINY, train=cfg).fit(train_set, ctx(valid, checkpoint_dir=tmp_path))
    assert next(model.net_.parameters()).is_cuda
    scores = model.score(valid.histories)
    assert scores.is_cuda and torch.isfinite(scores).all()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and "torch_cuda.rank0" in ckpt.rng
    assert ckpt.meta["history"][0]["peak_mem_mb"] > 0
    more = SASRec(**TINY, train=cfg | {"epochs": 3}).fit(
        train_set, ctx(valid, checkpoint_dir=tmp_path, resume=True))
    assert [r["epoch"] for r in more.train_result_.history] == [1, 2, 3]
    model.save(tmp_path / "saved")
    loaded = SASRec.load(tmp_path / "saved")  # loads on CPU
    torch.testing.assert_close(loaded.score(valid.histories), scores.cpu(), atol=1e-5, rtol=1e-5)
