"""The holistic report of a comparison run: tables, significance, plots, HTML and Markdown.

:func:`analyse` turns a run folder (written by :func:`genrec.runs.compare.run_comparison`)
into tables; :func:`write_report` renders them as a self-contained ``report.html`` (plots
embedded as base64 PNG) and ``report.md`` (plots saved under ``plots/``). A plain ``genrec
run`` folder, without ``holistic/``, gets a report with the results table only; generative
risks (``holistic/risks.json``, see :mod:`genrec.evaluation.generative`) get their own
section whenever the run has them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from genrec._io import atomic_write_bytes, atomic_write_text, read_json
from genrec.evaluation.beyond import (
    catalog_coverage,
    exposure_counts,
    gini_index,
    hit_matrix,
    lorenz_curve,
    personalization,
)
from genrec.evaluation._render import render_html, render_markdown
from genrec.evaluation.compare import HolisticOptions, load_npz, per_user_beyond
from genrec.evaluation.fairness import exposure_fairness, group_summary
from genrec.evaluation.generative import load_risks
from genrec.evaluation.metrics import metric_curve
from genrec.evaluation.plots import make_plots
from genrec.evaluation.stats import bootstrap_means, pairwise_significance

__all__ = ["RunData", "HolisticReport", "load_run", "analyse", "write_report",
           "LOWER_IS_BETTER"]

_log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"avg_pop", "gini", "head_exposure_share", "head_tail_ratio",
                             "exposure_gini", "disparity", "zero_exposure_share"})
"""Metric names (before ``@k``) where a smaller value is better."""

_CURVE_METRICS = ("recall", "ndcg")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` (e.g. ``"avg_pop@10"``) is better."""
    return metric.split("@")[0] in LOWER_IS_BETTER


@dataclass
class RunData:
    """A run folder loaded into memory.

    Attributes:
        path: The folder.
        results: ``results.json``.
        options: Holistic options (defaults when the run has none).
        context: ``holistic/context.npz`` (None for a plain run).
        models: ``model -> {"top_items": ..., "<metric>": per-user values}``.
        risks: ``holistic/risks.json``: ``name -> {"protocol": ..., "rates": {...}}``.
    """

    path: Path
    results: dict[str, Any]
    options: HolisticOptions
    context: dict[str, np.ndarray] | None = None
    models: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    risks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def holistic(self) -> bool:
        """Whether per-user data is available."""
        return self.context is not None and bool(self.models)


def load_run(run_dir: str | Path, options: HolisticOptions | None = None) -> RunData:
    """Read ``results.json`` and, when present, the ``holistic/`` folder.

    Args:
        run_dir: A folder written by ``genrec compare`` (or ``genrec run``).
        options: Overrides the options saved with the run.

    Returns:
        The loaded run.

    Raises:
        FileNotFoundError: If the folder has no ``results.json``.
    """
    path = Path(run_dir)
    if not (path / "results.json").is_file():
        raise FileNotFoundError(f"{path} has no results.json: not a genrec run folder")
    results = read_json(path / "results.json")
    rows = results.get("results")
    if (not isinstance(rows, list) or not all(isinstance(r, dict) and "model" in r for r in rows)
            or not isinstance(results.get("dataset"), dict)):
        raise ValueError(f"{path / 'results.json'}: not a genrec results file (it needs "
                         "'dataset' and a 'results' list of rows with a 'model')")
    hol = path / "holistic"
    saved = {}
    if (hol / "options.json").is_file():
        saved = read_json(hol / "options.json")
    opts = options or HolisticOptions.model_validate(saved)
    run = RunData(path, results, opts, risks=load_risks(path))
    if (hol / "context.npz").is_file():
        run.context = load_npz(hol / "context.npz")
        for r in results["results"]:
            f = hol / f"{r['model']}.npz"
            if f.is_file():
                raw = load_npz(f)
                run.models[r["model"]] = {"top_items": raw["top_items"]} | {
                    k[2:]: v for k, v in raw.items() if k.startswith("m:")}
    return run


