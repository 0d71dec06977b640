"""Report figures, rendered with matplotlib's Agg backend to PNG bytes.

Each function takes a :class:`~genrec.evaluation.report.HolisticReport` and returns one PNG;
:func:`make_plots` returns them all by name.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from genrec.evaluation.report import HolisticReport

__all__ = ["make_plots", "metric_curves", "accuracy_vs_popularity", "lorenz_curves",
           "group_bars"]

_log = logging.getLogger(__name__)

_MAX_CURVE_POINTS = 512


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _colors(names: list[str]) -> dict[str, tuple[float, ...]]:
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def metric_curves(rep: HolisticReport) -> bytes:
    """Recall@K and NDCG@K for K = 1..K_max, one line per model."""
    models = list(rep.run.models)
    col = _colors(models)
    fig, axes = plt.subplots(1, len(rep.curves), figsize=(5.5 * len(rep.curves), 3.8))
    for ax, (metric, per_model) in zip(np.atleast_1d(axes), rep.curves.items(), strict=True):
        for model in models:
            y = per_model[model]
            ax.plot(np.arange(1, len(y) + 1), y, marker=".", label=model, color=col[model])
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_title(f"{metric}@K (test)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    return _png(fig)


def accuracy_vs_popularity(rep: HolisticReport) -> bytes:
    """Headline accuracy against popularity bias (average popularity and long-tail share)."""
    k, acc = rep.k, rep.primary
    models = list(rep.run.models)
    col = _colors(models)
    table = pl.concat([rep.accuracy, rep.beyond])
    value = {(r["model"], r["metric"]): r["mean"] for r in table.iter_rows(named=True)}
    panels = [(f"avg_pop@{k}", "average popularity of recommended items"),
              (f"aplt@{k}", "long-tail share (APLT)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for model in models:
            x, y = value.get((model, metric)), value.get((model, acc))
            if x is None or y is None:
                continue
            ax.scatter([x], [y], s=60, color=col[model], zorder=3)
            ax.annotate(model, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
        ax.set_xlabel(f"{label} ({metric})")
        ax.set_ylabel(acc)
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy vs popularity bias")
    axes[1].set_title("accuracy vs long-tail exposure")
    return _png(fig)


def lorenz_curves(rep: HolisticReport) -> bytes:
    """Lorenz curves of item exposure per model, with training popularity for reference."""
    names = list(rep.lorenz)
    col = _colors([n for n in names if n != "train popularity"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="equal exposure")
    for name in names:
        x, y = rep.lorenz[name]
        if len(x) > _MAX_CURVE_POINTS:
            idx = np.unique(np.linspace(0, len(x) - 1, _MAX_CURVE_POINTS).astype(int))
            x, y = x[idx], y[idx]
        if name == "train popularity":
            ax.plot(x, y, color="black", ls="--", lw=1.5, label=name)
        else:
            ax.plot(x, y, color=col[name], lw=1.8, label=name)
    ax.set_xlabel("share of items (least exposed first)")
    ax.set_ylabel(f"share of exposure in top-{rep.k}")
    ax.set_title("exposure Lorenz curves")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def group_bars(rep: HolisticReport) -> bytes | None:
    """Per-group headline metric with bootstrap intervals, one panel per grouping."""
    metric = f"ndcg@{rep.k}"
    panels = [(name, t.filter(pl.col("metric") == metric)) for name, t in rep.groups.items()]
    panels = [(n, t) for n, t in panels if t.height]
    if not panels:
        return None
    models = list(rep.run.models)
    col = _colors(models)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    width = 0.8 / max(1, len(models))
    for ax, (name, t) in zip(axes[0], panels, strict=True):
        groups = t["group"].unique(maintain_order=True).to_list()
        x = np.arange(len(groups))
        for j, model in enumerate(models):
            sub = t.filter(pl.col("model") == model)
            by = {r["group"]: r for r in sub.iter_rows(named=True)}
            mean = np.array([by[g]["mean"] if g in by else np.nan for g in groups])
            lo = np.array([by[g]["low"] if g in by else np.nan for g in groups])
            hi = np.array([by[g]["high"] if g in by else np.nan for g in groups])
            ax.bar(x + (j - (len(models) - 1) / 2) * width, mean, width, color=col[model],
                   label=model, yerr=np.vstack([mean - lo, hi - mean]), capsize=2,
                   error_kw={"lw": 0.8})
        ax.set_xticks(x, [g.replace(" (", "\n(") for g in groups], fontsize=8)
        ax.set_title(f"{metric} by {name}")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    return _png(fig)


def make_plots(rep: HolisticReport) -> dict[str, bytes]:
    """Every figure of the report, by file stem."""
    out = {"metric_curves": metric_curves(rep),
           "accuracy_vs_popularity": accuracy_vs_popularity(rep),
           "exposure_lorenz": lorenz_curves(rep)}
    bars = group_bars(rep)
    if bars is not None:
        out["group_bars"] = bars
    return out
