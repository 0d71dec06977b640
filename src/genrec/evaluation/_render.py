"""Render a :class:`~genrec.evaluation.report.HolisticReport` as HTML and Markdown.

Both documents share one list of sections, each a title, an intro, tables (header + rows of
cells) and figures; only the final formatting differs. Cells carry a mark (``best`` /
``worse``) that HTML shows as bold / a dagger and Markdown as ``**`` / ``†``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import base64
import datetime as dt
import html
import math
from dataclasses import dataclass, field

import polars as pl

from genrec.evaluation.fairness import MIN_GROUP_USERS, UNKNOWN_GROUP
from genrec.evaluation.results import TEST_COLUMNS, format_metric
from genrec.evaluation.risks import RATES

if TYPE_CHECKING:  # report.py imports this module to render
    from genrec.evaluation.report import HolisticReport, RunData

__all__ = ["render_html", "render_markdown"]


@dataclass
class Cell:
    """One table cell: text, optional interval text, and a mark."""

    text: str
    sub: str = ""
    mark: str = ""


@dataclass
class Table:
    """A table: header and rows of cells."""

    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Section:
    """A report section."""

    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (plot name, caption)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    a = abs(v)
    return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 10 else f"{v:.4f}"


def _ci(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) else f"[{_fmt(lo)}, {_fmt(hi)}]"


def _metric_table(rep: HolisticReport, table: pl.DataFrame, metrics: list[str],
                  caption: str) -> Table:
    by = {(r["model"], r["metric"]): r for r in table.iter_rows(named=True)}
    rows = []
    for model in rep.run.models:
        cells = [Cell(model)]
        for m in metrics:
            r = by.get((model, m))
            cells.append(Cell("–") if r is None else Cell(
                _fmt(r["mean"]), _ci(r["low"], r["high"]), rep.marks.get((model, m), "")))
        rows.append(cells)
    return Table(["model", *metrics], rows, caption)


def _protocol(run: RunData, rep: HolisticReport | None) -> Section:
    r = run.results
    d = r["dataset"]
    lines = [f"<b>Protocol</b>: {html.escape(r['protocol_text'])}",
             f"<b>Dataset</b>: {html.escape(str(d['name']))}: {d['users']:,} users, "
             f"{d['items']:,} items, {d['interactions']:,} interactions"]
    if "eval_users" in d:
        lines.append(f"<b>Evaluated users</b>: valid {d['eval_users']['valid']:,}, "
                     f"test {d['eval_users']['test']:,}")
    if rep is not None:
        o = rep.run.options
        lines.append(f"<b>Holistic analysis</b>: beyond-accuracy and fairness at K={o.k}; head "
                     f"= top {o.head_ratio:.0%} of items by training popularity; "
                     f"{1 - o.alpha:.0%} percentile-bootstrap intervals ({o.n_boot} resamples, "
                     f"per-user); paired Wilcoxon and t-tests, Holm-corrected per metric, "
                     f"alpha={o.alpha}")
    if "environment" in r:
        lines.append("<b>Environment</b>: " + html.escape(
            ", ".join(f"{k} {v}" for k, v in r["environment"].items())))
    return Section("Protocol", "<br>".join(lines))


def _summary(run: RunData) -> Section:
    rows_in = run.results["results"]
    vm = run.results["protocol"].get("valid_metric", "ndcg@10")
    cols = [c for c in TEST_COLUMNS if any(c in r["test"] for r in rows_in)]
    rows = [[Cell(r["model"]), Cell(f"{r['fit_seconds']:.2f}"), Cell(f"{r['eval_seconds']:.2f}"),
             Cell(_fmt(r["valid"].get(vm))),
             *[Cell(format_metric(r, c) if c in r["test"] else "–") for c in cols]]
            for r in rows_in]
    seeded = any("test_std" in r for r in rows_in)
    intro = "Means over test users" + (" (mean ± std over seeds where a model has several)"
                                       if seeded else "") + ", as in results.md."
    return Section("Results", intro,
                   [Table(["model", "fit s", "eval s", f"valid {vm}",
                           *[f"test {c}" for c in cols]], rows)])


def _sections(run: RunData, rep: HolisticReport | None) -> list[Section]:
    out = [_protocol(run, rep), _summary(run)]
    tail = [_risks_section(run.risks)] if run.risks else []
    if rep is None:
        return out + tail
    k = rep.k
    legend = ("Bold: best model for the metric. †: significantly worse than the best "
              f"(paired Wilcoxon signed-rank test, Holm-corrected, alpha={rep.run.options.alpha})."
              " Brackets: bootstrap interval of the mean.")
    acc_metrics = rep.accuracy["metric"].unique(maintain_order=True).to_list()
    shown = [m for m in TEST_COLUMNS if m in acc_metrics] or acc_metrics
    out.append(Section("Accuracy with confidence intervals", legend,
                       [_metric_table(rep, rep.accuracy, shown, "Test metrics")],
                       [("metric_curves", "Recall@K and NDCG@K for every K up to the largest "
                                          "cutoff.")]))
    order = [f"coverage@{k}", f"gini@{k}", f"personalization@{k}", f"novelty@{k}",
             f"avg_pop@{k}", f"aplt@{k}", f"ild@{k}", f"serendipity@{k}"]
    have = set(rep.beyond["metric"].to_list())
    beyond_intro = (
        "coverage: share of the catalogue recommended to anyone (RecBole ItemCoverage). "
        "gini: Gini index of item exposure (RecBole GiniIndex; lower = fairer). "
        "personalization: 1 - mean overlap of two users' lists. novelty: mean "
        "self-information -log2 p(i) in bits. avg_pop: mean training count of recommended items "
        "(RecBole AveragePopularity; lower = less popularity bias). aplt: share of long-tail "
        "items (outside the head). ild: intra-list diversity (Jaccard distance of item "
        "categories). serendipity: share of the list that is relevant and not in the "
        "most-popular list. " + legend)
    out.append(Section("Beyond accuracy", beyond_intro,
                       [_metric_table(rep, rep.beyond, [m for m in order if m in have],
                                      f"Top-{k} lists")],
                       [("accuracy_vs_popularity", "Accuracy against popularity bias.")]))
    exp_cols = [c for c in rep.exposure.columns if c != "model"]
    best = {c: (rep.exposure.sort(c)["model"][0]) for c in exp_cols
            if c in ("exposure_gini", "disparity", "zero_exposure_share")}
    exp_rows = [[Cell(r["model"]), *[Cell(_fmt(r[c]), mark="best" if best.get(c) == r["model"]
                                          else "") for c in exp_cols]]
                for r in rep.exposure.iter_rows(named=True)]
    out.append(Section(
        "Item-side exposure",
        f"head_exposure_share: share of top-{k} slots given to head items (the top "
        f"{rep.run.options.head_ratio:.0%} by training popularity), against head_train_share, "
        "their share of training interactions. head_tail_ratio: mean exposure of a head item "
        "over that of a tail item. disparity: total-variation distance between exposure and "
        "training popularity. zero_exposure_share: items never recommended.",
        [Table(["model", *exp_cols], exp_rows)],
        [("exposure_lorenz", "Lorenz curves of exposure; the dashed line is training "
                             "popularity.")]))
    out.append(_groups_section(rep))
    out.append(_significance_section(rep))
    return out + tail


def _groups_section(rep: HolisticReport) -> Section:
    tables = []
    for name, t in rep.groups.items():
        gaps = rep.gaps[name]
        for metric in t["metric"].unique(maintain_order=True).to_list():
            sub = t.filter(pl.col("metric") == metric)
            groups = sub["group"].unique(maintain_order=True).to_list()
            n_of = {r["group"]: r["n"] for r in sub.iter_rows(named=True)}
            rows = []
            for model in rep.run.models:
                by = {r["group"]: r for r in sub.filter(pl.col("model") == model)
                      .iter_rows(named=True)}
                g = gaps.filter((pl.col("model") == model) & (pl.col("metric") == metric))
                gap = g.row(0, named=True) if g.height else None
                gap_cell = Cell("–") if gap is None else Cell(
                    f"{_fmt(gap['gap'])} ({gap['relative_gap']:.0%})",
                    _ci(gap["low"], gap["high"]), "worse" if gap["significant"] else "")
                rows.append([Cell(model), *[Cell(_fmt(by[x]["mean"]), _ci(by[x]["low"],
                                                                         by[x]["high"]))
                                            if x in by else Cell("–") for x in groups],
                             gap_cell])
            header = ["model", *[f"{x} n={n_of[x]}" for x in groups], "gap best-worst"]
            tables.append(Table(header, rows, f"{metric} by {name}"))
    intro = ("Users grouped by activity (tertiles of history length) and, where the dataset "
             "has them, gender and age. The gap is the best group's mean minus the worst's "
             "(relative to the best), among groups of at least "
             f"{MIN_GROUP_USERS} users other than '{UNKNOWN_GROUP}' (smaller groups are "
             "shown with their n but left out of the gap); † marks a gap whose bootstrap "
             "interval excludes zero.")
    if rep.group_note:
        intro = rep.group_note
    figs = [("group_bars", "Per-group NDCG with bootstrap intervals.")] if rep.groups else []
    return Section("User groups", intro, tables, figs)


def _significance_section(rep: HolisticReport) -> Section:
    k = rep.k
    keys = list(dict.fromkeys([rep.primary, f"recall@{k}", f"ndcg@{k}"]))
    sig = rep.significance.filter(pl.col("metric").is_in(keys))
    rows = [[Cell(r["metric"]), Cell(f"{r['model_a']} vs {r['model_b']}"), Cell(_fmt(r["diff"])),
             Cell(f"{r['t_p_holm']:.2g}"), Cell(f"{r['w_p_holm']:.2g}"),
             Cell("yes" if r["significant"] else "no", mark="best" if r["significant"] else "")]
            for r in sig.iter_rows(named=True)]
    return Section(
        "Significance",
        "Paired tests over test users between every pair of models; p-values Holm-corrected "
        "within each metric. 'significant' uses the Wilcoxon test. All metrics are tested; "
        "this table shows the headline ones.",
        [Table(["metric", "pair", "mean diff (a - b)", "t-test p (Holm)", "Wilcoxon p (Holm)",
                "significant"], rows)])


_RISK_COUNTS = ("users", "beam_size", "entries", "invalid_items")


def _risks_section(risks: dict[str, dict[str, Any]]) -> Section:
    have = {c for v in risks.values() for c in v["rates"]}
    order = [*_RISK_COUNTS, *RATES]
    cols = [c for c in order if c in have] + sorted(have - set(order))

    def cell(v: float | None, col: str) -> Cell:
        return Cell(str(int(v)) if col in _RISK_COUNTS and v is not None else _fmt(v))

    rows = [[Cell(name), *[cell(v["rates"].get(c), c) for c in cols]]
            for name, v in risks.items()]
    protocol = " ".join(f"{name}: {v['protocol'].rstrip('.')}." for name, v in risks.items()
                        if v.get("protocol"))
    defs = " ".join(f"{c}: {RATES[c]}." for c in cols if c in RATES)
    intro = ("Protocol. " + protocol + " " if protocol else "") + (
        "An entry is one item a model emitted (a beam with a finite score, an entry of an "
        "LLM's list); each entry is valid, hallucinated, out of candidate or a duplicate, in "
        "that order of checks (genrec.evaluation.risks), so the entry rates add up. "
        "invalid_items: hallucinated + out-of-candidate entries. " + defs
        + (" match_<kind>: valid entries matched by id, exact title, normalised title, fuzzy "
           "title or embedding / all emitted entries." if any(c.startswith("match_") for c in cols) else ""))
    return Section("Generative risks", intro, [Table(["model", *cols], rows)])


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px 32px;
color:#1f2328;background:#fff;max-width:1400px}
h1{font-size:26px;border-bottom:2px solid #d0d7de;padding-bottom:6px}
h2{font-size:20px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.intro{font-size:13px;color:#444;line-height:1.5;margin:6px 0 10px}
.protocol{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;
font-size:14px;line-height:1.6}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef1f4}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
.sub{display:block;font-size:10px;color:#6e7781}
.best{font-weight:700;color:#0a3069}
.worse::after{content:' †';color:#cf222e}
figure{margin:10px 0 20px}
figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:12px;color:#57606a}
footer{font-size:11px;color:#6e7781;margin-top:30px}
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for row in t.rows:
        cells = []
        for c in row:
            cls = f' class="{c.mark}"' if c.mark else ""
            sub = f'<span class="sub">{html.escape(c.sub)}</span>' if c.sub else ""
            cells.append(f"<td><span{cls}>{html.escape(c.text)}</span>{sub}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(run: RunData, rep: HolisticReport | None, plots: dict[str, bytes]) -> str:
    """A self-contained HTML document (inline CSS, plots as base64 PNG)."""
    name = html.escape(str(run.results["dataset"]["name"]))
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>genrec report: {name}</title><style>{_CSS}</style></head><body>",
             f"<h1>genrec report: {name}</h1>"]
    for i, s in enumerate(_sections(run, rep)):
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.intro:
            intro = s.intro if i == 0 else html.escape(s.intro)
            parts.append(f'<div class="{"protocol" if i == 0 else "intro"}">{intro}</div>')
        parts += [_html_table(t) for t in s.tables]
        for plot, caption in s.figures:
            if plot in plots:
                b64 = base64.b64encode(plots[plot]).decode("ascii")
                parts.append(f'<figure><img alt="{plot}" src="data:image/png;base64,{b64}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    extra = f"; analysis {rep.seconds:.1f}s" if rep is not None else ""
    parts.append(f"<footer>Generated by genrec on {stamp}{extra}.</footer></body></html>")
    return "\n".join(parts)


# -- Markdown --------------------------------------------------------------------------------
def _md_text(text: str) -> str:
    """Text for Markdown: HTML-escaped (Markdown renders raw HTML), ``|`` kept out of tables."""
    return html.escape(text, quote=False).replace("|", "\\|")


def _md_cell(c: Cell) -> str:
    text = _md_text(c.text)
    if c.mark == "best":
        text = f"**{text}**"
    elif c.mark == "worse":
        text += " †"
    if c.sub:
        text += f" <sub>{_md_text(c.sub)}</sub>"
    return text


def _md_table(t: Table) -> str:
    lines = [f"*{_md_text(t.caption)}*", ""] if t.caption else []
    lines.append("| " + " | ".join(_md_text(h) for h in t.header) + " |")
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def render_markdown(run: RunData, rep: HolisticReport | None, plots: list[str]) -> str:
    """Markdown with the same sections; figures link to ``plots/<name>.png``.

    Every text from the run (dataset, model and group names) is HTML-escaped, since Markdown
    viewers render raw HTML.
    """
    import re

    name = html.escape(str(run.results["dataset"]["name"]), quote=False)
    lines = [f"# genrec report: {name}", ""]
    for i, s in enumerate(_sections(run, rep)):
        lines += [f"## {html.escape(s.title, quote=False)}", ""]
        if s.intro:
            intro = s.intro
            if i == 0:  # HTML-escaped text with <b> and <br>: keep the text escaped
                intro = re.sub(r"<b>(.*?)</b>", r"**\1**", intro).replace("<br>", "  \n")
                intro = html.unescape(intro)
            lines += [html.escape(intro, quote=False), ""]
        for t in s.tables:
            lines += [_md_table(t), ""]
        for plot, caption in s.figures:
            if plot in plots:
                lines += [f"![{html.escape(caption, quote=False)}](plots/{plot}.png)", ""]
    return "\n".join(lines) + "\n"
