"""benchmarks/ranker.py refuses overrides of models it never fits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from genrec.config import load_config

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ranker_bench", _ROOT / "benchmarks" / "ranker.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _kinds(name: str) -> list[str]:
    return [m.kind for m in load_config(_ROOT / "configs" / name).models]


@pytest.mark.parametrize("name", sorted(set(bench.CONFIGS.values())))
def test_shipped_configs_have_a_two_stage_model(name: str) -> None:
    kinds = _kinds(name)
    assert kinds[bench.two_stage_index(kinds, [])] == "two_stage"


def test_overrides_of_the_two_stage_model_pass() -> None:
    kinds = _kinds("ranker-ml100k.yaml")
    assert kinds == ["two_stage", "sasrec"]
    sets = ["models.0.ranker.tower=dselect_k", "models.0.retriever.dim=32",
            "protocol.seed=7", "seeds=1"]
    assert bench.two_stage_index(kinds, sets) == 0


def test_an_override_of_another_model_is_refused_with_the_reason() -> None:
    with pytest.raises(SystemExit, match=r"runs only models\.0 .*models\.1\.dim=32"):
        bench.two_stage_index(["two_stage", "sasrec"], ["models.1.dim=32"])
    # the two_stage model need not be first
    assert bench.two_stage_index(["sasrec", "two_stage"], ["models.1.candidates=50"]) == 1
    with pytest.raises(SystemExit, match="runs only models.1"):
        bench.two_stage_index(["sasrec", "two_stage"], ["models.0.dim=32"])


def test_a_config_without_a_two_stage_model_is_refused() -> None:
    with pytest.raises(SystemExit, match="no two_stage model"):
        bench.two_stage_index(["sasrec", "ease"], [])
