"""``genrec data validate CONFIG``: what the data of an experiment holds, before any training.

It reads the files exactly as a run would (:func:`genrec.data.sources.load_raw`, then the
configured preprocessing) and reports rows read, kept and dropped by reason, items with and
without metadata, which metadata fields exist and how many items each covers, duplicate ids,
time-order problems, and, for every text-based model of the config, whether it would start
(the same :func:`genrec.text.check_text_coverage` the model calls at ``fit``).
"""

from __future__ import annotations

from typing import Any

from genrec.config import ExperimentConfig
from genrec.data.describe import source_summary
from genrec.data.interactions import Dataset
from genrec.data.preprocess import preprocess
from genrec.data.readers import time_order_report
from genrec.data.sources import load_raw
from genrec.models.base import ModelConfig
from genrec.text import ItemTextConfig, TextCoverageError, check_text_coverage, text_coverage

__all__ = ["format_validation", "text_setting", "validate_data"]


def text_setting(mcfg: ModelConfig) -> str | None:
    """The setting by which a model config reads item text (``item_text=init``), or None."""
    kind, c = mcfg.kind, mcfg
    if getattr(c, "item_text", "none") != "none":  # sasrec, hstu, gru4rec, bert4rec
        return f"item_text={c.item_text}"  # type: ignore[attr-defined]
    if kind == "tiger" and getattr(c, "item_vectors", None) in ("text", "auto"):
        return f"item_vectors={c.item_vectors}"  # type: ignore[attr-defined]
    if kind == "graph_heuristic" and getattr(c, "similarity", None) == "text":
        return "similarity=text"
    return None


def _time_order(raw: Dataset) -> dict[str, Any] | None:
    """The reader's time-order check, or (for readers that sort as they read) ties and
    negative times of the sorted table, with out-of-order rows unknown (None)."""
    entry = next((e for e in raw.log if e.get("step") == "time_order"), None)
    if entry is not None or raw.order != "timestamp":
        return entry
    sorted_entry = time_order_report(raw.interactions.frame)
    return None if sorted_entry is None else {**sorted_entry, "users_out_of_order": None}


def validate_data(cfg: ExperimentConfig) -> dict[str, Any]:
    """Read the config's data as a run would and report on it.

    Returns:
        A JSON-serialisable dict: ``dataset``, ``source``, ``reads`` (per file: kept, dropped,
        reason, duplicate ids), ``time_order``, ``items`` / ``users`` (with and without
        metadata, columns and items covered per field), ``repeated_pairs``,
        ``preprocessing``, ``final`` counts, ``text`` (per text-based model: fields used,
        coverage, ``ok`` and the refusal message), and ``problems`` (what would stop a run).

    Raises:
        DataError: If the files cannot be read at all (the same error a run gives).
    """
    raw = load_raw(cfg.dataset)
    n_raw_log = len(raw.log)
    ds = preprocess(raw, cfg.dataset.preprocess)
    inter = raw.interactions.frame
    pairs = inter.select(["user", "item"]).n_unique() if inter.height else 0
    default = text_coverage(ds.items, ds.n_items)
    out: dict[str, Any] = {
        "dataset": ds.name,
        "source": source_summary(raw),
        "reads": [e for e in raw.log if e.get("step") == "read"],
        "time_order": _time_order(raw),
        "order": raw.order,
        "items": {"total": ds.n_items, "with_metadata": ds.items.height,
                  "without_metadata": ds.n_items - ds.items.height,
                  "fields": default.per_field},
        "users": {"total": ds.n_users, "with_metadata": ds.users.height,
                  "fields": [c for c in ds.users.columns if c != "user"]},
        "repeated_pairs": int(inter.height - pairs),
        "attach": [e for e in raw.log if e.get("step") == "attach"],
        "preprocessing": ds.log[n_raw_log:],
        "final": {"users": ds.n_users, "items": ds.n_items,
                  "interactions": len(ds.interactions)},
        "text": {"default template": {"fields": default.fields,
                                      "items_with_text": default.with_text,
                                      "share": round(default.share, 4)}},
        "problems": [],
    }
    for mcfg in cfg.models:
        setting = text_setting(mcfg)
        tcfg = getattr(mcfg, "text", None)
        if setting is None or not isinstance(tcfg, ItemTextConfig):
            continue
        who = f"{mcfg.label} ({setting})"
        cov = text_coverage(ds.items, ds.n_items, tcfg.template)
        entry: dict[str, Any] = {"fields": cov.fields, "auto": cov.auto,
                                 "items_with_text": cov.with_text,
                                 "share": round(cov.share, 4),
                                 "min_coverage": tcfg.min_coverage, "ok": True}
        try:
            check_text_coverage(ds.items, ds.n_items, tcfg, who=who, quiet=True)
        except TextCoverageError as e:
            if setting == "item_vectors=auto":  # TIGER falls back to interaction vectors
                entry["fallback"] = "collaborative"
            else:
                entry.update(ok=False, error=str(e))
                out["problems"].append(str(e))
        out["text"][who] = entry
    return out


