"""Experiment configuration: YAML read with ``safe_load`` and validated by pydantic.

Every CLI flag of ``genrec run`` edits one key of :class:`ExperimentConfig`, and ``--set
a.b=value`` reaches any key, so the two forms are interchangeable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genrec.data.preprocess import PreprocessConfig
from genrec.evaluation.protocol import Protocol
from genrec.models.registry import AnyModelConfig
from genrec.tuning import TuneSection

__all__ = ["DataConfig", "ExperimentConfig", "load_config", "apply_overrides", "parse_value"]


class DataConfig(BaseModel):
    """Which data to load and how to preprocess it."""

    model_config = ConfigDict(extra="forbid")

    name: str = "ml-100k"
    """A recipe name (ml-100k, ml-1m, amazon-beauty, amazon-sports, yelp, lastfm) or, with
    ``path``, the name given to a custom dataset."""
    path: str | None = None
    """A custom file or folder to read instead of a recipe."""
    format: Literal["csv", "parquet", "recbole", "p5", "sequences", "ml-100k", "ml-1m"] | None = None
    """Format of ``path`` (required with ``path``)."""
    columns: dict[str, str] | None = None
    """csv/parquet only: genrec column (user, item, timestamp, rating) -> file column."""
    sep: str = ","
    """csv only: field separator."""
    data_dir: str | None = None
    """Where recipes look for files; defaults to $GENREC_DATA_DIR, then the cache folder."""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    """Preprocessing steps applied after loading."""


class ExperimentConfig(BaseModel):
    """One experiment: data, protocol, models and where results go."""

    model_config = ConfigDict(extra="forbid")

    dataset: DataConfig = Field(default_factory=DataConfig)
    protocol: Protocol = Field(default_factory=Protocol)
    models: list[AnyModelConfig] = Field(default_factory=list)
    """Models to fit and evaluate, each a config with a ``kind``."""
    output: str = "runs/latest"
    """Folder for results.json, results.md, the split, and the fitted models."""
    split_path: str | None = None
    """Reuse a split saved by an earlier run (its folder); by default the run saves its own."""
    eval_batch_size: int = Field(2048, ge=1)
    """Users per evaluation chunk."""
    save_models: bool = True
    """Save each fitted model under ``output/models/<name>``."""
    checkpoints: bool = True
    """Trained (torch) models write a checkpoint every epoch to ``output/checkpoints/<name>``."""
    resume: bool = False
    """Continue killed trainings from their last checkpoint in ``output/checkpoints``."""
    tune: TuneSection | None = None
    """Hyperparameter search for ``genrec tune`` (ignored by ``genrec run``)."""

    @field_validator("models")
    @classmethod
    def _unique_kinds(cls, v: list[Any]) -> list[Any]:
        kinds = [m.kind for m in v]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each model kind may appear once per run, got {kinds}")
        return v


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as YAML (numbers, booleans, lists), else keep the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a config dict before validation.

    A numeric path part indexes a list (``models.0.l2=100``).

    Raises:
        ValueError: For an override without ``=``.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node: Any = raw
        parts = key.strip().split(".")
        try:
            if any(p.isdigit() for p in parts) and not _indexes_lists(raw, parts):
                raise ValueError
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            if isinstance(node, list):
                node[int(parts[-1])] = parse_value(value)
            else:
                node[parts[-1]] = parse_value(value)
        except (IndexError, ValueError, TypeError, AttributeError):
            raise ValueError(f"--set {item}: no such place in the config "
                             "(list items must exist, e.g. from --models)") from None
    return raw


def _indexes_lists(raw: Any, parts: list[str]) -> bool:
    """True when every numeric part of the path indexes an existing list."""
    node = raw
    for part in parts[:-1]:
        if part.isdigit():
            if not isinstance(node, list) or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part, {})
    last = parts[-1]
    return not last.isdigit() or (isinstance(node, list) and int(last) < len(node))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                models: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from defaults), pick models, apply overrides, validate.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: ``key=value`` strings applied after ``models``.
        models: Model kinds to run (the ``--models`` flag); a kind the file already lists
            keeps its parameters there.

    Raises:
        ValueError: If the file is not a YAML mapping.
        pydantic.ValidationError: If a key is unknown or a value invalid.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping")
        raw = loaded or {}
    if models is not None:
        listed = {m.get("kind"): m for m in raw.get("models") or [] if isinstance(m, dict)}
        raw["models"] = [listed.get(k, {"kind": k}) for k in models]
    return ExperimentConfig.model_validate(apply_overrides(raw, overrides or []))
