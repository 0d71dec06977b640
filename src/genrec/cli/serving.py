"""Serving: export, serve, recommend, feedback export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from genrec.cli._common import (
    _log,
    _run_guarded,
    _setup_logging,
    app,
    feedback_app,
)
from genrec.serving._supervisor import GRACEFUL_SHUTDOWN_S, run_workers
from genrec.serving.ann import AnnConfig
from genrec.serving.app import SPEC_ENV, ServeSettings, create_app, parse_model_arg
from genrec.serving.auth import KeyRing, check_exposure
from genrec.serving.batch import read_users
from genrec.serving.bundle import export_run, verify_bundle
from genrec.serving.distributed import BatchEngineConfig, recommend_batch_distributed
from genrec.serving.feedback import StoreUnavailableError, export_interactions, open_store
from genrec.serving.signing import BundleSigner, SignatureVerifier


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `genrec run`.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to create.")],
    model: Annotated[str | None, typer.Option(
        help="Model under RUN_DIR/models: its name, the kind unless named (optional if the run "
             "saved one).")] = None,
    name: Annotated[str | None, typer.Option(help="Name to serve it under.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle.")] = False,
    sign_key: Annotated[Path | None, typer.Option(
        help="Sign the bundle: an Ed25519 private key (PEM) or an HMAC secret file; serve "
             "it with --verify-key.")] = None,
    ann: Annotated[str | None, typer.Option(
        help="ann.kind: exact, ivf or hnsw (an approximate top-k index over the item "
             "vectors of a dot-product model).")] = None,
    ann_set: Annotated[list[str] | None, typer.Option(
        help="Another ann key: --ann-set nprobe=128 (see genrec.serving.ann.AnnConfig).")
    ] = None,
) -> None:
    """Make a servable bundle (model + id maps + titles + histories + checksums) from a run."""
    _setup_logging(quiet=True)

    def go() -> Path:
        signer = BundleSigner.from_file(sign_key) if sign_key is not None else None
        ann_cfg = None
        if ann is not None or ann_set:
            pairs = [kv.partition("=") for kv in ann_set or []]
            bad = [k for k, eq, _ in pairs if not eq]
            if bad:
                raise ValueError(f"--ann-set takes KEY=VALUE, got {bad[0]!r}")
            ann_cfg = AnnConfig.model_validate(
                {k.strip(): yaml.safe_load(v) for k, _, v in pairs}
                | ({"kind": ann} if ann is not None else {}))
        return export_run(run_dir, out, model=model, data_dir=data_dir, name=name,
                          overwrite=overwrite, signer=signer, ann=ann_cfg)

    dest = _run_guarded(go)
    signed = " (signed)" if sign_key is not None else ""
    typer.echo(f"bundle written to {dest}{signed}; serve it with: genrec serve {dest}")


@app.command("serve")
def serve(
    model_dirs: Annotated[list[str], typer.Argument(
        help="Bundle folders (DIR or NAME=DIR), made by `genrec export`; the first is the "
             "default model.")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8000,
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
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads for scoring.")] = None,
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


    uvicorn.run(server_app, host=host, port=port, access_log=access_log, log_level="info",
                limit_concurrency=max_connections, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def _serve_workers(model_dirs: list[str], *, host: str, port: int, workers: int,
                   threads: int | None, settings: dict[str, Any], access_log: bool,
                   max_connections: int) -> None:
    """Run ``workers`` uvicorn processes; each builds the app from a JSON spec in the env."""
    import os
    import tempfile


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
        spec = {"models": models, "threads": threads,  # each worker enforces 1/N of a rate
                "settings": settings | {"multiprocess": True, "rate_share": workers}}
        os.environ[SPEC_ENV] = json.dumps(spec)
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
    exclude_seen: Annotated[bool, typer.Option(
        help="Skip items in the bundle's stored histories (train + valid of the run; the "
             "held-out test interaction is not stored).")] = True,
    chunk_size: Annotated[int, typer.Option(min=1, help="Users scored at once.")] = 1024,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    engine: Annotated[str, typer.Option(
        help="engine: local (this process) or ray (actors on a Ray cluster).")] = "local",
    address: Annotated[str | None, typer.Option(
        help="address: the Ray cluster to join (auto, ray://host:10001); none: start a "
             "local one.")] = None,
    num_cpus: Annotated[int | None, typer.Option(
        help="num_cpus: CPUs of the local Ray cluster.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="workers: Ray actors, each holding the bundle (default: the cluster's CPUs).")
    ] = None,
) -> None:
    """Batch inference: top-k per user with raw ids, written to Parquet chunk by chunk."""
    _setup_logging(quiet=True)

    def go() -> Any:
        cfg = BatchEngineConfig(engine=engine, address=address, num_cpus=num_cpus,
                                workers=workers)
        wanted = read_users(users) if users is not None else None
        return recommend_batch_distributed(model, wanted, out, config=cfg, k=k,
                                           exclude_seen=exclude_seen, chunk_size=chunk_size,
                                           progress=not quiet and sys.stderr.isatty())

    summary = _run_guarded(go)
    typer.echo(f"{summary.rows:,} rows for {summary.users:,} users "
               f"({summary.cold_start:,} cold start) written to {summary.path}")




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
        try:
            store = open_store(db, create=False)
        except StoreUnavailableError as e:
            raise ValueError(str(e)) from e
        try:
            kinds = [e.strip() for e in events.split(",") if e.strip()] if events else None
            return export_interactions(store.events(), out, kinds=kinds)
        finally:
            store.close()

    n = _run_guarded(go)
    typer.echo(f"{n:,} interactions written to {out}")



