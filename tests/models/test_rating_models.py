"""Rating models on a real ML-100K slice (fold u1, users below 300): hand-checked biases,
save/load identity, unknown users, and that each model improves on the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from genrec.data.interactions import Columns, Histories, Interactions
from genrec.data.ratings import official_folds
from genrec.data.recipes import load_dataset
from genrec.evaluation.rating import rmse
from genrec.models.base import FitContext
from genrec.models.rating.autorec import AutoRec
from genrec.models.rating.baseline import Biases, GlobalMean
from genrec.models.rating.blend import Blend
from genrec.models.rating.knn import KNNBaseline
from genrec.models.rating.mf import BiasedMF
from genrec.models.rating.registry import RATING_MODELS, load_rating_model
from genrec.models.rating.svdpp import SVDpp

FAST: dict[str, dict[str, Any]] = {
    "global_mean": {}, "biases": {}, "knn_baseline": {},
    "biased_mf": {"epochs": 8, "factors": 20},
    "svdpp": {"dim": 8, "train": {"epochs": 2, "progress": False, "device": "cpu"}},
    "autorec": {"hidden": 16, "epochs": 3},
    "blend": {"members": [{"kind": "biases"}, {"kind": "biased_mf", "epochs": 3, "factors": 8}],
              "refit": False},
}


@pytest.fixture(scope="module")
def fold(data_dir: Path):
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    f = official_folds(ds, data_dir / "ml-100k" / "raw", ("u1",))[0]
    keep = pl.col(Columns.user) < 300
    return (Interactions(f.train.frame.filter(keep), ds.n_users, ds.n_items),
            f.test.frame.filter(keep), f)


def _rmse(model, test: pl.DataFrame) -> float:
    pred = np.clip(model.predict(test[Columns.user].to_numpy(), test[Columns.item].to_numpy()),
                   1, 5)
    return rmse(pred, test[Columns.rating].to_numpy())


def test_registry_keys_are_config_kinds() -> None:
    for name, cls in RATING_MODELS.items():
        assert cls.config_cls().kind == name


def test_biases_hand_computed() -> None:
    frame = pl.DataFrame({"user": [0, 0, 1], "item": [0, 1, 0], "timestamp": [0, 1, 0],
                          "rating": [5.0, 3.0, 4.0]})
    m = Biases(reg_u=0.0, reg_i=0.0, epochs=1).fit(Interactions(frame, 2, 2))
    # mu = 4; b_i0 = (1 + 0) / 2 = 0.5, b_i1 = -1; b_u0 = (0.5 + 0) / 2 = 0.25, b_u1 = -0.5
    np.testing.assert_allclose(m.predict([0, 0, 1, 1], [0, 1, 0, 1]),
                               [4.75, 3.25, 4.0, 2.5], rtol=1e-6)
    # An unknown user (-1) gets mu + b_i.
    np.testing.assert_allclose(m.predict([-1], [0]), [4.5], rtol=1e-6)


@pytest.mark.parametrize("kind", list(FAST))
def test_save_load_identity(kind: str, fold, tmp_path: Path) -> None:
    train, test, _ = fold
    model = RATING_MODELS[kind](**FAST[kind]).fit(train, FitContext(progress=False))
    model.save(tmp_path / kind)
    again = load_rating_model(tmp_path / kind)
    users, items = test[Columns.user].to_numpy(), test[Columns.item].to_numpy()
    np.testing.assert_array_equal(model.predict(users, items), again.predict(users, items))
    assert not list(tmp_path.rglob("*.pkl"))
    # score() is the predicted rating of every item.
    h = Histories.from_lists([[0], [1, 2]], train.n_items, users=[3, 5])
    scores = model.score(h)
    assert scores.shape == (2, train.n_items)
    np.testing.assert_allclose(scores[1, :4].numpy(), model.predict([5] * 4, range(4)),
                               rtol=1e-5)


@pytest.mark.slow
def test_models_beat_the_baselines(fold) -> None:
    train, test, _ = fold
    ctx = FitContext(progress=False)
    mean = _rmse(GlobalMean().fit(train, ctx), test)
    biases = _rmse(Biases().fit(train, ctx), test)
    mf = _rmse(BiasedMF(epochs=15, factors=50).fit(train, ctx), test)
    assert biases < mean - 0.1
    assert mf < biases
    # kNN needs co-raters: compare on the whole fold (300 users are too few).
    full = fold[2]
    assert _rmse(KNNBaseline().fit(full.train, ctx), full.test.frame) < \
        _rmse(Biases().fit(full.train, ctx), full.test.frame)


def test_mf_is_seeded_and_keeps_the_best_epoch(fold) -> None:
    train, test, _ = fold
    a = BiasedMF(epochs=3, factors=10).fit(train, FitContext(seed=1))
    b = BiasedMF(epochs=3, factors=10).fit(train, FitContext(seed=1))
    np.testing.assert_array_equal(a.p_.numpy(), b.p_.numpy())
    seen: list[float] = []

    def validate(m) -> float:
        seen.append(-_rmse(m, test))
        return seen[-1]

    m = BiasedMF(epochs=4, factors=10).fit(train, FitContext(validate=validate))
    assert m.best_epoch_ == int(np.argmax(seen)) + 1
    assert -_rmse(m, test) == pytest.approx(max(seen), abs=1e-6)


def test_als_solver_learns(fold) -> None:
    train, test, _ = fold
    als = BiasedMF(solver="als", factors=10, epochs=5, reg=0.15).fit(train)
    assert _rmse(als, test) < _rmse(Biases().fit(train), test)


def test_svdpp_uses_the_implicit_term(fold) -> None:
    train, _, _ = fold
    m = SVDpp(**FAST["svdpp"]).fit(train, FitContext(progress=False))
    assert m.net_.has_implicit and m.net_.y.shape == (train.n_items, 8)
    assert m.train_result_ is not None


def test_blend_weights_come_from_the_training_holdout(fold) -> None:
    train, test, _ = fold
    biases = Biases().fit(train)
    blend = Blend(members=[{"kind": "biases"}], ridge=0.0).fit(train, FitContext(seed=3))
    # One member refitted on the same ratings: its least-squares weight is near 1 (a little
    # above: the biases are shrunk), and the blend is no worse than the member on unseen ratings.
    assert 0.8 < float(blend.weights_[0]) < 1.5
    assert _rmse(blend, test) <= _rmse(biases, test) + 0.01


def test_user_based_knn_is_item_based_on_the_transposed_matrix(fold) -> None:
    train, test, _ = fold
    f = train.frame
    flipped = Interactions(f.with_columns(pl.col(Columns.item).alias(Columns.user),
                                          pl.col(Columns.user).alias(Columns.item)),
                           train.n_items, train.n_users)
    users, items = test[Columns.user].to_numpy(), test[Columns.item].to_numpy()
    a = KNNBaseline(user_based=True, reg_u=15.0, reg_i=10.0).fit(train)
    b = KNNBaseline(reg_u=10.0, reg_i=15.0).fit(flipped)
    np.testing.assert_allclose(a.predict(users, items), b.predict(items, users), rtol=1e-5)


def test_autorec_reconstructs_observed_ratings_and_answers_cold_pairs(fold) -> None:
    train, test, _ = fold
    m = AutoRec(hidden=32, epochs=30, reg=1.0, lr=3e-3).fit(train, FitContext(seed=0))
    # Training ratings are its input: it reconstructs them far better than the global mean.
    fr = train.frame
    seen = m.predict(fr[Columns.user].to_numpy(), fr[Columns.item].to_numpy())
    target = fr[Columns.rating].to_numpy()
    assert rmse(seen, target) < 0.9 * rmse(np.full_like(target, target.mean()), target)
    # Unknown ids and items without training ratings get the global mean, not an error.
    unrated = np.setdiff1d(np.arange(train.n_items), fr[Columns.item].unique().to_numpy())[0]
    np.testing.assert_allclose(m.predict([-1, 0, 10**6], [0, unrated, 0]),
                               [float(m.mu_)] * 3, rtol=1e-6)
    # Seeded: a refit gives the same predictions.
    again = AutoRec(hidden=32, epochs=30, reg=1.0, lr=3e-3).fit(train, FitContext(seed=0))
    np.testing.assert_array_equal(again.predict([1, 2], [3, 4]), m.predict([1, 2], [3, 4]))


def test_autorec_keeps_its_best_validation_epoch(fold) -> None:
    train, test, _ = fold
    scores = []

    def validate(model) -> float:
        scores.append(-_rmse(model, test))
        return scores[-1]

    m = AutoRec(hidden=32, epochs=12, reg=1.0, lr=1e-2, patience=3).fit(
        train, FitContext(seed=0, validate=validate))
    assert m.best_epoch_ == int(np.argmax(scores)) + 1
    assert -_rmse(m, test) == pytest.approx(max(scores), abs=1e-6)


def test_mf_answers_unrated_users_and_items_from_the_biases() -> None:
    # A user or item inside the id space but without a training rating once kept its random
    # initial vector, so its predictions were mu + biases + noise.
    import torch

    from genrec.testing import random_dataset

    ds = random_dataset(n_users=30, n_items=25, seed=1)
    train = Interactions(ds.interactions.frame, 33, 30)  # users 30..32, items 25..29 unrated
    m = BiasedMF(epochs=3, factors=4).fit(train, FitContext(progress=False))
    users = torch.tensor([0, 31, 31, -1])
    items = torch.tensor([27, 3, 28, 3])
    got = m._predict(users, items)
    mu, bu, bi = m.mu_, m.bu_, m.bi_
    assert torch.allclose(got[0], mu + bu[0] + bi[27])  # an unrated item: biases only
    assert torch.allclose(got[1], mu + bu[31] + bi[3])  # an unrated user: biases only
    assert torch.allclose(got[2], mu + bu[31] + bi[28])
    assert torch.allclose(got[3], mu + bi[3])  # an unknown user (-1): item bias only
    assert (m.p_[30:] == 0).all() and (m.q_[25:] == 0).all()
