"""``benchmarks/tuned.py``: the recipe written after a study keeps the search's ``--set``
overrides (a study of SASRec with ``models.0.item_text=init`` must not write a recipe of plain
SASRec) and the chosen values, and it validates as a config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from genrec.config import ExperimentConfig

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tuned_bench", _ROOT / "benchmarks" / "tuned.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_recipe_keeps_the_search_overrides_and_the_choice() -> None:
    space = _ROOT / "configs" / "tune" / "sasrec.yaml"
    sets = ["dataset.name=amazon-beauty", "models.0.item_text=init",
            "models.0.train.patience=5", "tune.workers=2"]
    best = {"models.0.dim": 128, "models.0.train.lr": 0.0012}
    recipe = bench.recipe_config(space, sets, best, 3, "runs/amazon-beauty/sasrec")
    model = recipe["models"][0]
    assert recipe["dataset"]["name"] == "amazon-beauty"
    assert model["item_text"] == "init"
    assert model["train"]["patience"] == 5
    assert (model["dim"], model["train"]["lr"]) == (128, 0.0012)
    assert recipe["tune"]["workers"] == 2 and recipe["seeds"] == 3
    # the search file itself is untouched, and the recipe is a valid experiment
    assert "item_text" not in yaml.safe_load(space.read_text())["models"][0]
    cfg = ExperimentConfig.model_validate(recipe)
    assert cfg.seeds == 3
