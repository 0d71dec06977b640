"""Plain-text views of a ``results.json`` document: the Markdown table under every run."""

from __future__ import annotations

from typing import Any

__all__ = ["TEST_COLUMNS", "format_metric", "format_results"]

TEST_COLUMNS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "mrr@10", "map@10", "recall@20",
                "ndcg@20"]
"""Test metrics shown in results.md (all metrics are in results.json)."""


def format_metric(row: dict[str, Any], metric: str) -> str:
    """A test metric of a results row: ``0.0969``, or ``0.0969 ± 0.0012`` (mean ± std over
    seeds) for a row of several seeds."""
    value = f"{row['test'].get(metric, float('nan')):.4f}"
    if "test_std" in row and metric in row["test_std"]:
        value += f" ± {row['test_std'][metric]:.4f}"
    return value


def format_results(results: dict[str, Any]) -> str:
    """Markdown: the protocol first, then one row per model with test metrics."""
    d = results["dataset"]
    vm = results["protocol"]["valid_metric"]
    cols = [c for c in TEST_COLUMNS if any(c in r["test"] for r in results["results"])]
    lines = [
        f"# Results: {d['name']}",
        "",
        f"**Protocol**: {results['protocol_text']}",
        "",
        f"**Dataset**: {d['users']:,} users, {d['items']:,} items, "
        f"{d['interactions']:,} interactions"
        + (f"; {d['source']['text']}" if d.get("source", {}).get("text") else ""),
        "",
        "| model | fit s | eval s | valid " + vm + " | " + " | ".join(f"test {c}" for c in cols)
        + " |",
        "|---" * (4 + len(cols)) + "|",
    ]
    for r in results["results"]:
        vals = " | ".join(format_metric(r, c) for c in cols)
        lines.append(f"| {r['model']} | {r['fit_seconds']:.2f} | {r['eval_seconds']:.2f} | "
                     f"{r['valid'].get(vm, float('nan')):.4f} | {vals} |")
    seeded = [r for r in results["results"] if "seeds" in r]
    if seeded:
        once = [r["model"] for r in seeded
                if any("same_as_seed" in s for s in r.get("per_seed", []))]
        lines += ["", f"**Seeds**: {seeded[0]['seeds']} (same split; values are mean ± std over "
                      "seeds). 95% intervals: t-interval over seeds | bootstrap over test "
                      "users of the seed-averaged metric"]
        if once:
            lines += ["", f"Fitted once: {', '.join(once)} (nothing is drawn at random and "
                          "every item is ranked, so every seed repeats the first)."]
        lines += ["", "| model | metric | mean | t-interval (seeds) | bootstrap (users) |",
                  "|---|---|---|---|---|"]
        for r in seeded:
            for c in cols:
                if c in r["test_ci95"]:
                    t, b = r["test_ci95"][c], r["test_bootstrap_ci95"][c]
                    lines.append(f"| {r['model']} | {c} | {r['test'][c]:.4f} | "
                                 f"[{t[0]:.4f}, {t[1]:.4f}] | [{b[0]:.4f}, {b[1]:.4f}] |")
    if results.get("significance"):
        lines += ["", "**Paired tests** (seed-averaged per-user test metrics; Wilcoxon and "
                      "t-test, Holm-corrected within each metric)", "",
                  "| metric | model a | model b | diff | Wilcoxon p (Holm) | t p (Holm) | "
                  "significant |", "|---|---|---|---|---|---|---|"]
        for t in results["significance"]:
            lines.append(f"| {t['metric']} | {t['model_a']} | {t['model_b']} | "
                         f"{t['diff']:+.4f} | {t['w_p_holm']:.3g} | {t['t_p_holm']:.3g} | "
                         f"{'yes' if t['significant'] else 'no'} |")
    cold = [r for r in results["results"] if "cold_start" in r]
    if cold:
        lines += ["", f"**Cold start** ({cold[0]['cold_start']['cold_items']:,} items never in "
                      "training): test metrics by target item", "",
                  "| model | group | users | " + " | ".join(cols) + " |",
                  "|---" * (3 + len(cols)) + "|"]
        for r in cold:
            for g in ("cold", "warm"):
                c = r["cold_start"]
                vals = " | ".join(f"{c[g].get(m, float('nan')):.4f}" for m in cols)
                lines.append(f"| {r['model']} | {g} | {c['users'][g]:,} | {vals} |")
    return "\n".join(lines) + "\n"
