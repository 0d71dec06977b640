"""Fairness: metrics per user group with gaps and intervals, and item-side exposure.

User side: evaluated users are grouped by activity (tertiles of history length) and, where
the dataset has them, by gender and age. Each group gets the mean of every per-user metric
with a bootstrap interval; the gap is the best group's mean minus the worst group's, among
groups of at least :data:`MIN_GROUP_USERS` users other than ``"unknown"``.

Item side: how recommendation exposure is shared between head and tail items, and how far it
departs from the items' training popularity.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from genrec.evaluation.beyond import exposure_counts, gini, tail_items
from genrec.evaluation.stats import bootstrap_means

__all__ = ["activity_groups", "age_groups", "user_groups", "group_summary", "group_metrics",
           "group_gaps",
           "exposure_fairness", "item_exposure_disparity", "AGE_BINS", "MIN_GROUP_USERS",
           "UNKNOWN_GROUP"]

_log = logging.getLogger(__name__)

AGE_BINS: tuple[tuple[str, float], ...] = (("under 25", 25), ("25-34", 35), ("35-44", 45),
                                          ("45+", float("inf")))
"""Age groups as (label, exclusive upper bound). ML-1M's age codes (1, 18, 25, ...) fall into
the same bins as ML-100K's ages."""


MIN_GROUP_USERS = 20
"""Fewest users a group needs to be the best or worst group of a gap. A smaller group's mean
(and its bootstrap interval, zero-wide for one user) is too noisy to call a gap significant;
such groups are still reported with their size, but left out of the gap."""

UNKNOWN_GROUP = "unknown"
"""Label of users whose feature is missing; shown, but never the best or worst group."""


def activity_groups(history_lengths: np.ndarray, n_groups: int = 3) -> np.ndarray:
    """Label users by quantile of history length (tertiles by default).

    Cut points are quantiles of the lengths, so users with the same length share a group
    (groups may differ in size when many users tie).

    Args:
        history_lengths: Number of history items per user, shape ``(U,)``.
        n_groups: Number of groups (3: low / medium / high).

    Returns:
        String labels, shape ``(U,)``, e.g. ``"low (<=24)"``; the label carries the range.
    """
    x = np.asarray(history_lengths)
    if len(x) == 0:
        return np.array([], dtype=object)
    names = {2: ["low", "high"], 3: ["low", "medium", "high"]}.get(
        n_groups, [f"q{i + 1}" for i in range(n_groups)])
    edges = np.quantile(x, np.arange(1, n_groups) / n_groups)
    g = np.searchsorted(edges, x, side="left")                             # x <= edge -> lower
    labels = np.empty(len(x), dtype=object)
    for j in np.unique(g):
        members = x[g == j]
        labels[g == j] = f"{names[j]} ({members.min()}-{members.max()})"
    return labels


def age_groups(ages: np.ndarray) -> np.ndarray:
    """Label ages with :data:`AGE_BINS`; missing (negative or NaN) ages are ``"unknown"``."""
    a = np.asarray(ages, dtype=np.float64)
    uppers = np.array([u for _, u in AGE_BINS])
    idx = np.searchsorted(uppers, a, side="right")
    names = np.array([n for n, _ in AGE_BINS] + [UNKNOWN_GROUP], dtype=object)
    idx = np.where(np.isnan(a) | (a < 0), len(AGE_BINS), np.minimum(idx, len(AGE_BINS) - 1))
    return names[idx]


