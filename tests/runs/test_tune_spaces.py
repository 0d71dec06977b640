"""Every search space kept in configs/ validates, fits its model, and covers the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.models.registry import MODELS
from genrec.runs.tuning import _check_space

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPACES = sorted((CONFIGS / "tune").glob("*.yaml"))
TUNED = sorted(CONFIGS.glob("tune-*.yaml")) + SPACES + sorted(
    p for p in CONFIGS.rglob("*.yaml")
    if p.parent not in (CONFIGS, CONFIGS / "tune") and "tune:" in p.read_text())
"""Search configs: configs/tune/<model>.yaml, configs/tune-*.yaml, and the recipes that keep
the search they came from (a ``tune:`` section), e.g. configs/amazon-beauty/tuned/*.yaml."""

UNTUNED = {"pop": "no setting to tune",
           "two_stage": "a retriever (tuned with its own space) plus a ranker, whose space is "
                        "open"}
"""Model kinds without a search space in configs/tune/, and why. A new model kind gets a
space there (or a line here)."""


@pytest.mark.parametrize("path", TUNED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_search_config_validates_and_fits_its_model(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.tune is not None and len(cfg.models) == 1
    # Both ends of every range and every choice are values the model accepts.
    _check_space(cfg.model_dump(mode="json", exclude={"tune"}), cfg.tune)


def test_every_model_kind_has_a_search_space() -> None:
    kinds = {load_config(p).models[0].kind: p.stem for p in SPACES}
    assert all(stem == kind for kind, stem in kinds.items())
    missing = set(MODELS) - set(UNTUNED) - set(kinds)
    assert not missing, f"no configs/tune/<kind>.yaml for {sorted(missing)}"
