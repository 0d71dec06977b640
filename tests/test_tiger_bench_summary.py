"""``benchmarks/tiger.py --summarize --paired-with``: the paired t-test runs over the seeds the
two summaries share, matched by seed rather than by position."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from scipy import stats

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "tiger.py"
_spec = importlib.util.spec_from_file_location("tiger_bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _summary(model: str, seeds: list[int], values: list[float]) -> dict:
    test = {m: {"values": values} for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
    return {"model": model, "runs": [{"seed": s} for s in seeds], "test": test}


def test_paired_over_shared_seeds_matched_by_seed() -> None:
    doc = _summary("mtgrec", [42, 43, 44], [0.050, 0.052, 0.047])
    other = _summary("tiger", [44, 42, 43, 45], [0.049, 0.051, 0.050, 0.9])  # other order
    out = bench.paired_over_seeds(doc, other)
    assert out["seeds"] == [42, 43, 44] and out["model"] == "tiger"
    r = out["metrics"]["recall@10"]
    a, b = [0.050, 0.052, 0.047], [0.051, 0.050, 0.049]
    assert r["diff"] == pytest.approx(sum(a) / 3 - sum(b) / 3, abs=1e-6)
    assert r["p_paired_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=1e-4)


def test_paired_needs_two_shared_seeds() -> None:
    with pytest.raises(SystemExit, match="share seeds"):
        bench.paired_over_seeds(_summary("a", [42, 43], [0.1, 0.2]),
                                _summary("b", [43, 44], [0.1, 0.2]))
