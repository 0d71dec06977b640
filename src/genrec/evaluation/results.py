"""Plain-text views of a ``results.json`` document: the Markdown table under every run."""

from __future__ import annotations

from typing import Any

__all__ = ["TEST_COLUMNS", "format_results"]

TEST_COLUMNS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "mrr@10", "map@10", "recall@20",
                "ndcg@20"]
"""Test metrics shown in results.md (all metrics are in results.json)."""


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
        f"{d['interactions']:,} interactions",
        "",
        "| model | fit s | eval s | valid " + vm + " | " + " | ".join(f"test {c}" for c in cols)
        + " |",
        "|---" * (4 + len(cols)) + "|",
    ]
    for r in results["results"]:
        vals = " | ".join(f"{r['test'].get(c, float('nan')):.4f}" for c in cols)
        lines.append(f"| {r['model']} | {r['fit_seconds']:.2f} | {r['eval_seconds']:.2f} | "
                     f"{r['valid'].get(vm, float('nan')):.4f} | {vals} |")
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
