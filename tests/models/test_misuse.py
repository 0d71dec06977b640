"""Misuse of the model interface gets a clear error or a defined answer, never a silently
wrong result: a failed fit, wrong input types, bad k or masks, out-of-range history ids,
interrupted or misplaced saves, damaged model folders, a diverging loss, infinite settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from genrec.data.interactions import Histories
from genrec.data.splits import split
from genrec.models.base import FitContext, ModelFileError, NotFittedError
from genrec.models.bprmf import BPRMF
from genrec.models.ease import EASE
from genrec.models.pop import Popularity
from genrec.models.registry import load_model, model_config
from genrec.models.sasrec import SASRec
from genrec.testing import random_dataset

TINY = {"dim": 16, "max_len": 8, "n_layers": 1, "n_heads": 2,
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False}}


@pytest.fixture(scope="module")
def data():
    ds = random_dataset(n_users=40, n_items=30, min_len=3, max_len=10, seed=3)
    return ds, split(ds)


def test_a_failed_fit_leaves_an_unfitted_model(data) -> None:
    _, sp = data

    def boom(model) -> float:
        raise KeyboardInterrupt("stopped")

    model = SASRec(**TINY)
    with pytest.raises(KeyboardInterrupt):
        model.fit(sp.train, FitContext(validate=boom))
    with pytest.raises(NotFittedError):
        model.score(sp.valid_set().histories)
    with pytest.raises(NotFittedError):
        model.save(Path("never-written"))
    # A refit that fails does not leave the earlier fit's answers behind a new item count.
    fitted = EASE().fit(sp.train)
    with pytest.raises(TypeError, match="Interactions"):
        fitted.fit(data[0])  # a Dataset, not Interactions
    assert hasattr(fitted, "n_items_")  # refused before anything changed


def test_wrong_input_types_and_ids_are_clear_errors(data) -> None:
    ds, sp = data
    model = EASE().fit(sp.train)
    with pytest.raises(TypeError, match="Interactions"):
        EASE().fit(ds)
    with pytest.raises(TypeError, match="Histories"):
        model.recommend(sp.train, 5)  # type: ignore[arg-type]
    n = sp.train.n_items
    for bad in ([[1, n]], [[1, -3]]):
        h = Histories(np.zeros(1, dtype=np.int64), np.array([0, 2]), np.array(bad[0]), n)
        with pytest.raises(ValueError, match=r"ids must be in \[0, 30\)"):
            model.recommend(h, 5)
    h = sp.valid_set().histories
    for k in (-1, 2.0, True):
        with pytest.raises(ValueError, match="k must be a non-negative integer"):
            model.recommend(h, k)  # type: ignore[arg-type]
    assert model.recommend(h, np.int64(3)).items.shape == (len(h), 3)
    with pytest.raises(ValueError, match="boolean mask"):
        model.recommend(h, 5, allow=np.arange(n))  # item ids are not a mask
    with pytest.raises(ValueError, match="boolean mask"):
        model.recommend(h, 5, block=np.zeros(3, dtype=bool))
    allow = np.zeros(n, dtype=bool)
    allow[[4, 7]] = True
    got = model.recommend(h, 5, allow=allow, exclude_seen=False).items
    assert set(got[got >= 0].tolist()) <= {4, 7}


def test_vectors_before_fit_are_not_fitted_errors() -> None:
    for model in (BPRMF(dim=8), SASRec(**TINY)):
        with pytest.raises(NotFittedError):
            model.item_vectors()


def test_mask_seen_masks_every_repeated_column() -> None:
    h = Histories.from_lists([[1, 2], [5]], 10)
    scores = torch.zeros(2, 5)
    h.mask_seen(scores, np.array([1, 5, 1, 2, 2]))
    assert torch.isinf(scores).tolist() == [[True, False, True, True, True],
                                            [False, True, False, False, False]]


def test_save_replaces_a_model_whole_or_not_at_all(data, tmp_path: Path, monkeypatch) -> None:
    _, sp = data
    h = sp.valid_set().histories
    old, new = EASE(l2=1.0).fit(sp.train), EASE(l2=500.0).fit(sp.train)
    old.save(tmp_path / "m")
    real = EASE._save_files

    def dies_after_the_state(self, path: Path) -> None:
        real(self, path)
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(EASE, "_save_files", dies_after_the_state)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "m")
    monkeypatch.setattr(EASE, "_save_files", real)
    back = load_model(tmp_path / "m")
    assert back.config.l2 == 1.0 and torch.equal(back.score(h), old.score(h))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no half-written leftovers
    new.save(tmp_path / "m")
    assert torch.equal(load_model(tmp_path / "m").score(h), new.score(h))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model folder"):
        new.save(other)
    assert (other / "todo.txt").read_text() == "mine"


def test_damaged_model_folders_name_the_folder(data, tmp_path: Path) -> None:
    _, sp = data
    EASE().fit(sp.train).save(tmp_path / "ease")
    Popularity().fit(sp.train).save(tmp_path / "pop")
    with pytest.raises(ModelFileError, match="absent: not a readable EASE model folder"):
        EASE.load(tmp_path / "absent")
    bad = tmp_path / "bad-meta"
    bad.mkdir()
    for f in ("config.json", "state.safetensors"):
        (bad / f).write_bytes((tmp_path / "ease" / f).read_bytes())
    (bad / "meta.json").write_text("{}")
    with pytest.raises(ModelFileError, match=r"bad-meta.*missing 'n_users_'"):
        EASE.load(bad)
    (bad / "meta.json").write_text((tmp_path / "ease" / "meta.json").read_text())
    state = (tmp_path / "ease" / "state.safetensors").read_bytes()
    (bad / "state.safetensors").write_bytes(state[: len(state) // 2])
    with pytest.raises(ModelFileError, match="bad-meta"):
        EASE.load(bad)
    (bad / "state.safetensors").write_bytes((tmp_path / "pop" / "state.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match="missing"):
        EASE.load(bad)  # another model's state
    (bad / "meta.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ModelFileError):
        EASE.load(bad)


def test_a_diverging_loss_stops_training(data) -> None:
    _, sp = data
    cfg = {**TINY, "train": {**TINY["train"], "epochs": 3, "lr": 1e6}}
    model = SASRec(**cfg)
    with pytest.raises(FloatingPointError, match="diverged"):
        model.fit(sp.train)
    with pytest.raises(NotFittedError):
        model.score(sp.valid_set().histories)


def test_infinite_or_nan_settings_are_refused() -> None:
    for kind, params in (("ease", {"l2": float("inf")}), ("itemknn", {"shrink": float("nan")}),
                         ("sasrec", {"train": {"lr": float("inf")}})):
        with pytest.raises(ValidationError, match="finite number"):
            model_config(kind, **params)


def test_leave_one_out_without_testable_users_is_refused() -> None:
    ds = random_dataset(n_users=20, n_items=4, min_len=1, max_len=1, seed=0)
    if (ds.interactions.histories().lengths >= 3).any():
        pytest.skip("the draw gave a user 3 items")
    with pytest.raises(ValueError, match="at least 3"):
        split(ds)
