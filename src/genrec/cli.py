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

    from genrec.experiment import TEST_COLUMNS

    console = Console(width=max(Console().width, 140))
    d = results["dataset"]
    console.print(f"[bold]{d['name']}[/]: {d['users']:,} users, {d['items']:,} items, "
                  f"{d['interactions']:,} interactions")
    console.print(f"[bold]protocol[/]: {results['protocol_text']}")
    vm = results["protocol"]["valid_metric"]
    table = Table()
    cols = [c for c in TEST_COLUMNS if any(c in r["test"] for r in results["results"])]
    for c in ["model", "fit s", "eval s", f"valid {vm}", *[f"test {c}" for c in cols]]:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in results["results"]:
        table.add_row(r["model"], f"{r['fit_seconds']:.2f}", f"{r['eval_seconds']:.2f}",
                      f"{r['valid'].get(vm, float('nan')):.4f}",
                      *[f"{r['test'].get(c, float('nan')):.4f}" for c in cols])
    console.print(table)


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
    seed: Annotated[int | None, typer.Option(help="protocol.seed")] = None,
    split_path: Annotated[str | None, typer.Option(help="split_path")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config key: --set protocol.exclude_seen=false")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings and the results table.")] = False,
) -> None:
    """Load, split, fit, evaluate valid and test; write results.json, results.md and models."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        from genrec.config import load_config
        from genrec.experiment import run_experiment

        overrides = list(set_ or [])
        flags = {"dataset.name": dataset, "output": output, "dataset.data_dir": data_dir,
                 "protocol.split.kind": split, "protocol.candidates": candidates,
                 "protocol.seed": seed, "split_path": split_path,
                 "protocol.cutoffs": f"[{cutoffs}]" if cutoffs else None}
        overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + overrides
        cfg = load_config(config, overrides)
        if models:
            known = {m.kind: m for m in cfg.models}
            chosen = [m.strip() for m in models.split(",") if m.strip()]
            raw = [known[k].model_dump() if k in known else {"kind": k} for k in chosen]
            cfg = cfg.model_validate(cfg.model_dump() | {"models": raw})
        if not cfg.models:
            raise ValueError("no models: pass --models pop,itemknn,ease or list them in the config")
        return run_experiment(cfg, progress=not quiet and sys.stderr.isatty()), cfg.output

    results, out = _run_guarded(go)
    print_results(results)
    typer.echo(f"results written to {out}/ (results.json, results.md, models/, split/)")


@data_app.command("describe")
def data_describe(
    name: Annotated[str, typer.Argument(help="Recipe name, e.g. ml-100k or amazon-beauty.")],
    data_dir: Annotated[str | None, typer.Option(help="dataset.data_dir")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Users, items, interactions, density, sequence lengths, popularity Gini."""
    _setup_logging(quiet=True)

    def go() -> dict[str, Any]:
        from genrec.data.describe import describe
        from genrec.data.recipes import load_dataset

        return describe(load_dataset(name, data_dir=data_dir))

    d = _run_guarded(go)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
    else:
        from genrec.data.describe import format_description

        typer.echo(format_description(d))


@app.command("models")
def list_models() -> None:
    """List the registered models and their hyperparameters."""
    from genrec.models.registry import MODELS

    for name, cls in MODELS.items():
        fields = {k: v.default for k, v in cls.config_cls.model_fields.items() if k != "kind"}
        typer.echo(f"{name:10s} {cls.__name__:12s} {fields}")


if __name__ == "__main__":
    app()