@dataclass
class HolisticReport:
    """Everything the report shows.

    Attributes:
        run: The loaded run.
        accuracy: Rows ``(model, metric, mean, low, high)`` of per-user test metrics.
        beyond: Rows ``(model, metric, mean, low, high)``; list-set metrics (coverage, Gini,
            personalisation) have no interval (NaN bounds).
        exposure: One row per model with the item-side exposure summary.
        groups: ``grouping -> rows (model, metric, group, n, mean, low, high)``.
        gaps: ``grouping -> rows (model, metric, best, worst, gap, ..., significant)``.
        significance: Pairwise tests (see :func:`genrec.evaluation.stats.pairwise_significance`).
        marks: ``(model, metric) -> "best" | "worse" | ""``: the best model of each metric,
            and models significantly worse than it (Wilcoxon, Holm-corrected).
        curves: ``metric -> model -> values at K = 1..K_max``.
        lorenz: ``name -> (x, y)`` exposure Lorenz curves (plus ``"train popularity"``).
        seconds: Time spent in :func:`analyse`.
        group_note: Why the user-group tables are missing ("" when they are shown), e.g. no
            per-user ``ndcg@K`` / ``recall@K`` at a K that is not a protocol cutoff.
    """

    run: RunData
    accuracy: pl.DataFrame
    beyond: pl.DataFrame
    exposure: pl.DataFrame
    groups: dict[str, pl.DataFrame]
    gaps: dict[str, pl.DataFrame]
    significance: pl.DataFrame
    marks: dict[tuple[str, str], str]
    curves: dict[str, dict[str, np.ndarray]]
    lorenz: dict[str, tuple[np.ndarray, np.ndarray]]
    seconds: float = 0.0
    group_note: str = ""

    @property
    def k(self) -> int:
        """Cutoff of the beyond-accuracy metrics."""
        return self.run.options.k

    @property
    def primary(self) -> str:
        """The headline accuracy metric: the protocol's valid metric if present."""
        vm = self.run.results["protocol"].get("valid_metric", f"ndcg@{self.k}")
        have = set(self.accuracy["metric"].to_list()) if self.accuracy.height else set()
        return vm if vm in have else f"ndcg@{self.k}"


def _ci_rows(model: str, per_user: dict[str, np.ndarray], names: list[str], opts:
             HolisticOptions) -> list[dict[str, Any]]:
    """Mean and bootstrap interval of several metrics of one model (shared resamples)."""
    if not names:
        return []
    block = np.column_stack([per_user[m] for m in names]).astype(np.float64)   # (U, M)
    boots = bootstrap_means(block, opts.n_boot, opts.seed)                      # (B, M)
    lo, hi = np.quantile(boots, [opts.alpha / 2, 1 - opts.alpha / 2], axis=0)
    means = block.mean(0) if len(block) else np.zeros(len(names))
    return [{"model": model, "metric": m, "mean": float(means[j]), "low": float(lo[j]),
             "high": float(hi[j])} for j, m in enumerate(names)]


_ROWS_SCHEMA = {"model": pl.String, "metric": pl.String, "mean": pl.Float64, "low": pl.Float64,
                "high": pl.Float64}


def _marks(table: pl.DataFrame, sig: pl.DataFrame) -> dict[tuple[str, str], str]:
    marks: dict[tuple[str, str], str] = {}
    for metric in table["metric"].unique(maintain_order=True).to_list():
        sub = table.filter(pl.col("metric") == metric)
        if sub.height < 2:
            continue
        order = sub.sort("mean", descending=not lower_is_better(metric))
        best = order["model"][0]
        marks[(best, metric)] = "best"
        rows = sig.filter(pl.col("metric") == metric)
        for other in order["model"][1:].to_list():
            hit = rows.filter(((pl.col("model_a") == best) & (pl.col("model_b") == other))
                              | ((pl.col("model_a") == other) & (pl.col("model_b") == best)))
            marks[(other, metric)] = "worse" if hit.height and hit["significant"][0] else ""
    return marks


