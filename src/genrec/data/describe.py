"""Summary statistics of a dataset, as a dict and as a readable table for the CLI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from genrec.data.interactions import Columns, Dataset

__all__ = ["describe", "format_description", "gini", "source_summary"]


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all equal, towards 1 when concentrated.

    Uses the standard formula on the sorted counts ``x_1 <= ... <= x_n``:
    ``G = sum_i (2i - n - 1) x_i / (n * sum_i x_i)``.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * x) / (n * total))


def describe(ds: Dataset) -> dict[str, Any]:
    """Size, density, sequence lengths, popularity skew, order kind and log of ``ds``.

    Returns:
        A JSON-serialisable dict with keys ``name``, ``users``, ``items``, ``interactions``,
        ``density``, ``sequence_length`` (``min``, ``p25``, ``median``, ``mean``, ``p75``,
        ``p90``, ``max`` of interactions per user), ``item_popularity_gini`` (over every item
        of the id space), ``repeated_pairs`` (events repeating an earlier (user, item) pair),
        ``order``, ``has_rating``, ``item_features``, ``user_features`` and ``log``.
    """
    inter = ds.interactions
    n_users, n_items, n = ds.n_users, ds.n_items, len(inter)
    lengths = np.bincount(inter.users, minlength=n_users) if n else np.zeros(0, dtype=np.int64)
    if len(lengths):
        q = np.percentile(lengths, [25, 50, 75, 90])
        seq = {"min": int(lengths.min()), "p25": float(q[0]), "median": float(q[1]),
               "mean": float(lengths.mean()), "p75": float(q[2]), "p90": float(q[3]),
               "max": int(lengths.max())}
    else:
        seq = dict.fromkeys(("min", "p25", "median", "mean", "p75", "p90", "max"), 0)
    pairs = inter.frame.select(pl.struct(Columns.user, Columns.item).n_unique()).item() if n else 0
    return {
        "name": ds.name,
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "density": n / (n_users * n_items) if n_users and n_items else 0.0,
        "sequence_length": seq,
        "item_popularity_gini": gini(inter.item_counts()),
        "repeated_pairs": int(n - pairs),
        "order": ds.order,
        "has_rating": Columns.rating in inter.frame.columns,
        "item_features": [c for c in ds.items.columns if c != Columns.item],
        "user_features": [c for c in ds.users.columns if c != Columns.user],
        "log": list(ds.log),
    }


def _log_line(entry: dict[str, Any]) -> str:
    """One log entry in words."""
    entry = dict(entry)
    step = entry.pop("step", "?")
    where = entry.pop("file", None) or entry.pop("folder", None)
    if "kept" in entry and "dropped" in entry:
        text = f"kept {entry.pop('kept'):,}, dropped {entry.pop('dropped'):,}"
        reason = entry.pop("reason", None)
        if reason:
            text += f" ({reason if isinstance(reason, str) else json.dumps(reason)})"
    else:
        text = ""
    rest = ", ".join(f"{k}={v}" for k, v in entry.items())
    parts = [p for p in (text, rest) if p]
    suffix = f"  [{where}]" if where else ""
    return f"{step}: {'; '.join(parts)}{suffix}"


def format_description(d: dict[str, Any]) -> str:
    """Render the output of :func:`describe` as an aligned multi-line table."""
    s = d["sequence_length"]
    rows = [
        ("dataset", str(d["name"])),
        ("users", f"{d['users']:,}"),
        ("items", f"{d['items']:,}"),
        ("interactions", f"{d['interactions']:,}"),
        ("density", f"{d['density']:.4%}"),
        ("order", str(d["order"]) + (" (with ratings)" if d.get("has_rating") else "")),
        ("sequence length", f"min {s['min']}  p25 {s['p25']:g}  median {s['median']:g}  "
                            f"mean {s['mean']:.1f}  p75 {s['p75']:g}  p90 {s['p90']:g}  "
                            f"max {s['max']}"),
        ("item popularity Gini", f"{d['item_popularity_gini']:.3f}"),
        ("repeated (user, item)", f"{d['repeated_pairs']:,}"),
        ("item features", ", ".join(d["item_features"]) or "none"),
        ("user features", ", ".join(d["user_features"]) or "none"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if d["log"]:
        lines.append("log:")
        lines.extend(f"  {i + 1}. {_log_line(e)}" for i, e in enumerate(d["log"]))
    return "\n".join(lines)


def source_summary(ds: Dataset) -> dict[str, Any]:
    """Where ``ds`` came from and what reading it kept, from its log.

    Returns:
        ``{"origin": recipe name or path, "format", "files": [{"file", "kept", "dropped",
        "reason"}], "item_metadata": {"file", "items_with", "items_without"} | None, "text":
        one line in words}``: results.json carries it, and ``genrec run`` prints the line
        under the dataset counts.
    """
    load = next((e for e in ds.log if e.get("step") == "load"), {})
    origin = load.get("path") or load.get("recipe") or ds.name
    fmt = load.get("format") or ("recipe" if "recipe" in load else None)
    files = [{k: e[k] for k in ("file", "kept", "dropped", "reason") if k in e}
             for e in ds.log if e.get("step") == "read"]
    attach = [e for e in ds.log if e.get("step") == "attach" and e.get("table") == "items"]
    meta = None
    if attach:
        meta = {"file": attach[-1].get("file"), "items_with": attach[-1]["attached"],
                "items_without": attach[-1]["items_without_features"]}
    with_features = ds.items.height if not ds.items.is_empty() else 0
    parts = [f"{origin}" + (f" ({fmt})" if fmt else "")]
    for f in files[:1]:
        reasons = ", ".join(f"{r}: {n:,}" for r, n in (f.get("reason") or {}).items())
        parts.append(f"read {f['kept'] + f['dropped']:,} rows, kept {f['kept']:,}, dropped "
                     f"{f['dropped']:,}" + (f" ({reasons})" if reasons else ""))
    parts.append(f"{with_features:,} of {ds.n_items:,} items have metadata"
                 + (f" from {meta['file']}" if meta else ""))
    return {"origin": str(origin), "format": fmt, "files": files, "item_metadata": meta,
            "text": "; ".join(parts)}
