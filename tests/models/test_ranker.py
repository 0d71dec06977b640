"""The two-stage model on ML-100K: leak-free training pairs, -inf outside the candidates,
save/load identity, DSelect-k gate sparsity and config errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from genrec.config import load_config
from genrec.data.interactions import Columns, Interactions
from genrec.models.base import FitContext
from genrec.models.ranker import MultiTaskTower, RankerConfig, TwoStage, TwoStageConfig
from genrec.models.ranking import rank
from genrec.models.registry import AnyModelConfig, load_model, model_config
from genrec.runs.experiment import Prepared, fit_context, prepare
from genrec.training.loop import ResumeMismatchError

FAST_RANKER: dict[str, Any] = {"epochs": 2, "batch_size": 512, "progress": False,
                               "text": "off", "tower": "mmoe"}


@dataclass
class Fitted:
    data: Prepared
    model: TwoStage
    ctx: FitContext


pytestmark = pytest.mark.slow  # the module's fixture fits EASE twice and a ranker (~20 s)


@pytest.fixture(scope="module")
def fitted(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """EASE top-20 -> ranker on ML-100K (leave-one-out), with the run's validation callback."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ranker")
    cfg = load_config(None, [f"dataset.data_dir={data_dir}", "dataset.name=ml-100k",
                             f"output={out}", "protocol.cutoffs=[10]", "threads=1"])
    mcfg = model_config("two_stage", retriever={"kind": "ease", "l2": 500.0}, candidates=20,
                        holdout=2, ranker=FAST_RANKER)
    cfg = cfg.model_validate(cfg.model_dump() | {"models": [mcfg.model_dump()]})
    data = prepare(cfg, write=False)
    ctx = fit_context(cfg.models[0], data, cfg)
    model = TwoStage(cfg.models[0]).fit(data.split.train, ctx)  # type: ignore[arg-type]
    return Fitted(data, model, ctx)


def _pairs_of(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame[Columns.user].to_list(), frame[Columns.item].to_list(), strict=True))


def test_no_validation_or_test_interaction_in_the_training_pairs(fitted: Fitted) -> None:
    m, sp = fitted.model, fitted.data.split
    pairs = m.pairs_
    positive = pairs.labels[:, 0] > 0
    assert positive.any() and (~positive).any()
    pos = set(zip(pairs.users[positive].tolist(), pairs.items[positive].tolist(), strict=True))
    # every positive is a training interaction, and none is a valid / test one
    assert pos <= _pairs_of(sp.train.frame)
    assert not pos & (_pairs_of(sp.valid.frame) | _pairs_of(sp.test.frame))
    # positives are each user's last `holdout` training items, never earlier ones
    last = (sp.train.frame.with_columns(
        (pl.len().over(Columns.user) - 1 - pl.int_range(pl.len()).over(Columns.user))
        .alias("from_end")).filter(pl.col("from_end") < 2))
    assert pos <= _pairs_of(last)
    # likes are positives rated >= 4; at most one positive per held-out position
    assert bool((pairs.labels[:, 1] <= pairs.labels[:, 0]).all())
    assert bool((pairs.rating[pairs.labels[:, 1] > 0] >= 4).all())
    assert m.heads_ == ["interaction", "like", "rating"]


def test_scores_are_minus_inf_outside_the_retrievers_candidates(fitted: Fitted) -> None:
    m = fitted.model
    h = fitted.data.test_set.histories.slice(0, 64)
    scores = m.score(h)
    finite = torch.isfinite(scores)
    items, _ = rank(m.retriever_.score(h).float(), h, 20, exclude_seen=True)
    expected = torch.zeros_like(finite)
    expected[torch.arange(len(h))[:, None].expand_as(items), items] = True
    assert torch.equal(finite, expected)
    assert int(finite.sum(1).max()) == 20


def test_training_record_counts_restarts_and_ranker_metrics(fitted: Fitted) -> None:
    m = fitted.model
    hist = m.train_result_.history
    assert hist and all("nan_restarts" in r and "loss_spikes" in r and "metric" in r
                        for r in hist)
    assert m.stability_["nan_restarts"] == 0 and not m.stability_["diverged"]
    metrics = m.ranker_metrics_
    assert 0.5 < metrics["interaction_auc"] <= 1.0 and metrics["rating_rmse"] > 0


def test_save_load_gives_identical_scores(fitted: Fitted, tmp_path: Path) -> None:
    m = fitted.model
    m.save(tmp_path / "m")
    assert (tmp_path / "m" / "retriever" / "config.json").is_file()
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, TwoStage) and loaded.config == m.config
    h = fitted.data.test_set.histories.slice(0, 100)
    torch.testing.assert_close(loaded.score(h), m.score(h), rtol=0, atol=0)
    recs, recs_loaded = m.recommend(h, 10), loaded.recommend(h, 10)
    assert np.array_equal(recs.items, recs_loaded.items)


