"""Config: YAML + overrides + validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genrec.config import ExperimentConfig, apply_overrides, load_config


def test_defaults_validate() -> None:
    cfg = ExperimentConfig()
    assert cfg.protocol.candidates == "full" and cfg.protocol.exclude_seen
    assert cfg.protocol.split.kind == "leave_one_out"


def test_yaml_models_and_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: {name: ml-100k}\nmodels:\n  - {kind: ease, l2: 10}\n")
    cfg = load_config(path, ["models.0.l2=20", "protocol.cutoffs=[10, 5]"])
    assert cfg.models[0].l2 == 20.0
    assert cfg.protocol.cutoffs == [5, 10]


def test_models_flag_keeps_params_of_listed_kinds(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - {kind: ease, l2: 10}\n")
    cfg = load_config(path, ["models.1.k=5"], models=["ease", "itemknn"])
    assert [m.kind for m in cfg.models] == ["ease", "itemknn"]
    assert cfg.models[0].l2 == 10.0 and cfg.models[1].k == 5


@pytest.mark.parametrize("override", ["protocol.nope=1", "models.0.l2=-1", "protocol.cutoffs=[0]"])
def test_bad_values_are_rejected(override: str) -> None:
    with pytest.raises(ValidationError):
        load_config(None, [override], models=["ease"])


def test_override_into_missing_list_item_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no such place"):
        apply_overrides({}, ["models.0.l2=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["models"])


def test_duplicate_model_kinds_rejected() -> None:
    with pytest.raises(ValidationError, match="distinct names"):
        load_config(None, models=["ease", "ease"])


def test_two_configurations_of_one_kind_need_distinct_names(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - {kind: ease, l2: 10}\n  - {kind: ease, name: ease-500, "
                    "l2: 500}\n")
    cfg = load_config(path)
    assert [m.label for m in cfg.models] == ["ease", "ease-500"]
    assert [m.kind for m in cfg.models] == ["ease", "ease"]
    with pytest.raises(ValidationError, match="ease-500"):
        load_config(path, ["models.0.name=ease-500"])
    # A name is a folder: no separators, nothing that climbs out of the run folder.
    for bad in ["a/b", "../x", ".hidden"]:
        with pytest.raises(ValidationError, match="name"):
            load_config(path, [f"models.1.name={bad}"])


def test_non_mapping_yaml(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)


def test_broken_yaml_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("dataset:\n  name: ml-100k\n models: [\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_config(path)
    path.write_bytes(b"dataset: {name: \xff}\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not UTF-8"):
        load_config(path)


@pytest.mark.parametrize("key", ["valid_metric=ndcg@10", "seed=1", "checkpoint_dir=x",
                                 "resume=true"])
def test_training_keys_are_declared_once_in_the_experiment(key: str) -> None:
    # protocol.valid_metric, protocol.seed, output and resume reach the training loop through
    # the model's FitContext; a model's train section no longer takes its own copy.
    with pytest.raises(ValidationError, match=key.split("=")[0]):
        load_config(None, [f"models.0.train.{key}"], models=["sasrec"])
    assert load_config(None, ["protocol.valid_metric=recall@20", "protocol.seed=7"],
                       models=["sasrec"]).protocol.valid_metric == "recall@20"


@pytest.mark.parametrize("metric", ["ndcg", "nope@10", "ndcg@0"])
def test_bad_valid_metric_is_rejected(metric: str) -> None:
    with pytest.raises(ValidationError, match="valid_metric"):
        load_config(None, [f"protocol.valid_metric={metric}"], models=["ease"])


def test_models_flag_gives_each_slot_its_own_copy(tmp_path) -> None:
    # --models ease,ease over a file that lists ease once put one dict in both slots, so
    # --set models.1.* changed models.0 too (and the two names collided).
    path = tmp_path / "c.yaml"
    path.write_text("dataset: {name: ml-100k}\nmodels: [{kind: ease, l2: 50}]\n")
    cfg = load_config(path, ["models.1.name=ease-l2-500", "models.1.l2=500"],
                      models=["ease", "ease"])
    assert [(m.label, m.l2) for m in cfg.models] == [("ease", 50.0), ("ease-l2-500", 500.0)]
