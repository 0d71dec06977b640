"""Experiments: run, tune, tokenize, models, compare, report, rate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from genrec.cli._common import (
    _SET_YAML,
    _csv,
    _DataDir,
    _Dataset,
    _experiment,
    _overrides,
    _run_guarded,
    _setup_logging,
    app,
    print_rating_results,
    print_results,
)
from genrec.config import RatingExperimentConfig, load_config
from genrec.evaluation.compare import HolisticOptions
from genrec.evaluation.report import load_run, write_report
from genrec.llm.rating import run_llm_rating
from genrec.llm.runner import llm_client
from genrec.models import build_model
from genrec.models.base import FitContext
from genrec.models.registry import MODELS
from genrec.runs.compare import run_comparison
from genrec.runs.experiment import prepare, run_experiment
from genrec.runs.rating import run_rating
from genrec.runs.tuning import tune


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML experiment config.")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset.name")] = None,
    models: Annotated[str | None, typer.Option(help="models: comma-separated kinds")] = None,
    output: Annotated[str | None, typer.Option(help="output")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    split: Annotated[str | None, typer.Option(
        help="protocol.split.kind: leave_one_out, temporal or random")] = None,
    candidates: Annotated[str | None, typer.Option(
        help="protocol.candidates: full or sampled")] = None,
    cutoffs: Annotated[str | None, typer.Option(help="protocol.cutoffs, e.g. 5,10,20")] = None,
    seed: Annotated[int | None, typer.Option(help="protocol.seed and protocol.split.seed")] = None,
    split_path: Annotated[str | None, typer.Option(help="split_path")] = None,
    data: Annotated[str | None, typer.Option(
        help="dataset.path: one's own interactions (csv, tsv, parquet, jsonl, txt)")] = None,
    items: Annotated[str | None, typer.Option(
        help="dataset.items.path: item metadata (csv, tsv, parquet, jsonl)")] = None,
    item_id: Annotated[str | None, typer.Option(
        help="dataset.items.id: the metadata's id column (asin, item_id, ...)")] = None,
    threads: Annotated[int | None, typer.Option(help="threads: CPU threads (torch, BLAS)")] = None,
    data_engine: Annotated[str | None, typer.Option(
        help="dataset.engine: read and preprocess here (local) or on Ray (ray)")] = None,
    data_workers: Annotated[int | None, typer.Option(
        min=1, help="dataset.workers: Ray workers (default: the cluster's CPUs)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set protocol.exclude_seen=false" + _SET_YAML)] = None,
    resume: Annotated[bool | None, typer.Option(
        "--resume/--no-resume",
        help="resume: continue killed trainings from OUTPUT/checkpoints (default: the "
             "config's)")] = None,
    seeds: Annotated[int | None, typer.Option(
        min=1, help="seeds: fit and evaluate every model with this many seeds (mean, std, "
                    "95% intervals, paired tests)")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Load, split, fit, evaluate valid and test; write results.json, results.md and models."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        flags = {"protocol.split.kind": split, "protocol.candidates": candidates,
                 "protocol.seed": seed, "protocol.split.seed": seed, "split_path": split_path,
                 "protocol.cutoffs": _csv(cutoffs), "resume": resume, "dataset.path": data,
                 "dataset.items.path": items, "dataset.items.id": item_id, "threads": threads,
                 "seeds": seeds, "dataset.engine": data_engine, "dataset.workers": data_workers}
        cfg = _experiment(config, dataset=dataset, models=models, output=output,
                          data_dir=data_dir, set_=set_, flags=flags)
        if not cfg.models:
            raise ValueError("no models: pass --models pop,itemknn,ease or list them in the config")
        return run_experiment(cfg, progress=not quiet and sys.stderr.isatty()), cfg.output

    results, out = _run_guarded(go)
    print_results(results)
    typer.echo(f"results written to {out}/ (results.json, results.md, models/, split/)")


@app.command("tune")
def tune_command(
    config: Annotated[Path, typer.Argument(help="YAML experiment config with a tune section.")],
    n_trials: Annotated[int | None, typer.Option(help="tune.n_trials")] = None,
    output: Annotated[str | None, typer.Option(help="output")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set tune.sampler=random" + _SET_YAML)] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Search tune.space on validation, then fit and test the best configuration once.

    Writes results.json (with every trial), results.md and best.yaml."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        flags = {"tune.n_trials": n_trials, "output": output, "dataset.data_dir": data_dir}
        overrides = _overrides(flags) + list(set_ or [])
        cfg = load_config(config, overrides)
        return tune(cfg, progress=not quiet and sys.stderr.isatty()), cfg.output

    results, out = _run_guarded(go)
    print_results(results)
    t = results["tuning"]
    params = ", ".join(f"{k}={v}" for k, v in t["best_params"].items())
    typer.echo(f"best of {t['n_trials']} trials ({t['n_failed']} failed): trial "
               f"{t['best_trial']}, valid {t['metric']}={t['best_valid']:.4f}: {params}")
    typer.echo(f"chosen config written to {out}/best.yaml; results to {out}/ "
               "(results.json, results.md)")


@app.command("tokenize")
def tokenize(
    config: Annotated[Path, typer.Argument(help="YAML experiment config with a tiger model.")],
    output: Annotated[str | None, typer.Option(
        help="Folder for the semantic IDs (default OUTPUT/semantic_ids of the config).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set models.0.tokenizer.n_levels=4" + _SET_YAML)] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the health report.")] = False,
) -> None:
    """Fit and save only the semantic IDs of the config's TIGER model, with codebook health.

    Runs the semantic-ID stage (item vectors, tokenizer, dedup) and saves codes, tokenizer and
    codebook health; train on them later with ``--set models.0.semantic_ids=FOLDER``."""
    _setup_logging(quiet)

    def go() -> tuple[str, str]:
        cfg = load_config(config, list(set_ or []))
        tiger = next((m for m in cfg.models if m.kind == "tiger"), None)
        if tiger is None:
            raise ValueError(f"{config}: no model of kind tiger to tokenize for")
        data = prepare(cfg)
        model = build_model(tiger).fit_semantic_ids(
            data.split.train, FitContext(items=data.dataset.items, seed=cfg.protocol.seed))
        out = output or str(Path(cfg.output) / "semantic_ids")
        model.save_semantic_ids(out)
        return model.semantic_ids_.health_.format(), out

    health, out = _run_guarded(go)
    typer.echo(health)
    typer.echo(f"semantic IDs written to {out}/ (semantic_ids.safetensors, semantic_ids.json)")


def _shown_default(value: Any) -> Any:
    """A config default as ``genrec models`` prints it (a nested config as its dict)."""
    return value.model_dump() if isinstance(value, BaseModel) else value


@app.command("models")
def list_models() -> None:
    """List the registered models and their hyperparameters."""

    for name, cls in MODELS.items():
        fields = {k: _shown_default(v.get_default(call_default_factory=True))
                  for k, v in cls.config_cls.model_fields.items() if k not in ("kind", "name")}
        typer.echo(f"{name:10s} {cls.__name__:12s} {fields}")


@app.command()
def compare(
    config: Annotated[Path | None, typer.Argument(help="YAML experiment config.")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset.name")] = None,
    models: Annotated[str | None, typer.Option(help="models: comma-separated kinds")] = None,
    output: Annotated[str | None, typer.Option(help="output")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    k: Annotated[int, typer.Option(min=1, help="Cutoff of beyond-accuracy metrics.")] = 10,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    seeds: Annotated[int | None, typer.Option(
        min=1, help="seeds: fit and evaluate every model with this many seeds, as genrec run "
                    "does (the report's top-K lists are the first seed's)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set protocol.cutoffs=[5,10,20]" + _SET_YAML)] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Run several models under one protocol; write results and the holistic report."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        cfg = _experiment(config, dataset=dataset, models=models, output=output,
                          data_dir=data_dir, set_=set_, flags={"seeds": seeds})
        if not cfg.models:
            raise ValueError("no models: pass --models pop,itemknn,ease or list them in the config")
        opts = HolisticOptions(k=k, n_boot=n_boot)
        return run_comparison(cfg, opts, progress=not quiet and sys.stderr.isatty()), cfg.output

    results, out = _run_guarded(go)
    print_results(results)
    typer.echo(f"report written to {out}/report.html and {out}/report.md")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by genrec compare or run.")],
    k: Annotated[int | None, typer.Option(min=1, help="Override the beyond-accuracy K.")] = None,
    n_boot: Annotated[int | None, typer.Option(min=10, help="Bootstrap resamples.")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings.")] = False,
) -> None:
    """Write a self-contained report.html and report.md (with plots/) for a run folder."""
    _setup_logging(quiet)

    def go() -> tuple[Path, Path]:
        opts = load_run(run_dir).options
        changes = {key: v for key, v in {"k": k, "n_boot": n_boot}.items() if v is not None}
        return write_report(run_dir, opts.model_copy(update=changes) if changes else None)

    html_path, md_path = _run_guarded(go)
    typer.echo(f"report written to {html_path} and {md_path}")


@app.command("rate")
def rate(
    config: Annotated[Path | None, typer.Argument(
        help="YAML rating config, e.g. configs/rating-ml100k.yaml.")] = None,
    dataset: _Dataset = None,
    models: Annotated[str | None, typer.Option(
        help="models: comma-separated rating kinds (global_mean, biases, biased_mf, "
             "knn_baseline, svdpp, autorec, text_rating, blend)")] = None,
    output: Annotated[str | None, typer.Option(help="output")] = None,
    data_dir: _DataDir = None,
    split: Annotated[str | None, typer.Option(
        help="protocol.split: official (ML-100K u1-u5 files) or random")] = None,
    folds: Annotated[str | None, typer.Option(help="protocol.folds, e.g. u1,u2")] = None,
    valid_ratio: Annotated[float | None, typer.Option(help="protocol.valid_ratio")] = None,
    llm_ratings: Annotated[int | None, typer.Option(
        help="llm.n_ratings: sampled test ratings per fold the LLM rates")] = None,
    llm_shots: Annotated[str | None, typer.Option(
        help="llm.shots: prompt variants, e.g. 0,3 (0 = zero-shot)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set models.0.factors=50" + _SET_YAML)] = None,
    llm_url: Annotated[str | None, typer.Option(
        "--llm-url", help="llm.url: OpenAI-compatible API root, e.g. "
                          "http://127.0.0.1:8080/v1")] = None,
    llm_model: Annotated[str | None, typer.Option(
        "--llm-model", help="llm.model: model name sent to the API")] = None,
    llm_gguf: Annotated[str | None, typer.Option(
        "--llm-gguf", help="llm.gguf: start a local llama.cpp server on this GGUF file, or on "
                           "a packaged model by name: smollm2")] = None,
    llm_cache: Annotated[str | None, typer.Option(
        "--llm-cache", help="llm.cache_dir: response cache folder")] = None,
    api_key_env: Annotated[str | None, typer.Option(
        "--api-key-env", help="llm.api_key_env: env var holding the API key "
                              "[default: OPENAI_API_KEY]")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Rating prediction: every rating model on every fold; RMSE/MAE (mean ± std).

    With llm.url or llm.gguf (--llm-url, --llm-gguf), also an LLM on a sample of the same
    test ratings."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        keys = {"dataset.name": dataset, "output": output, "dataset.data_dir": data_dir,
                "protocol.split": split, "protocol.folds": _csv(folds),
                "protocol.valid_ratio": valid_ratio, "llm.n_ratings": llm_ratings,
                "llm.shots": _csv(llm_shots), "llm.url": llm_url, "llm.model": llm_model,
                "llm.gguf": llm_gguf, "llm.cache_dir": llm_cache,
                "llm.api_key_env": api_key_env}
        overrides = _overrides(keys) + list(set_ or [])
        cfg = load_config(config, overrides, models=_csv(models), cls=RatingExperimentConfig)
        if not cfg.models:
            raise ValueError("no models: pass --models biases,biased_mf or list them in the "
                             "config")
        llm = cfg.llm
        with llm_client(llm.url, llm.model, gguf=llm.gguf, cache_dir=llm.cache_dir,
                        api_key_env=llm.api_key_env) as client:
            if client is None:
                return run_rating(cfg), cfg.output
            label = Path(llm.gguf).stem if llm.gguf is not None else (llm.model or "llm")
            return run_llm_rating(cfg, client, label=label), cfg.output

    results, out = _run_guarded(go)
    print_rating_results(results)
    typer.echo(f"results written to {out}/ (results.json, results.md, config.yaml)")