def test_ranker_resumes_from_its_checkpoint_and_refuses_another(fitted: Fitted,
                                                                tmp_path: Path) -> None:
    """A ranker run stopped after epoch 2 of 3 and resumed ends where an uninterrupted one
    does (weights and record); a resume under a changed ranker config is refused."""
    three = {**FAST_RANKER, "epochs": 3, "patience": None}
    ident = {"experiment": "ranker-resume"}
    whole = fitted.model.refit_ranker(three, FitContext(seed=7, identity=ident))
    ctx = FitContext(seed=7, checkpoint_dir=tmp_path, identity=ident)
    fitted.model.refit_ranker(three, ctx)
    folder = tmp_path / "ranker"
    assert json.loads((folder / "latest.json").read_text()) == {"dir": "epoch-0003"}
    # a crash after epoch 2: the epoch-3 checkpoint never committed
    shutil.rmtree(folder / "epoch-0003")
    (folder / "latest.json").write_text(json.dumps({"dir": "epoch-0002"}))
    resumed = fitted.model.refit_ranker(three, FitContext(seed=7, checkpoint_dir=tmp_path,
                                                          resume=True, identity=ident))
    assert [r["epoch"] for r in resumed.train_result_.history] == [1, 2, 3]
    assert [r["loss"] for r in resumed.train_result_.history] == pytest.approx(
        [r["loss"] for r in whole.train_result_.history], rel=1e-6)
    for (k, a), b in zip(whole.net_.state_dict().items(), resumed.net_.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(b, a, msg=k)
    assert not any(p.name.endswith(".pt") or p.name.endswith(".pkl")
                   for p in folder.rglob("*"))
    with pytest.raises(ResumeMismatchError, match=r"ranker\.lr"):
        fitted.model.refit_ranker({**three, "lr": 0.5}, FitContext(
            seed=7, checkpoint_dir=tmp_path, resume=True, identity=ident))


def test_dselect_k_gates_select_at_most_k_experts(fitted: Fitted) -> None:
    other = fitted.model.refit_ranker(
        FAST_RANKER | {"tower": "dselect_k", "n_experts": 8, "k": 2, "lr": 0.01,
                       "entropy_reg": 1.0, "epochs": 2, "patience": None}, FitContext(seed=1))
    tower = other.net_.tower
    assert isinstance(tower, MultiTaskTower)
    x = torch.zeros(1, tower.experts[0][0].in_features)
    gates = tower.gate_weights(x)[0]                                   # (T, n)
    assert gates.shape == (3, 8)
    torch.testing.assert_close(gates.sum(1), torch.ones(3))
    assert ((gates > 1e-6).sum(1) <= 2).all(), gates


def test_like_and_rating_heads_need_ratings(fitted: Fitted) -> None:
    train = fitted.data.split.train
    no_rating = Interactions(train.frame.drop(Columns.rating), train.n_users, train.n_items)
    m = TwoStage(model_config("two_stage", retriever={"kind": "pop"}, candidates=5,
                              ranker=FAST_RANKER | {"heads": ["interaction", "like"]}))
    with pytest.raises(ValueError, match="need ratings"):
        m.fit(no_rating)


@pytest.mark.parametrize(("params", "needle"), [
    ({"retriever": {"kind": "two_stage"}}, "not another two_stage"),
    ({"ranker": {"tower": "dselect_k", "n_experts": 6}}, "power-of-two"),
    ({"ranker": {"tower": "dselect_k", "n_experts": 4, "k": 5}}, "cannot exceed"),
    ({"ranker": {"heads": ["interaction"], "score_weights": {"rating": 1.0}}}, "not trained"),
    ({"ranker": {"tower": "moe"}}, "tower"),
    ({"ranker": {"optimizer": "sgd"}}, "optimizer"),
    ({"candidates": 0}, "candidates"),
    ({"ranker": {"nope": 1}}, "nope"),
])
def test_config_errors(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        TwoStageConfig.model_validate(params)


def test_config_round_trips_through_the_model_union() -> None:
    cfg = TypeAdapter(AnyModelConfig).validate_python(
        {"kind": "two_stage", "retriever": {"kind": "sasrec", "dim": 8}})
    assert isinstance(cfg, TwoStageConfig) and cfg.retriever.kind == "sasrec"
    assert TwoStageConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert RankerConfig().tower == "mmoe"
