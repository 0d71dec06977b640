"""``benchmarks/tiger_next.py``: runs of one variant on disjoint seeds (``--part``) merge
into the document one run over all the seeds would have written, and the cold study is
summarised without a TIGER run beside it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "tiger_next.py"
_spec = importlib.util.spec_from_file_location("tiger_next_bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def _seed_doc(seed: int, rng: np.random.Generator, n_users: int = 7) -> tuple[dict, dict]:
    """A one-seed cold document and its per-user arrays."""
    users = {m: rng.random(n_users).round(6) for m in METRICS}
    beam50 = {m: rng.random(n_users).round(6) for m in METRICS}
    cold = {"1:0.1": {m: rng.random(n_users).round(6) for m in ("recall@10", "ndcg@10")}}
    split = {"users": {"cold": 2, "warm": 5}, "mixed_users": 0,
             "cold": {"recall@10": float(rng.random()), "ndcg@10": 0.1, "recall@20": 0.2},
             "warm": {"recall@10": float(rng.random()), "ndcg@10": 0.1, "recall@20": 0.2}}
    test = {m: float(users[m].mean()) for m in METRICS}
    extra = {"seed": seed, "beam50": {m: float(beam50[m].mean()) for m in METRICS},
             "cold_valid_off": split,
             "beam20_invalid_items": 0, "beam50_invalid_items": 0,
             "cold_start": {"off": split,
                            "1:0.1": {"valid": {"recall@10": float(rng.random())},
                                      "test": test, "split": split, "valid_split": split,
                                      "non_catalogue_items_top10": 0,
                                      "cold_items_in_top10": seed}}}
    doc = {"variant": "cold", "dataset": {"name": "x", "users": n_users, "items": 9,
                                          "cold_items": 3},
           "row": {"seeds": [seed], "per_seed": [{"seed": seed, "test": test}]},
           "per_seed_extra": [extra],
           "per_user_mean": {m: v.tolist() for m, v in users.items()},
           "per_user_mean_beam50": {m: v.tolist() for m, v in beam50.items()},
           "per_user_mean_cold": {w: {m: v.tolist() for m, v in d.items()}
                                  for w, d in cold.items()},
           "benchmark": {"command": f"seed {seed}", "environment": {"threads": 1}}}
    return doc, {"users": users, "cold": cold}


def test_parts_merge_to_the_seed_weighted_document() -> None:
    rng = np.random.default_rng(0)
    docs, arrays = zip(*(_seed_doc(s, rng) for s in (42, 43, 44)), strict=True)
    # Two parts: seed 42 alone, seeds 43 and 44 already merged into one document.
    two = bench._merge_parts([docs[1], docs[2]])
    merged = bench._merge_parts([docs[0], two])
    assert merged["row"]["seeds"] == [42, 43, 44]
    assert [e["seed"] for e in merged["per_seed_extra"]] == [42, 43, 44]
    for m in METRICS:
        expect = np.mean([a["users"][m] for a in arrays], axis=0)
        np.testing.assert_allclose(merged["per_user_mean"][m], expect, atol=2e-6)
    expect = np.mean([a["cold"]["1:0.1"]["recall@10"] for a in arrays], axis=0)
    np.testing.assert_allclose(merged["per_user_mean_cold"]["1:0.1"]["recall@10"], expect,
                               atol=2e-6)
    assert bench._merge_parts([docs[0]]) is docs[0]


def test_cold_parts_summarise_without_a_tiger_run(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "benchmarks" / "results" / "x" / "tag"
    folder.mkdir(parents=True)
    docs = [_seed_doc(s, rng)[0] for s in (42, 43, 44)]
    for d in docs:
        (folder / f"tiger-next-cold.seed{d['row']['seeds'][0]}.json").write_text(json.dumps(d))
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    s = bench.summarize("x", "tag")
    assert s["variants"] == {}
    by = s["cold"]["by_weight"]
    assert set(by) == {"off", "1:0.1"}
    assert by["1:0.1"]["cold_items_in_top10"] == 42 + 43 + 44
    assert by["off"]["cold_recall@10"] == pytest.approx(
        np.mean([d["per_seed_extra"][0]["cold_start"]["off"]["cold"]["recall@10"]
                 for d in docs]), abs=1e-6)
    assert "cold fusion, prefix 1, weight 0.1" in bench.markdown(s)
    # the same split on validation for both: fusion keeps warm (0% lost) and adds no cold
    # recall over no fusion, so the constrained choice is no fusion
    assert s["cold"]["chosen_on_valid_cold_warm"]["setting"] == "off"
    assert "within 5% of no fusion: off" in bench.markdown(s)
    with pytest.raises(SystemExit, match="run --variants tiger first"):
        bench.summarize("x", "empty-tag")


def _split(warm: float, cold: float) -> dict:
    return {"users": {"cold": 2, "warm": 5}, "mixed_users": 0,
            "cold": {"recall@10": cold}, "warm": {"recall@10": warm}}


def test_cold_setting_is_chosen_on_validation_under_the_warm_tolerance() -> None:
    """The cold setting chosen as the issue states its target, on validation: the most cold
    Recall@10 among settings that keep warm Recall@10 within 5% of no fusion (seed means)."""
    def seed(off, settings):
        return {"cold_valid_off": _split(*off),
                "cold_start": {"off": {}, **{k: {"valid_split": _split(*v)}
                                             for k, v in settings.items()}}}

    # (warm, cold) per setting on two seeds: "1:0.3" has the most cold recall but loses
    # 20% warm; "2:0.1" keeps warm within 5% (mean 0.096 >= 0.095) and beats "1:0.1".
    ext = [seed((0.10, 0.00), {"1:0.1": (0.099, 0.01), "2:0.1": (0.097, 0.02),
                               "1:0.3": (0.080, 0.09)}),
           seed((0.10, 0.00), {"1:0.1": (0.099, 0.01), "2:0.1": (0.095, 0.04),
                               "1:0.3": (0.080, 0.07)})]
    got = bench.choose_cold_setting(ext)
    assert got["setting"] == "2:0.1" and got["warm_tolerance"] == 0.05
    assert got["valid"]["1:0.3"]["warm_within_tolerance"] is False
    assert got["valid"]["2:0.1"]["cold_recall@10"] == pytest.approx(0.03)
    # A looser tolerance admits the warm-costly setting; a tighter one keeps only "1:0.1".
    assert bench.choose_cold_setting(ext, tolerance=0.25)["setting"] == "1:0.3"
    assert bench.choose_cold_setting(ext, tolerance=0.02)["setting"] == "1:0.1"
    # No setting adds cold recall within the tolerance: no fusion.
    assert bench.choose_cold_setting(ext, tolerance=0.0)["setting"] == "off"
    # Documents written before the validation split was recorded: no choice, not a guess.
    assert bench.choose_cold_setting([{"cold_start": {"off": {}}}]) is None
