"""Contract tests every :class:`~genrec.models.base.Recommender` must pass.

Use it as a mixin; pytest collects the ``test_*`` methods of the subclass::

    class TestEASE(RecommenderContract):
        model_cls = EASE
        params = {"l2": 1.0}   # optional: a fast, tiny configuration

The fixture is :func:`genrec.testing.fixtures.tiny_dataset` (7 users, 10 items). Models whose
fit is random must seed it from the fit context (``FitContext.seed``), so that a refit equals
a fresh fit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from genrec.data.interactions import Dataset, Histories, Interactions
from genrec.models.base import FitContext, NotFittedError, Recommender
from genrec.testing.fixtures import random_dataset, tiny_dataset

__all__ = ["RecommenderContract"]


class RecommenderContract:
    """Mixin of model-agnostic tests (pytest collects them through the ``Test*`` subclass).

    Attributes:
        model_cls: The model class under test.
        params: Config overrides used by every test except default construction.

    """

    model_cls: ClassVar[type[Recommender[Any]]]
    params: ClassVar[dict[str, Any]] = {}

    # -- helpers and fixtures ---------------------------------------------------------------
    def make(self, **overrides: Any) -> Recommender[Any]:
        """An unfitted model with :attr:`params` (and ``overrides``) applied."""
        return self.model_cls(**(self.params | overrides))

    @pytest.fixture(scope="class")
    @classmethod
    def dataset(cls) -> Dataset:
        """The tiny fixture dataset."""
        return tiny_dataset()

    @pytest.fixture(scope="class")
    @classmethod
    def train(cls, dataset: Dataset) -> Interactions:
        """Training interactions: the whole tiny dataset."""
        return dataset.interactions

    @pytest.fixture(scope="class")
    @classmethod
    def histories(cls, train: Interactions) -> Histories:
        """Every user's full history."""
        return train.histories()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, train: Interactions) -> Recommender[Any]:
        """A model fitted on the tiny dataset (tests must not mutate it)."""
        return cls.model_cls(**cls.params).fit(train)

    # -- construction and config ------------------------------------------------------------
    def test_default_construction(self) -> None:
        model = self.model_cls()
        assert isinstance(model.config, self.model_cls.config_cls)
        assert model.config == self.model_cls.config_cls()
        # __init__ stores the config and nothing else (no logic, no learned state).
        assert set(vars(model)) == {"config"}

    def test_params_construction_stores_only_config(self) -> None:
        model = self.make()
        assert set(vars(model)) == {"config"}
        for key, value in self.params.items():
            assert getattr(model.config, key) == value

    def test_config_round_trip(self) -> None:
        cfg = self.make().config
        assert type(cfg).model_validate(cfg.model_dump()) == cfg
        assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg
        assert self.model_cls(cfg).config == cfg

    def test_kind_names_the_model(self) -> None:
        cfg = self.model_cls.config_cls()
        assert isinstance(cfg.kind, str) and cfg.kind
        with pytest.raises(ValidationError):
            self.model_cls(kind=cfg.kind + "_other")

    def test_unknown_config_key_rejected(self) -> None:
        with pytest.raises(ValidationError):
            self.make(no_such_hyperparameter=1)
        with pytest.raises(ValidationError):
            self.model_cls.config_cls.model_validate({"no_such_hyperparameter": 1})

    # -- fitting ------------------------------------------------------------------------------
    def test_fit_returns_self(self, train: Interactions) -> None:
        model = self.make()
        assert model.fit(train) is model
        assert model.n_items_ == train.n_items
        assert model.n_users_ == train.n_users

    def test_fit_takes_a_fit_context(self, train: Interactions) -> None:
        # Side inputs travel in a FitContext; the old positional validation set is refused
        # with a message that says what to pass instead.
        assert self.make().fit(train, FitContext()).n_items_ == train.n_items
        valid = Histories.from_lists([[0]], n_items=train.n_items)
        with pytest.raises(TypeError, match="FitContext"):
            self.make().fit(train, valid)  # type: ignore[arg-type]

    def test_learned_attributes_end_in_underscore(self, train: Interactions) -> None:
        model = self.make()
        before = set(vars(model))
        model.fit(train)
        learned = set(vars(model)) - before
        assert learned, "fit learned nothing"
        bad = sorted(a for a in learned if not a.endswith("_"))
        assert not bad, f"learned attributes must end in '_': {bad}"
        assert model.config == self.make().config, "fit must not change the config"

    def test_refit_equals_fresh_fit(self, train: Interactions) -> None:
        other = random_dataset(n_users=9, n_items=12, seed=7).interactions
        fresh = self.make().fit(other)
        hist = other.histories()
        # Refit on another id space, and on the same data: nothing of the first fit survives.
        for refit in (self.make().fit(train).fit(other), self.make().fit(other).fit(other)):
            assert refit.n_items_ == fresh.n_items_ == other.n_items
            assert refit.n_users_ == fresh.n_users_ == other.n_users
            torch.testing.assert_close(refit.score(hist), fresh.score(hist), rtol=0, atol=0)

    # -- scoring ------------------------------------------------------------------------------
    def test_score_shape_and_dtype(self, fitted: Recommender[Any], histories: Histories) -> None:
        scores = fitted.score(histories)
        assert isinstance(scores, torch.Tensor)
        assert scores.shape == (len(histories), histories.n_items)
        assert scores.is_floating_point()
        assert not torch.isnan(scores).any()

    def test_score_item_subset_equals_full_columns(self, fitted: Recommender[Any],
                                                   histories: Histories) -> None:
        full = fitted.score(histories)
        items = np.array([7, 2, 5, 0])
        part = fitted.score(histories, items=items)
        assert part.shape == (len(histories), len(items))
        torch.testing.assert_close(part, full[:, torch.from_numpy(items)], rtol=0, atol=0)

    def test_score_rows_do_not_depend_on_the_batch(self, fitted: Recommender[Any],
                                                   train: Interactions) -> None:
        full = fitted.score(train.histories())
        users = np.array([5, 0, 3])
        part = fitted.score(train.histories(users))
        torch.testing.assert_close(part, full[torch.from_numpy(users)], rtol=1e-6, atol=1e-6)

    def test_score_does_not_mutate_the_model(self, fitted: Recommender[Any],
                                             histories: Histories) -> None:
        first = fitted.score(histories).clone()
        fitted.score(histories).fill_(123.0)  # callers may write into the returned block
        histories.mask_seen(fitted.score(histories))
        torch.testing.assert_close(fitted.score(histories), first, rtol=0, atol=0)

    def test_score_before_fit_raises(self, histories: Histories, tmp_path: Path) -> None:
        model = self.make()
        with pytest.raises(NotFittedError):
            model.score(histories)
        with pytest.raises(NotFittedError):
            model.recommend(histories)
        with pytest.raises(NotFittedError):
            model.save(tmp_path / "m")

    def test_other_id_space_raises(self, fitted: Recommender[Any], histories: Histories) -> None:
        wrong = Histories.from_lists([[0, 1]], n_items=histories.n_items + 1)
        with pytest.raises(ValueError, match="items"):
            fitted.score(wrong)

    # -- recommending -------------------------------------------------------------------------
    def test_recommend_excludes_seen_and_sorts(self, fitted: Recommender[Any],
                                               histories: Histories) -> None:
        k = 3
        rec = fitted.recommend(histories, k=k)
        np.testing.assert_array_equal(rec.users, histories.users)
        assert rec.items.shape == rec.scores.shape == (len(histories), k)
        scores = fitted.score(histories)
        for row in range(len(histories)):
            seen = set(histories.items[histories.indptr[row]:histories.indptr[row + 1]].tolist())
            items = rec.items[row]
            assert (items >= 0).all(), "the fixture leaves every user >= k unseen items"
            assert len(set(items.tolist())) == k
            assert not seen & set(items.tolist()), f"row {row} recommends a seen item"
            assert np.all(np.diff(rec.scores[row]) <= 0), "recommendations must be sorted"
            np.testing.assert_allclose(rec.scores[row], scores[row, items].numpy())
            # Nothing unseen outside the list scores above its last entry.
            unseen = np.setdiff1d(np.arange(histories.n_items), [*seen, *items.tolist()])
            assert (scores[row, unseen].numpy() <= rec.scores[row, -1]).all()

    def test_recommend_can_keep_seen(self, fitted: Recommender[Any],
                                     histories: Histories) -> None:
        n = histories.n_items
        rec = fitted.recommend(histories, k=n, exclude_seen=False)
        assert rec.items.shape == (len(histories), n)
        assert (rec.items >= 0).all()
        for row in rec.items:
            assert sorted(row.tolist()) == list(range(n))

    def test_recommend_pads_with_minus_one(self, fitted: Recommender[Any],
                                           histories: Histories) -> None:
        n = histories.n_items
        rec = fitted.recommend(histories, k=n + 5)
        assert rec.items.shape == (len(histories), n)  # k is capped at the catalogue
        for row in range(len(histories)):
            seen = set(histories.items[histories.indptr[row]:histories.indptr[row + 1]].tolist())
            items = rec.items[row]
            valid = items[items >= 0]
            assert (items[len(valid):] == -1).all(), "-1 only pads the end"
            assert not seen & set(valid.tolist())
            assert len(valid) <= n - len(seen)

    # -- persistence --------------------------------------------------------------------------
    def test_save_load_gives_identical_scores(self, fitted: Recommender[Any],
                                              histories: Histories, tmp_path: Path) -> None:
        fitted.save(tmp_path / "model")
        loaded = self.model_cls.load(tmp_path / "model")
        assert type(loaded) is self.model_cls
        assert loaded.config == fitted.config
        assert (loaded.n_users_, loaded.n_items_) == (fitted.n_users_, fitted.n_items_)
        torch.testing.assert_close(loaded.score(histories), fitted.score(histories),
                                   rtol=0, atol=0)
        np.testing.assert_array_equal(loaded.recommend(histories, k=4).items,
                                      fitted.recommend(histories, k=4).items)

    def test_saved_files_are_json_and_safetensors(self, fitted: Recommender[Any],
                                                  tmp_path: Path) -> None:
        path = tmp_path / "model"
        fitted.save(path)
        assert sorted(p.name for p in path.iterdir()) == [
            "config.json", "meta.json", "state.safetensors"]
        assert json.loads((path / "config.json").read_text()) == json.loads(
            fitted.config.model_dump_json())
        assert json.loads((path / "meta.json").read_text())["n_items_"] == fitted.n_items_
        state = load_file(str(path / "state.safetensors"))  # fails on a pickle
        assert all(isinstance(v, torch.Tensor) for v in state.values())

    def test_save_overwrites(self, train: Interactions, histories: Histories,
                             tmp_path: Path) -> None:
        other = random_dataset(n_users=9, n_items=12, seed=7).interactions
        path = tmp_path / "model"
        self.make().fit(other).save(path)
        model = self.make().fit(train)
        model.save(path)
        loaded = self.model_cls.load(path)
        torch.testing.assert_close(loaded.score(histories), model.score(histories),
                                   rtol=0, atol=0)
