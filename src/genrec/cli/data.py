"""``genrec data``: describe (``--engine ray``: read and preprocess on Ray), validate, synth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from genrec.cli._common import (
    _data_config,
    _run_guarded,
    _setup_logging,
    data_app,
)
from genrec.data.describe import describe, format_description
from genrec.data.synth import SynthConfig, generate
from genrec.runs.experiment import load_data
from genrec.runs.validate import format_validation, validate_data

_Engine = Annotated[str | None, typer.Option(
    help="dataset.engine: read and preprocess here (local) or on Ray (ray; csv, tsv, parquet "
         "files or a pattern such as 'parts/*.parquet')")]
_Workers = Annotated[int | None, typer.Option(
    min=1, help="dataset.workers: Ray workers (default: the cluster's CPUs)")]


def _engine_keys(engine: str | None, workers: int | None) -> list[str]:
    """The ``--set`` items of the engine flags (each flag is one config key)."""
    keys = {"dataset.engine": engine, "dataset.workers": workers}
    return [f"{k}={v}" for k, v in keys.items() if v is not None]


@data_app.command("describe")
def data_describe(
    name: Annotated[str, typer.Argument(
        help="Recipe name (ml-100k, amazon-beauty, ...) or a YAML config with a dataset.")],
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any dataset key: --set dataset.items.path=items.jsonl")] = None,
    engine: _Engine = None,
    workers: _Workers = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Users, items, interactions, density, sequence lengths, popularity Gini."""
    _setup_logging(quiet=True)

    def go() -> dict[str, Any]:
        sets = _engine_keys(engine, workers) + list(set_ or [])
        return describe(load_data(_data_config(name, data_dir, sets).dataset))

    d = _run_guarded(go)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
    else:

        typer.echo(format_description(d))


@data_app.command("validate")
def data_validate(
    config: Annotated[str, typer.Argument(
        help="YAML experiment config (or a recipe name) whose data to check.")],
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set dataset.items.path=items.jsonl")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the data of a config before training: rows kept and dropped by reason, items
    with metadata, fields and their coverage, duplicates, time order, and whether each
    text-based model would start. Exit code 1 when a model would refuse."""
    _setup_logging(quiet=True)

    def go() -> dict[str, Any]:
        return validate_data(_data_config(config, data_dir, set_))

    v = _run_guarded(go)
    if as_json:
        typer.echo(json.dumps(v, indent=2, default=str))
    else:

        typer.echo(format_validation(v))
    if v["problems"]:
        raise typer.Exit(1)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(
        help="Folder to write interactions.parquet, items.parquet|jsonl and dataset.yaml.")],
    interactions: Annotated[int, typer.Option(
        help="Rows of the interaction file (exactly), e.g. 1000000 to 50000000.")] = 1_000_000,
    items: Annotated[int, typer.Option(
        help="Items in the catalogue, e.g. 10000 to 1000000.")] = 10_000,
    users: Annotated[int | None, typer.Option(
        help="Users (exactly); default: interactions // 25.")] = None,
    categories: Annotated[int | None, typer.Option(
        help="Item categories; default: items // 100, clamped to 10..1000.")] = None,
    item_alpha: Annotated[float, typer.Option(
        help="Zipf exponent of item popularity (0 = uniform).")] = 1.0,
    user_alpha: Annotated[float, typer.Option(
        help="Zipf exponent of user activity.")] = 0.7,
    min_user_len: Annotated[int, typer.Option(
        help="Rows every user has at least.")] = 5,
    p_stay: Annotated[float, typer.Option(
        help="Probability the next item of a session is from the current category.")] = 0.6,
    p_related: Annotated[float, typer.Option(
        help="Probability of moving to a neighbouring category (the rest: a jump to a "
             "popular item).")] = 0.25,
    session_len: Annotated[float, typer.Option(
        help="Mean session length in rows.")] = 8.0,
    seed: Annotated[int, typer.Option(help="Same seed and options, identical files.")] = 0,
    chunk_rows: Annotated[int, typer.Option(
        help="Rows generated at a time (bounds memory; changing it changes the rows).")
    ] = 2_000_000,
    items_format: Annotated[str, typer.Option(
        help="Item metadata format: parquet or jsonl.")] = "parquet",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any other SynthConfig key: --set click_gap_s=30")] = None,
) -> None:
    """Write a seeded synthetic dataset: Zipf-like popularity and activity, sessions that
    tend to stay in a category, item text, timestamps. Prints the dataset: section to use."""
    _setup_logging(quiet=True)

    def go() -> dict[str, Any]:
        raw: dict[str, Any] = {
            "n_interactions": interactions, "n_items": items, "n_users": users,
            "n_categories": categories, "item_alpha": item_alpha, "user_alpha": user_alpha,
            "min_user_len": min_user_len, "p_stay": p_stay, "p_related": p_related,
            "session_len": session_len, "seed": seed, "chunk_rows": chunk_rows,
            "items_format": items_format}
        for item in set_ or []:
            key, _, value = item.partition("=")
            raw[key.strip()] = yaml.safe_load(value)
        return generate(SynthConfig.model_validate(raw), out).model_dump()

    result = _run_guarded(go)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(Path(result["config"]).read_text(encoding="utf-8"))


