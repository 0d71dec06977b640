"""Statistics over per-user metrics: bootstrap intervals, paired tests, Holm correction.

All models of one comparison are evaluated on the same users in the same order, so their
per-user arrays are paired: a bootstrap resample uses the same users for every model, and
the tests are paired tests.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats as sps

__all__ = ["ConfidenceInterval", "bootstrap_means", "bootstrap_ci", "holm", "paired_tests",
           "pairwise_significance", "t_interval"]

_log = logging.getLogger(__name__)

_BOOT_BUDGET = 1 << 22
"""Resampled values per chunk (keeps the index block near 32 MB)."""


@dataclass(frozen=True)
class ConfidenceInterval:
    """A mean with a percentile-bootstrap interval.

    Attributes:
        mean: Mean of the observed values.
        low: Lower bound.
        high: Upper bound.
        n: Number of values.
    """

    mean: float
    low: float
    high: float
    n: int


def bootstrap_means(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of the rows of ``values``.

    Args:
        values: Shape ``(n,)`` or ``(n, m)``; with ``m`` columns (e.g. several models or
            metrics of the same users) every resample uses the same rows for all columns.
        n_boot: Number of resamples.
        seed: Random seed.

    Returns:
        Shape ``(n_boot,)`` or ``(n_boot, m)``.
    """
    x = np.asarray(values, dtype=np.float64)
    squeeze = x.ndim == 1
    x = x.reshape(len(x), -1)
    n = len(x)
    out = np.zeros((n_boot, x.shape[1]))
    if n == 0:
        return out[:, 0] if squeeze else out
    rng = np.random.default_rng(seed)
    step = max(1, _BOOT_BUDGET // n)
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))                               # (b, n)
        # How often each user is drawn, then one matrix product for every column: much
        # faster than gathering a (b, n, m) block.
        idx += np.arange(b)[:, None] * n
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)    # (b, n)
        out[lo:lo + b] = counts @ x / n                                     # (b, m)
    return out[:, 0] if squeeze else out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap interval of the mean.

    Args:
        values: Per-user values, shape ``(n,)``.
        n_boot: Number of resamples.
        alpha: ``1 - confidence level``.
        seed: Random seed.

    Returns:
        The mean and its ``1 - alpha`` interval (NaN bounds for an empty input).
    """
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return ConfidenceInterval(float("nan"), float("nan"), float("nan"), 0)
    boots = bootstrap_means(x, n_boot, seed)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(float(x.mean()), float(lo), float(hi), len(x))


def t_interval(values: np.ndarray | list[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of a few values (seeds, folds); the mean itself twice
    for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean
    half = float(sps.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean - half, mean + half


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Args:
        pvalues: Raw p-values of one family of tests; NaN entries stay NaN and do not count.

    Returns:
        Adjusted p-values in the input order.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test of ``a`` against ``b``.

    Args:
        a: Per-user values of model A.
        b: Per-user values of model B, same users in the same order.

    Returns:
        ``{"t", "t_p", "w", "w_p"}``. Identical inputs give p = 1 (no evidence of a
        difference) rather than the NaN scipy returns. A constant nonzero difference (zero
        variance) leaves the t-test undefined: ``t`` and ``t_p`` are NaN, which counts as
        not significant (scipy would say p = 0); the Wilcoxon test still applies.

    Raises:
        ValueError: If the arrays differ in length.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    if len(d) < 2 or not np.any(d):
        return {"t": 0.0, "t_p": 1.0, "w": 0.0, "w_p": 1.0}
    if np.ptp(d) <= 1e-12 * np.abs(d).max():  # constant difference: no variance to test
        t, t_p = float("nan"), float("nan")
    else:
        res = sps.ttest_rel(a, b)
        t, t_p = float(res.statistic), float(res.pvalue)
    w_res = sps.wilcoxon(a, b, zero_method="wilcox")
    return {"t": t, "t_p": t_p, "w": float(w_res.statistic), "w_p": float(w_res.pvalue)}


def pairwise_significance(per_model: dict[str, dict[str, np.ndarray]], metrics: list[str], *,
                          alpha: float = 0.05) -> pl.DataFrame:
    """Paired tests between every pair of models, Holm-corrected within each metric.

    Args:
        per_model: ``model -> metric -> per-user values`` (same users for every model).
        metrics: Metrics to test.
        alpha: Significance level of the corrected p-values.

    Returns:
        One row per (metric, model pair): means, difference, raw and Holm-adjusted p-values
        of both tests, and ``significant`` (Wilcoxon, Holm-adjusted ``< alpha``) and
        ``significant_t`` (t-test, Holm-adjusted ``< alpha``; False where the t-test is
        undefined and its p-values are NaN).
    """
    rows = []
    models = list(per_model)
    for metric in metrics:
        have = [m for m in models if metric in per_model[m]]
        block = []
        for a, b in itertools.combinations(have, 2):
            va, vb = per_model[a][metric], per_model[b][metric]
            r = paired_tests(va, vb)
            block.append({"metric": metric, "model_a": a, "model_b": b,
                          "mean_a": float(np.mean(va)), "mean_b": float(np.mean(vb)),
                          "diff": float(np.mean(va) - np.mean(vb)), **r})
        if not block:
            continue
        t_adj = holm([r["t_p"] for r in block])
        w_adj = holm([r["w_p"] for r in block])
        for r, ta, wa in zip(block, t_adj, w_adj, strict=True):
            r.update(t_p_holm=float(ta), w_p_holm=float(wa), significant=bool(wa < alpha),
                     significant_t=bool(ta < alpha))
        rows.extend(block)
    schema = {"metric": pl.String, "model_a": pl.String, "model_b": pl.String,
              "mean_a": pl.Float64, "mean_b": pl.Float64, "diff": pl.Float64, "t": pl.Float64,
              "t_p": pl.Float64, "w": pl.Float64, "w_p": pl.Float64, "t_p_holm": pl.Float64,
              "w_p_holm": pl.Float64, "significant": pl.Boolean, "significant_t": pl.Boolean}
    return pl.DataFrame(rows, schema=schema)