def analyse(run: RunData) -> HolisticReport:
    """Compute every table of the report from a loaded run.

    Args:
        run: A run with per-user data (see :func:`load_run`).

    Returns:
        The report content.

    Raises:
        ValueError: If the run has no per-user data.
    """
    if not run.holistic:
        raise ValueError(f"{run.path} has no holistic/ data: run `genrec compare` to make it")
    start = time.perf_counter()
    opts, ctx, k = run.options, run.context, run.options.k
    assert ctx is not None
    list_len = min(d["top_items"].shape[1] for d in run.models.values())
    if k > list_len:
        raise ValueError(f"k={k} exceeds the saved top-{list_len} lists")
    counts = ctx["item_counts"]
    n_items = len(counts)
    acc_names = [f"{m}@{c}" for m in run.results["protocol"]["metrics"]
                 for c in run.results["protocol"]["cutoffs"]]
    acc_rows, beyond_rows, exp_rows = [], [], []
    lorenz: dict[str, tuple[np.ndarray, np.ndarray]] = {"train popularity": lorenz_curve(counts)}
    curves: dict[str, dict[str, np.ndarray]] = {m: {} for m in _CURVE_METRICS}
    kmax = max(run.results["protocol"]["cutoffs"])
    n_rel = torch.from_numpy(np.diff(ctx["target_indptr"]))
    categories = None
    if "cat_indptr" in ctx:
        categories = sp.csr_matrix((np.ones(len(ctx["cat_indices"]), dtype=np.float32),
                                    ctx["cat_indices"], ctx["cat_indptr"]),
                                   shape=tuple(ctx["cat_shape"]))
    per_user: dict[str, dict[str, np.ndarray]] = {}
    for model, saved in run.models.items():
        top = saved["top_items"]
        data = {n: v for n, v in saved.items() if n != "top_items"}
        data.update(per_user_beyond(
            top, k=k, item_counts=counts, n_users=int(ctx["n_train_users"]),
            head_ratio=opts.head_ratio, target_indptr=ctx["target_indptr"],
            target_items=ctx["target_items"], baseline_top=ctx["baseline_top"],
            categories=categories))
        per_user[model] = data
        acc = [m for m in acc_names if m in data]
        beyond = [m for m in data if m not in acc]
        rows = _ci_rows(model, data, acc + beyond, opts)   # one bootstrap for all metrics
        acc_rows += rows[:len(acc)]
        beyond_rows += rows[len(acc):]
        for name, value in ((f"coverage@{k}", catalog_coverage(top, n_items, k)),
                            (f"gini@{k}", gini_index(top, n_items, k)),
                            (f"personalization@{k}", personalization(top, k))):
            beyond_rows.append({"model": model, "metric": name, "mean": value,
                                "low": float("nan"), "high": float("nan")})
        exp_rows.append({"model": model} | exposure_fairness(top, counts, k,
                                                            head_ratio=opts.head_ratio))
        lorenz[model] = lorenz_curve(exposure_counts(top, n_items, k))
        kk = min(kmax, top.shape[1])
        hits = torch.from_numpy(hit_matrix(top, ctx["target_indptr"], ctx["target_items"],
                                           kk)).double()                            # (U, K)
        for m in _CURVE_METRICS:
            curves[m][model] = metric_curve(m, hits, n_rel).numpy()
    accuracy = pl.DataFrame(acc_rows, schema=_ROWS_SCHEMA)
    beyond_t = pl.DataFrame(beyond_rows, schema=_ROWS_SCHEMA)
    tested = accuracy["metric"].unique(maintain_order=True).to_list() + [
        m for m in beyond_t["metric"].unique(maintain_order=True).to_list()
        if all(m in d for d in per_user.values())]
    sig = pairwise_significance(per_user, tested, alpha=opts.alpha)
    marks = _marks(pl.concat([accuracy, beyond_t.filter(pl.col("low").is_not_nan())]), sig)
    marks |= {key: "best" for key, v in _marks(
        beyond_t.filter(pl.col("low").is_nan()), sig.clear()).items() if v == "best"}

    group_metric_names = [m for m in (f"ndcg@{k}", f"recall@{k}")
                          if all(m in d for d in per_user.values())]
    groups: dict[str, pl.DataFrame] = {}
    gaps: dict[str, pl.DataFrame] = {}
    group_keys = sorted(k_ for k_ in ctx if k_.startswith("group:"))
    group_note = ""
    if group_keys and not group_metric_names:
        # Per-user accuracy exists only at the protocol's cutoffs (saved by the run).
        group_note = (f"No user-group tables: the run has no per-user ndcg@{k} or recall@{k} "
                      f"(K={k} is not one of the protocol cutoffs "
                      f"{run.results['protocol']['cutoffs']}).")
        _log.warning("%s", group_note)
        group_keys = []
    for key in group_keys:
        name, labels = key[len("group:"):], ctx[key].astype(object)
        g_rows, gap_rows = [], []
        for model, d in per_user.items():
            vals = {m: d[m] for m in group_metric_names}
            g, gap = group_summary(vals, labels, n_boot=opts.n_boot, alpha=opts.alpha,
                                   seed=opts.seed)
            g_rows.append(g.with_columns(pl.lit(model).alias("model")))
            gap_rows.append(gap.with_columns(pl.lit(model).alias("model")))
        groups[name] = pl.concat(g_rows).select("model", pl.exclude("model"))
        gaps[name] = pl.concat(gap_rows).select("model", pl.exclude("model"))
    exposure = pl.DataFrame(exp_rows)
    seconds = time.perf_counter() - start
    _log.info("analysed %d models in %.2fs", len(run.models), seconds)
    return HolisticReport(run, accuracy, beyond_t, exposure, groups, gaps, sig, marks, curves,
                          lorenz, seconds, group_note)


def write_report(run_dir: str | Path, options: HolisticOptions | None = None
                 ) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``plots/``) into the run.

    Args:
        run_dir: A run folder.
        options: Overrides the holistic options saved with the run.

    Returns:
        Paths of the HTML and Markdown reports.
    """
    start = time.perf_counter()
    run = load_run(run_dir, options)
    rep = analyse(run) if run.holistic else None
    plots = make_plots(rep) if rep is not None else {}
    path = Path(run_dir)
    for name, png in plots.items():
        atomic_write_bytes(path / "plots" / f"{name}.png", png)
    html_path, md_path = path / "report.html", path / "report.md"
    atomic_write_text(html_path, render_html(run, rep, plots))
    atomic_write_text(md_path, render_markdown(run, rep, list(plots)))
    _log.info("report written to %s in %.2fs", html_path, time.perf_counter() - start)
    return html_path, md_path