def user_groups(users: np.ndarray, history_lengths: np.ndarray,
                user_features: pl.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Every grouping available for the evaluated users.

    Args:
        users: Dense ids of the evaluated users, shape ``(U,)``.
        history_lengths: Their history lengths, shape ``(U,)``.
        user_features: The dataset's user table (dense ``user`` column), if any.

    Returns:
        ``"activity"`` always; ``"gender"`` and ``"age"`` when the table has those columns.
    """
    out = {"activity": activity_groups(history_lengths)}
    if user_features is None or user_features.is_empty() or "user" not in user_features.columns:
        return out
    table = pl.DataFrame({"user": np.asarray(users, dtype=np.int64)}).join(
        user_features, on="user", how="left", maintain_order="left")
    if "gender" in table.columns:
        out["gender"] = table["gender"].cast(pl.String).fill_null(UNKNOWN_GROUP).to_numpy().astype(
            object)
    if "age" in table.columns and table["age"].dtype.is_numeric():
        out["age"] = age_groups(table["age"].cast(pl.Float64).fill_null(-1.0).to_numpy())
    return out


_METRICS_SCHEMA = {"metric": pl.String, "group": pl.String, "n": pl.Int64, "mean": pl.Float64,
                   "low": pl.Float64, "high": pl.Float64}
_GAPS_SCHEMA = {"metric": pl.String, "best": pl.String, "worst": pl.String, "gap": pl.Float64,
                "relative_gap": pl.Float64, "low": pl.Float64, "high": pl.Float64,
                "significant": pl.Boolean}


def group_summary(per_user: dict[str, np.ndarray], labels: np.ndarray, *, n_boot: int = 1000,
                  alpha: float = 0.05, seed: int = 0, min_group_size: int = MIN_GROUP_USERS
                  ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-group means with intervals, and best-minus-worst gaps, from one bootstrap.

    Each group is resampled on its own (a stratified bootstrap). The best and worst groups
    of a metric are fixed from the observed means, and the gap's interval is that of the
    difference of their resampled means. Only groups of at least ``min_group_size`` users,
    other than :data:`UNKNOWN_GROUP`, can be best or worst.

    Args:
        per_user: ``metric -> per-user values`` (aligned with ``labels``).
        labels: Group label per user.
        n_boot: Bootstrap resamples.
        alpha: ``1 - confidence level``.
        seed: Random seed.
        min_group_size: Fewest users of a group that takes part in the gap.

    Returns:
        ``(groups, gaps)``: rows ``(metric, group, n, mean, low, high)`` for every group in
        natural order, and rows ``(metric, best, worst, gap, relative_gap, low, high,
        significant)`` with ``relative_gap = gap / best mean`` and ``significant`` when the
        interval excludes 0 (no rows with fewer than two eligible groups, none without
        metrics).
    """
    labels = np.asarray(labels, dtype=object)
    groups = sorted(set(labels.tolist()), key=_group_order)
    names = list(per_user)
    if not names:
        return pl.DataFrame(schema=_METRICS_SCHEMA), pl.DataFrame(schema=_GAPS_SCHEMA)
    values = np.column_stack([np.asarray(per_user[m], dtype=np.float64) for m in names])
    rows, means, boots = [], [], []
    for gi, g in enumerate(groups):
        mask = labels == g
        block = values[mask]                                                # (n_g, M)
        boot = bootstrap_means(block, n_boot, seed + gi)                    # (n_boot, M)
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
        means.append(block.mean(0))
        boots.append(boot)
        rows += [{"metric": m, "group": str(g), "n": int(mask.sum()), "mean": float(means[-1][j]),
                  "low": float(lo[j]), "high": float(hi[j])} for j, m in enumerate(names)]
    gap_rows = []
    eligible = [gi for gi, g in enumerate(groups) if str(g) != UNKNOWN_GROUP
                and int((labels == g).sum()) >= min_group_size]
    if len(eligible) >= 2:
        mean_arr = np.array(means)                                         # (G, M)
        for j, m in enumerate(names):
            col = mean_arr[eligible, j]
            best, worst = eligible[int(col.argmax())], eligible[int(col.argmin())]
            lo, hi = np.quantile(boots[best][:, j] - boots[worst][:, j],
                                 [alpha / 2, 1 - alpha / 2])
            gap = float(mean_arr[best, j] - mean_arr[worst, j])
            rel = gap / mean_arr[best, j] if mean_arr[best, j] else 0.0
            gap_rows.append({"metric": m, "best": str(groups[best]),
                             "worst": str(groups[worst]), "gap": gap,
                             "relative_gap": float(rel), "low": float(lo), "high": float(hi),
                             "significant": bool(lo > 0 or hi < 0)})
    return (pl.DataFrame(rows, schema=_METRICS_SCHEMA),
            pl.DataFrame(gap_rows, schema=_GAPS_SCHEMA))


def group_metrics(per_user: dict[str, np.ndarray], labels: np.ndarray, *, n_boot: int = 1000,
                  alpha: float = 0.05, seed: int = 0) -> pl.DataFrame:
    """Mean and bootstrap interval of every metric within every group.

    Args:
        per_user: ``metric -> per-user values`` (aligned with ``labels``).
        labels: Group label per user.
        n_boot: Bootstrap resamples.
        alpha: ``1 - confidence level``.
        seed: Random seed.

    Returns:
        Rows ``(metric, group, n, mean, low, high)`` (see :func:`group_summary`).
    """
    return group_summary(per_user, labels, n_boot=n_boot, alpha=alpha, seed=seed)[0]


def group_gaps(per_user: dict[str, np.ndarray], labels: np.ndarray, *, n_boot: int = 1000,
               alpha: float = 0.05, seed: int = 0) -> pl.DataFrame:
    """Gap between the best and the worst group of every metric, with a bootstrap interval.

    Args:
        per_user: ``metric -> per-user values``.
        labels: Group label per user.
        n_boot: Bootstrap resamples.
        alpha: ``1 - confidence level``.
        seed: Random seed.

    Returns:
        Rows ``(metric, best, worst, gap, relative_gap, low, high, significant)`` (see
        :func:`group_summary`).
    """
    return group_summary(per_user, labels, n_boot=n_boot, alpha=alpha, seed=seed)[1]


def _group_order(label: object) -> tuple[int, str]:
    """Natural order: activity low < medium < high, ages ascending, unknown last."""
    s = str(label)
    for i, prefix in enumerate(("low", "medium", "high", "under", "25-", "35-", "45")):
        if s.startswith(prefix):
            return (i, s)
    return (100 if s == "unknown" else 50, s)


def exposure_fairness(top_items: np.ndarray, item_counts: np.ndarray, k: int, *,
                      head_ratio: float = 0.2, weighting: str = "uniform") -> dict[str, float]:
    """Item-side exposure summary.

    Head items are the top ``head_ratio`` of the catalogue by training popularity, as in
    :func:`genrec.evaluation.beyond.long_tail_share`.

    Args:
        top_items: Ranked lists, shape ``(U, K')``, ``-1`` padded.
        item_counts: Training interactions per item.
        k: Cutoff.
        head_ratio: Share of the catalogue that is head.
        weighting: Exposure model, see :func:`genrec.evaluation.beyond.exposure_counts`.

    Returns:
        ``head_exposure_share`` (head's share of all exposure), ``head_train_share`` (head's
        share of training interactions), ``head_tail_ratio`` (mean exposure of a head item
        over that of a tail item; ``inf`` when tail items get none), ``exposure_gini``,
        ``disparity`` (total-variation distance between the exposure and training-popularity
        distributions: 0 when exposure mirrors popularity) and ``zero_exposure_share``
        (share of items never recommended).
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    exposure = exposure_counts(top_items, len(counts), k, weighting=weighting)
    tail = tail_items(counts, 1.0 - head_ratio, include_unseen=True)
    head = ~tail
    total = exposure.sum()
    head_exp = exposure[head].sum()
    mean_head = head_exp / max(head.sum(), 1)
    mean_tail = exposure[tail].sum() / max(tail.sum(), 1)
    return {
        "head_exposure_share": float(head_exp / total) if total else 0.0,
        "head_train_share": float(counts[head].sum() / counts.sum()) if counts.sum() else 0.0,
        "head_tail_ratio": float(mean_head / mean_tail) if mean_tail else float("inf"),
        "exposure_gini": gini(exposure),
        "disparity": float(item_exposure_disparity(exposure, counts)["tv_distance"]),
        "zero_exposure_share": float(np.mean(exposure == 0)),
    }


def item_exposure_disparity(exposure: np.ndarray, item_counts: np.ndarray
                            ) -> dict[str, np.ndarray | float]:
    """Per-item gap between exposure share and training-popularity share.

    Args:
        exposure: Exposure per item (see :func:`genrec.evaluation.beyond.exposure_counts`).
        item_counts: Training interactions per item.

    Returns:
        ``exposure_share`` and ``popularity_share`` per item, ``difference`` (exposure share
        minus popularity share: positive = over-exposed), ``lift`` (exposure share over
        popularity share; NaN for items without training interactions) and ``tv_distance``
        (half the L1 distance between the two shares, in ``[0, 1]``).
    """
    e = np.asarray(exposure, dtype=np.float64)
    c = np.asarray(item_counts, dtype=np.float64)
    e_share = e / e.sum() if e.sum() else np.zeros_like(e)
    c_share = c / c.sum() if c.sum() else np.zeros_like(c)
    lift = np.divide(e_share, c_share, out=np.full(len(e), np.nan), where=c_share > 0)
    diff = e_share - c_share
    return {"exposure_share": e_share, "popularity_share": c_share, "difference": diff,
            "lift": lift, "tv_distance": float(0.5 * np.abs(diff).sum())}
