"""The training loop: resuming equals an uninterrupted run, early stopping, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from genrec.data.interactions import EvalSet
from genrec.data.splits import split
from genrec.models import _sequential
from genrec.models.sasrec import SASRec, SASRecNet
from genrec.testing import random_dataset
from genrec.training import TrainConfig, load_checkpoint, train
from genrec.training.checkpoint import flatten_optimizer_state, unflatten_optimizer_state
from genrec.training.loop import _epoch_batches, _lr_at

TINY = {"dim": 16, "max_len": 8, "n_layers": 1, "n_heads": 2, "dropout": 0.2}


@pytest.fixture(scope="module")
def data() -> tuple:
    sp = split(random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=1))
    return sp.train, sp.valid_set()


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
def test_resume_equals_uninterrupted_run(data, tmp_path: Path, monkeypatch) -> None:
    train_set, valid = data
    params = TINY | {"train": {"epochs": 3, "batch_size": 8, "device": "cpu", "progress": False,
                               "checkpoint_dir": str(tmp_path / "straight")}}
    straight = SASRec(**params).fit(train_set, valid)

    # Second run: the process "dies" while validating epoch 2, after epoch 1's checkpoint.
    calls = {"n": 0}
    real_evaluate = _sequential.evaluate

    def crashing_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_evaluate(*args, **kwargs)

    params["train"]["checkpoint_dir"] = str(tmp_path / "crashed")
    monkeypatch.setattr(_sequential, "evaluate", crashing_evaluate)
    with pytest.raises(KeyboardInterrupt):
        SASRec(**params).fit(train_set, valid)
    monkeypatch.setattr(_sequential, "evaluate", real_evaluate)
    assert load_checkpoint(tmp_path / "crashed").meta["epoch"] == 1

    torch.manual_seed(12345)  # the resumed run must not depend on the global RNG it finds
    resumed = SASRec(**(params | {"train": params["train"] | {"resume": True}}))
    resumed.fit(train_set, valid)
    assert_same_state(resumed.net_.state_dict(), straight.net_.state_dict())
    assert without_timing(resumed.train_result_.history) == without_timing(
        straight.train_result_.history)
    assert resumed.train_result_.best_epoch == straight.train_result_.best_epoch
    hist = valid.histories
    assert torch.equal(resumed.score(hist), straight.score(hist))


def test_resume_after_the_last_epoch_trains_nothing(data, tmp_path: Path) -> None:
    train_set, valid = data
    cfg = {"epochs": 2, "batch_size": 8, "device": "cpu", "progress": False,
           "checkpoint_dir": str(tmp_path)}
    first = SASRec(**TINY, train=cfg).fit(train_set, valid)
    again = SASRec(**TINY, train=cfg | {"resume": True}).fit(train_set, valid)
    assert len(again.train_result_.history) == 2
    assert torch.equal(again.score(valid.histories), first.score(valid.histories))


def test_checkpoint_layout(data, tmp_path: Path) -> None:
    rows = tiny_rows(data[0])
    train(tiny_net(), rows, fast(epochs=2, checkpoint_dir=str(tmp_path)), validate=lambda n: 0.5)
    assert json.loads((tmp_path / "latest.json").read_text()) == {"dir": "epoch-0002"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002", "latest.json"]
    assert sorted(p.name for p in (tmp_path / "epoch-0002").iterdir()) == [
        "best.safetensors", "model.safetensors", "optimizer.json", "optimizer.safetensors",
        "rng.safetensors", "state.json"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.meta["epoch"] == 2 and ckpt.meta["best_epoch"] == 1
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
    a = SASRec(**TINY, train=cfg).fit(train_set, valid)
    b = SASRec(**TINY, train=cfg).fit(train_set, valid)
    c = SASRec(**TINY, train=cfg | {"seed": 7}).fit(train_set, valid)
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
        TrainConfig(valid_metric="ndcg")
    with pytest.raises(ValidationError):
        TrainConfig(valid_metric="nope@10")
    with pytest.raises(ValidationError):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError):
        TrainConfig(no_such_field=1)
    assert TrainConfig(valid_metric="recall@20").valid_metric == "recall@20"


def test_empty_validation_set_is_ignored(data) -> None:
    train_set, valid = data
    empty = EvalSet(valid.histories.slice(0, 0), np.zeros(1, dtype=np.int64),
                    np.zeros(0, dtype=np.int64))
    m = SASRec(**TINY, train={"epochs": 1, "device": "cpu", "progress": False}).fit(train_set,
                                                                                    empty)
    assert m.train_result_.best_epoch == 0


# -- GPU -----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_checkpoints_and_resumes_on_cuda(data, tmp_path: Path) -> None:
    train_set, valid = data
    cfg = {"epochs": 2, "batch_size": 8, "device": "cuda", "progress": False,
           "checkpoint_dir": str(tmp_path)}
    model = SASRec(**TINY, train=cfg).fit(train_set, valid)
    assert next(model.net_.parameters()).is_cuda
    scores = model.score(valid.histories)
    assert scores.is_cuda and torch.isfinite(scores).all()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and "torch_cuda.rank0" in ckpt.rng
    assert ckpt.meta["history"][0]["peak_mem_mb"] > 0
    more = SASRec(**TINY, train=cfg | {"epochs": 3, "resume": True}).fit(train_set, valid)
    assert [r["epoch"] for r in more.train_result_.history] == [1, 2, 3]
    model.save(tmp_path / "saved")
    loaded = SASRec.load(tmp_path / "saved")  # loads on CPU
    torch.testing.assert_close(loaded.score(valid.histories), scores.cpu(), atol=1e-5, rtol=1e-5)
