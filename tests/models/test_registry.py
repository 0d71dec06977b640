"""The model registry: literal names, validated configs, loading any saved kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from genrec.models.base import Recommender
from genrec.models.registry import MODELS, AnyModelConfig, build_model, load_model, model_config
from genrec.testing import tiny_dataset

_TINY_TRAIN = {"epochs": 1, "device": "cpu", "progress": False}
FAST: dict[str, dict[str, Any]] = {
    "ease": {"l2": 1.0},
    "itemknn": {"k": 3},
    "sasrec": {"dim": 8, "max_len": 5, "train": _TINY_TRAIN},
    "gru4rec": {"dim": 8, "max_len": 5, "train": _TINY_TRAIN},
    "bert4rec": {"dim": 8, "max_len": 5, "train": _TINY_TRAIN},
    "hstu": {"dim": 8, "max_len": 5, "n_buckets": 4, "train": _TINY_TRAIN},
    "bprmf": {"dim": 8, "train": _TINY_TRAIN},
    "lightgcn": {"dim": 8, "n_layers": 2, "train": _TINY_TRAIN},
    "simplex": {"dim": 8, "n_negatives": 4, "train": _TINY_TRAIN},
    "tiger": {"dim": 8, "n_heads": 2, "ff_dim": 16, "n_layers": 1, "max_len": 5,
              "tokenizer": {"n_levels": 2, "codebook_size": 4}, "train": _TINY_TRAIN},
    "two_stage": {"candidates": 5, "ranker": {"epochs": 1, "text": "off"}},
}
"""Tiny configs for the round trip; a kind missing here is fitted with its defaults."""


def test_fast_configs_name_registered_kinds() -> None:
    assert set(FAST) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_key_equals_config_kind_default(name: str) -> None:
    cls = MODELS[name]
    assert issubclass(cls, Recommender)
    assert cls.config_cls.model_fields["kind"].default == name
    assert cls.config_cls().kind == name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_model_from_config(name: str) -> None:
    cfg = model_config(name)
    model = build_model(cfg)
    assert type(model) is MODELS[name]
    assert model.config == cfg


def test_model_config_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        model_config("nope")


def test_model_config_rejects_unknown_key_and_bad_value() -> None:
    with pytest.raises(ValidationError):
        model_config("ease", not_a_field=1)
    with pytest.raises(ValidationError):
        model_config("ease", l2=-1.0)
    assert model_config("ease", l2=3.0).l2 == 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_discriminated_union_picks_the_config_class(name: str) -> None:
    cfg = TypeAdapter(AnyModelConfig).validate_python({"kind": name})
    assert type(cfg) is MODELS[name].config_cls


def test_discriminated_union_rejects_unknown_kind() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(AnyModelConfig).validate_python({"kind": "nope"})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_load_model_round_trips_every_kind(name: str, tmp_path: Path) -> None:
    train = tiny_dataset().interactions
    model = build_model(model_config(name, **FAST.get(name, {}))).fit(train)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is MODELS[name]
    assert loaded.config == model.config
    hist = train.histories()
    torch.testing.assert_close(loaded.score(hist), model.score(hist), rtol=0, atol=0)


def test_load_model_rejects_unknown_kind(tmp_path: Path) -> None:
    model = build_model(model_config("pop")).fit(tiny_dataset().interactions)
    model.save(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"kind": "nope"}))
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        load_model(tmp_path / "m")
