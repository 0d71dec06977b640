"""Experiment configuration: YAML read with ``safe_load`` and validated by pydantic.

Every CLI flag of ``genrec run`` edits one key of :class:`ExperimentConfig`, and ``--set
a.b=value`` reaches any key, so the two forms are interchangeable.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genrec.data.sources import DataConfig, FeatureSource
from genrec.evaluation.protocol import Protocol
from genrec.evaluation.rating import RatingProtocol
from genrec.models.rating.registry import AnyRatingConfig
from genrec.models.registry import AnyModelConfig

__all__ = ["CategoricalParam", "DataConfig", "ExperimentConfig", "LLMRatingSection",
           "RatingExperimentConfig", "FeatureSource", "FloatParam",
           "IntParam",
           "ParamSpec", "TuneSection", "load_config", "apply_overrides", "parse_value"]

Choice = bool | int | float | str | None


class FloatParam(BaseModel):
    """A float drawn from ``[low, high]`` (log-uniformly with ``log: true``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self


class IntParam(BaseModel):
    """An integer drawn from ``low, low + step, ..., high`` (log-uniformly with ``log``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log: true needs low >= 1 and step 1")
        return self


class CategoricalParam(BaseModel):
    """One of a list of values (the grid sampler tries each)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Choice]) -> list[Choice]:
        if len({(type(c), c) for c in v}) != len(v):
            raise ValueError(f"choices must be distinct, got {v}")
        return v


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class TuneSection(BaseModel):
    """The ``tune:`` section of an experiment config: what ``genrec tune`` searches.

    The direction is always to maximise ``protocol.valid_metric`` on the validation set.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_trials: int = Field(20, ge=1)
    """Trials to run (the grid sampler stops earlier once every combination is tried)."""
    timeout_minutes: float | None = Field(None, gt=0)
    """Time budget of the study, summed over its runs when it is resumed: start no new trial
    after this many minutes (a running trial is not interrupted; it is recorded when it
    ends)."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """Optuna sampler; ``grid`` needs every parameter to be categorical."""
    seed: int = 42
    """Seed of the sampler (each worker, and each resumed run, derives its own from it)."""
    pruner: Literal["none", "median", "halving"] = "median"
    """Stop unpromising trials on their validation curve (models validated during training:
    the torch models; the others are never pruned): ``median`` prunes a trial whose best
    value so far is below the median of earlier trials at the same validation round,
    ``halving`` is asynchronous successive halving (keeps the top 1 / ``halving_rate`` of the
    trials at rounds ``prune_from_round * halving_rate ** k``), ``none`` runs every trial to
    its end."""
    prune_from_round: int = Field(2, ge=1)
    """First validation round at which a trial may be pruned (the first rounds are noisy);
    ``halving``: the rounds of its first rung."""
    prune_startup_trials: int = Field(3, ge=0)
    """``median``: trials that must finish before any trial is pruned."""
    halving_rate: int = Field(3, ge=2)
    """``halving``: the reduction factor (keep the top 1 / this of each rung)."""
    workers: int = Field(1, ge=1)
    """Trials run in this many processes at once, sharing the study through ``storage``;
    each gets ``threads / workers`` threads, and all reuse the split the run writes."""
    storage: str | None = None
    """Journal file the study is stored in (Optuna's ``JournalFileBackend``, safe for several
    processes on one machine); default ``<output>/study.journal``. Rerunning the same command
    continues the study it holds (finished trials kept, the rest of the budget run); another
    space, model, data or protocol is refused."""
    space: dict[str, ParamSpec] = Field(min_length=1)
    """Dotted config key of the model (``models.0.l2``) -> its range or choices."""

    @field_validator("space")
    @classmethod
    def _model_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            parts = key.split(".")
            # Data, split and protocol are prepared once and shared by all trials, so only
            # the model's own settings may vary.
            if len(parts) < 3 or parts[:2] != ["models", "0"] or not all(parts):
                raise ValueError(f"{key!r}: a tuned key must be a setting of the model, "
                                 "e.g. models.0.l2 or models.0.train.lr")
            if parts[2] == "kind":
                raise ValueError(f"{key!r}: the model kind cannot be tuned")
        return v

    @model_validator(mode="after")
    def _grid_is_categorical(self) -> TuneSection:
        if self.sampler == "grid":
            other = [k for k, s in self.space.items() if not isinstance(s, CategoricalParam)]
            if other:
                raise ValueError(f"the grid sampler needs categorical parameters, not {other}")
        return self


def _unique_model_names(cls: type, v: list[Any]) -> list[Any]:
    """A ``models`` list names each model once (results and folders are keyed by the name,
    which is the kind unless ``name`` is given)."""
    labels = [m.label for m in v]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ValueError(f"each model may appear once per run, got {labels}: give the "
                         f"configurations of {twice} distinct names (`name: ...`)")
    return v


class ExperimentConfig(BaseModel):
    """One experiment: data, protocol, models and where results go."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: DataConfig = Field(default_factory=DataConfig)
    protocol: Protocol = Field(default_factory=Protocol)
    models: list[AnyModelConfig] = Field(default_factory=list)
    """Models to fit and evaluate, each a config with a ``kind`` (and a ``name`` when one
    kind appears twice)."""
    output: str = "runs/latest"
    """Folder for results.json, results.md, the split, and the fitted models."""
    split_path: str | None = None
    """Reuse a split saved by an earlier run (its folder); by default the run saves its own."""
    seeds: int = Field(1, ge=1)
    """Fit and evaluate every model this many times, with protocol seeds ``seed, seed + 1,
    ...`` on the same split; results report the mean, the spread and 95% intervals of every
    metric, and paired tests between the models (``genrec run --seeds 3``)."""
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
    threads: int | None = Field(None, ge=1)
    """CPU threads for training and scoring (torch and BLAS), set once for the whole run and
    recorded in results.json. Default: ``$GENREC_THREADS``, else the cores this process may
    use. Running N experiments side by side, give each cores / N: time-capped recipes
    otherwise train fewer epochs on an oversubscribed machine and report other accuracy."""

    _unique_names = field_validator("models")(_unique_model_names)