def _reasons(reason: dict[str, int] | None) -> str:
    return ", ".join(f"{r}: {n:,}" for r, n in (reason or {}).items())


def format_validation(v: dict[str, Any]) -> str:
    """The report of :func:`validate_data` as readable lines."""
    lines = [f"dataset {v['dataset']}: {v['source']['text']}"]
    for r in v["reads"]:
        what = f" ({r['table']})" if "table" in r else ""
        line = (f"  read {r['file']}{what}: {r['kept'] + r['dropped']:,} rows, kept "
                f"{r['kept']:,}, dropped {r['dropped']:,}")
        if r.get("reason"):
            line += f" ({_reasons(r['reason'])})"
        if r.get("duplicate_ids"):
            line += f"; {r['duplicate_ids']:,} duplicate ids (first row kept)"
        lines.append(line)
    for a in v["attach"]:
        without = a.get("items_without_features", a.get("users_without_features", 0))
        lines.append(f"  attached {a['file']}: {a['attached']:,} {a['table']} matched, "
                     f"{without:,} without metadata, {a['rows_unused']:,} rows match no id")
    t = v["time_order"]
    if t is not None:
        out_of_order = ("not checked (the reader sorts)" if t["users_out_of_order"] is None
                        else f"{t['users_out_of_order']:,}")
        lines.append(f"  time order: users with rows out of time order in the file (sorted): "
                     f"{out_of_order}; {t['tied_events']:,} events tied with "
                     f"another of their user (file order kept), {t['negative_times']:,} "
                     "negative times")
    else:
        lines.append(f"  time order: none in the file (order={v['order']}: file order is time "
                     "order)")
    lines.append(f"  repeated (user, item) pairs: {v['repeated_pairs']:,}")
    for p in v["preprocessing"]:
        lines.append(f"  {p.get('step')}: kept {p.get('kept', 0):,}, dropped "
                     f"{p.get('dropped', 0):,}" + (f" ({p['reason']})" if p.get("reason") else ""))
    f = v["final"]
    lines.append(f"after preprocessing: {f['users']:,} users, {f['items']:,} items, "
                 f"{f['interactions']:,} interactions")
    it = v["items"]
    lines.append(f"items: {it['with_metadata']:,} with metadata, {it['without_metadata']:,} "
                 "without")
    if it["fields"]:
        lines.append("  fields (items with a value): " + ", ".join(
            f"{k} {n:,}" for k, n in it["fields"].items()))
    for who, e in v["text"].items():
        fields = ", ".join(e["fields"]) or "none"
        status = "" if who == "default template" else (
            "  ok" if e["ok"] and "fallback" not in e else
            f"  falls back to {e['fallback']} vectors" if "fallback" in e else "  REFUSED")
        lines.append(f"text, {who}: fields [{fields}]: {e['items_with_text']:,} items "
                     f"({e['share']:.1%}){status}")
    for p in v["problems"]:
        lines.append(f"problem: {p}")
    if not v["problems"]:
        lines.append("no problems: every model of the config can start on this data")
    return "\n".join(lines)
