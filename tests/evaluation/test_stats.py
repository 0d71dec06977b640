"""Bootstrap intervals, paired tests and Holm correction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from genrec.evaluation.stats import (
    bootstrap_ci,
    bootstrap_means,
    holm,
    paired_tests,
    pairwise_significance,
)


def test_holm_hand_case() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 -> 4*0.01, 3*0.02, 2*0.03, 1*0.04 made monotone
    np.testing.assert_allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.01, 0.9]), [0.02, 0.9])
    out = holm([np.nan, 0.01, 0.2])
    assert np.isnan(out[0]) and out[1:].tolist() == pytest.approx([0.02, 0.2])
    assert holm([]).size == 0


def test_bootstrap_interval_contains_mean_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 100)
    big = rng.normal(1.0, 1.0, 10_000)
    ci_s, ci_b = bootstrap_ci(small, 500, seed=1), bootstrap_ci(big, 500, seed=1)
    assert ci_s.low < ci_s.mean < ci_s.high and ci_b.low < ci_b.mean < ci_b.high
    assert ci_b.high - ci_b.low < (ci_s.high - ci_s.low) / 5
    # The percentile interval is close to the normal one: mean +- 1.96 sd / sqrt(n).
    half = 1.96 * big.std() / np.sqrt(len(big))
    assert ci_b.high - ci_b.low == pytest.approx(2 * half, rel=0.15)
    assert bootstrap_ci(big, 500, seed=1) == ci_b  # seeded
    assert np.isnan(bootstrap_ci(np.array([])).mean)


def test_bootstrap_means_share_resamples_across_columns() -> None:
    x = np.arange(50, dtype=float)
    boots = bootstrap_means(np.column_stack([x, 2 * x]), 64, seed=3)
    assert boots.shape == (64, 2)
    np.testing.assert_allclose(boots[:, 1], 2 * boots[:, 0])  # same users in every resample
    np.testing.assert_allclose(bootstrap_means(x, 64, seed=3), boots[:, 0])


def test_paired_tests_match_scipy_and_handle_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a - 0.05 + rng.normal(0, 0.1, 200)
    r = paired_tests(a, b)
    assert r["t_p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r["w_p"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert r["t_p"] < 0.01 and r["w_p"] < 0.01
    same = paired_tests(a, a)
    assert same["t_p"] == 1.0 and same["w_p"] == 1.0
    shifted = paired_tests(a + 1, a)  # zero variance: the t-test is undefined, not p = 0
    assert np.isnan(shifted["t"]) and np.isnan(shifted["t_p"]) and shifted["w_p"] < 1e-10
    with pytest.raises(ValueError):
        paired_tests(a, a[:-1])


def test_pairwise_significance_marks_real_differences_only() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(300)
    per_model = {"a": {"m": base + 0.2}, "b": {"m": base + rng.normal(0, 0.01, 300)},
                 "c": {"m": base.copy()}}
    table = pairwise_significance(per_model, ["m", "missing"])
    assert table.height == 3
    sig = {(r["model_a"], r["model_b"]): r["significant"] for r in table.iter_rows(named=True)}
    assert sig[("a", "b")] and sig[("a", "c")] and not sig[("b", "c")]
    assert (table["w_p_holm"] >= table["w_p"]).all()


def test_constant_difference_is_not_significant_by_t_test() -> None:
    base = np.random.default_rng(2).random(50)
    for d in (0.1, -0.1):
        r = paired_tests(base + d, base)
        assert np.isnan(r["t_p"]) and r["w_p"] < 1e-5
    assert paired_tests(base, base)["t_p"] == 1.0            # all differences zero
    assert paired_tests(base[:1] + 1, base[:1])["t_p"] == 1.0  # one user: nothing to test
    noisy = base + np.random.default_rng(3).normal(0, 0.3, 50)
    table = pairwise_significance({"up": {"m": base + 0.1}, "base": {"m": base},
                                   "noisy": {"m": noisy}}, ["m"])
    row = table.filter((table["model_a"] == "up") & (table["model_b"] == "base")).row(
        0, named=True)
    assert np.isnan(row["t_p"]) and np.isnan(row["t_p_holm"]) and not row["significant_t"]
    assert row["significant"]                                 # Wilcoxon: every user gains