class LLMRatingSection(BaseModel):
    """How ``genrec rate`` asks an LLM for ratings; the CF models are scored on the same
    sampled test ratings. With neither ``url`` nor ``gguf``, no LLM runs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str | None = None
    """OpenAI-compatible API root, e.g. ``http://127.0.0.1:8080/v1`` (``--llm-url``)."""
    model: str | None = None
    """Model name sent to the API (``--llm-model``)."""
    gguf: str | None = None
    """A GGUF file, or a packaged model by name (``smollm2``), served by a local llama.cpp
    server for the run (``--llm-gguf``)."""
    cache_dir: str | None = None
    """Response cache folder (``--llm-cache``)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (``--api-key-env``); never the key itself."""

    n_ratings: int = Field(200, ge=1)
    """Test ratings sampled (seeded) per fold for the LLM comparison."""
    folds: int = Field(1, ge=1)
    """Folds (or seeds) of the protocol the LLM is run on, from the first."""
    shots: list[int] = Field(default_factory=lambda: [0, 3])
    """Prompt variants: 0 = zero-shot; n > 0 = n worked examples from other training users."""
    history: int = Field(20, ge=1)
    """The user's most recent training ratings shown in the prompt."""
    max_tokens: int = Field(16, ge=1)
    """Completion budget (the answer is one number)."""


class RatingExperimentConfig(BaseModel):
    """One rating-prediction experiment (``genrec rate``): data, protocol, rating models."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: DataConfig = Field(default_factory=DataConfig)
    protocol: RatingProtocol = Field(default_factory=RatingProtocol)
    models: list[AnyRatingConfig] = Field(default_factory=list)
    """Rating models to fit and evaluate on every fold, each a config with a ``kind``."""
    llm: LLMRatingSection = Field(default_factory=LLMRatingSection)
    """The LLM rating predictor (used when the command is given an LLM)."""
    output: str = "runs/rating"
    """Folder for results.json, results.md, config.yaml and the fitted models."""
    save_models: bool = True
    """Save each fitted model under ``output/models/<fold>/<name>`` (its ``name``, else its
    kind)."""

    _unique_names = field_validator("models")(_unique_model_names)


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


C = TypeVar("C", bound=BaseModel)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                models: list[str] | None = None, *,
                cls: type[C] = ExperimentConfig) -> C:  # type: ignore[assignment]
    """Read a YAML config (or start from defaults), pick models, apply overrides, validate.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: ``key=value`` strings applied after ``models``.
        models: Model kinds to run (the ``--models`` flag); a kind the file already lists
            keeps its parameters there.
        cls: The config class (``RatingExperimentConfig`` for ``genrec rate``).

    Raises:
        ValueError: If the file is not valid YAML, or not a YAML mapping (the message names it).
        pydantic.ValidationError: If a key is unknown or a value invalid.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping")
        raw = loaded or {}
    if models is not None:
        listed = {m.get("kind"): m for m in raw.get("models") or [] if isinstance(m, dict)}
        # a copy per slot: --models ease,ease with --set models.1.* must not edit models.0
        raw["models"] = [copy.deepcopy(listed.get(k, {"kind": k})) for k in models]
    return cls.model_validate(apply_overrides(raw, overrides or []))
