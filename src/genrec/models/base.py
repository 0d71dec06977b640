"""The one model interface every genrec model implements.

A model stores only its validated config in ``__init__``; ``fit`` learns attributes whose
names end in ``_``; ``score`` returns a dense ``(B, n_items)`` block; ``recommend`` is written
once, here, for every model; ``save``/``load`` use JSON + safetensors, never pickle.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from genrec._io import atomic_write, atomic_write_text, replace_dir
from genrec.data.interactions import Histories, Interactions
from genrec.models.ranking import rank
from genrec.training.loop import BENIGN_KEYS, TrainConfig, TrainResult
from genrec.training.loop import train as train_loop

__all__ = ["DotProductModel", "FitContext", "ModelConfig", "ModelFileError", "Recommender",
           "RecList", "NotFittedError"]

_log = logging.getLogger(__name__)


class NotFittedError(RuntimeError):
    """Raised when a model is used before ``fit`` (or ``load``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not fitted: call fit() or load() first")


class ModelFileError(ValueError):
    """A model folder that cannot be read: missing, damaged, or another model's files."""


class ModelConfig(BaseModel):
    """Base of every model config: validated, no unknown keys, no infinite or NaN numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
    """This model's name in a run: its row in ``results.json``, its ``models/<name>`` and
    ``checkpoints/<name>`` folders. Default: the kind. Names let one run hold several
    configurations of one kind (``{kind: ease, name: ease-l2-500, l2: 500}``), which are then
    paired on the same split and seeds. A label only: it does not change what is learned."""

    @property
    def label(self) -> str:
        """The model's name in a run: ``name``, else ``kind``."""
        return self.name or self.kind

    def results_fields(self, **dump: Any) -> dict[str, Any]:
        """How a results row names this model: ``model`` (the label), ``kind`` when it is
        named, and ``params`` (the config without them; ``dump`` goes to ``model_dump``)."""
        return {"model": self.label, **({"kind": self.kind} if self.name else {}),
                "params": self.model_dump(exclude={"kind", "name"}, **dump)}

    @model_serializer(mode="wrap")
    def _without_default_name(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Dumps leave out an unset ``name``: saved configs read as before names existed."""
        data = handler(self)
        if isinstance(data, dict) and data.get("name", "") is None:
            del data["name"]
        return data


@dataclass(frozen=True)
class FitContext:
    """What a model may receive besides its training interactions, always through ``fit``.

    The glue layer (:mod:`genrec.runs`) builds one per fit from the experiment: the item
    features of the dataset, a validation callback made from the protocol, the protocol's
    seed and where checkpoints go. A model reads what it needs and ignores the rest; a
    library user may pass none (``FitContext()``: no item features, no validation).

    Attributes:
        items: Item feature table (``Dataset.items``: dense ``item`` column plus metadata).
        validate: Returns the validation metric of the model as it stands (higher is better);
            trained models early-stop on it. None: train all epochs, keep the last weights.
        valid_metric: Name of that metric (for logs and training records).
        seed: Seeds initialisation, shuffling, dropout and negative sampling.
        checkpoint_dir: Folder for a training checkpoint after every epoch (None: none).
        resume: Continue from the checkpoint in ``checkpoint_dir`` when there is one.
        identity: What a checkpoint records of the experiment (model config, data and split
            fingerprints); resuming under another identity is refused.
        progress: Show progress bars.
    """

    items: pl.DataFrame | None = None
    validate: Callable[[Recommender[Any]], float] | None = None
    valid_metric: str = "ndcg@10"
    seed: int = 42
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    identity: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass(frozen=True)
class RecList:
    """Top-k recommendations for a batch of users.

    Attributes:
        users: Dense user ids, shape ``(B,)``.
        items: Recommended item ids, best first, shape ``(B, k)``; ``-1`` where fewer than
            ``k`` items could be recommended.
        scores: Their scores, shape ``(B, k)``.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_ranked(cls, users: np.ndarray, ranked: tuple[torch.Tensor, torch.Tensor]
                    ) -> RecList:
        """Wrap the ``(items, values)`` pair returned by :func:`~genrec.models.ranking.rank`."""
        items, vals = ranked
        return cls(np.asarray(users), items.cpu().numpy().astype(np.int64),
                   vals.float().cpu().numpy())


@runtime_checkable
class DotProductModel(Protocol):
    """A model whose ``score`` is a dot product: ``query_vectors(h) @ item_vectors().T``.

    Approximate retrieval (:mod:`genrec.serving.ann`) indexes ``item_vectors()`` and searches
    it with ``query_vectors(h)``; ``score`` itself stays the exact path. Implemented by the
    factor models (BPR-MF, LightGCN, SimpleX) and the sequential ones (SASRec, GRU4Rec,
    BERT4Rec, HSTU).
    """

    def query_vectors(self, histories: Histories) -> torch.Tensor:
        """User (or sequence) vectors of a batch, ``(B, D)``."""
        ...

    def item_vectors(self) -> torch.Tensor:
        """Vectors of all items in dense-id order, ``(I, D)``."""
        ...


C = TypeVar("C", bound=ModelConfig)


class Recommender(ABC, Generic[C]):
    """Base class of every model.

    Args:
        config: A validated config; defaults to ``config_cls()``.
        **overrides: Fields that replace those of ``config``.
    """

    config_cls: ClassVar[type[ModelConfig]]
    seed_dependent: ClassVar[bool] = True
    """Whether ``fit`` depends on ``FitContext.seed``. A model that learns nothing at random
    (closed form, counts) says False, and the glue fits it once for all of an experiment's
    seeds when the evaluation does not depend on the seed either (full ranking)."""

    def __init__(self, config: C | None = None, **overrides: Any) -> None:
        merged = (config or self.config_cls()).model_dump() | overrides
        self.config: C = self.config_cls.model_validate(merged)  # type: ignore[assignment]

    # -- learning ---------------------------------------------------------------------------
    def fit(self, train: Interactions, ctx: FitContext | None = None) -> Self:
        """Learn from ``train``.

        Args:
            train: Training interactions.
            ctx: Side inputs (item features, a validation callback, seed, checkpoints);
                default ``FitContext()``.

        Returns:
            ``self``.
        """
        if not isinstance(train, Interactions):
            raise TypeError(f"fit(train): train must be Interactions (e.g. dataset.interactions "
                            f"or split.train), got {type(train).__name__}")
        if ctx is not None and not isinstance(ctx, FitContext):
            raise TypeError(f"fit(train, ctx): ctx must be a FitContext, got "
                            f"{type(ctx).__name__} (build the validation callback with "
                            "genrec.runs.validation_callback)")
        self.n_users_ = train.n_users
        self.n_items_ = train.n_items
        try:
            self._fit(train, ctx or FitContext())
        except BaseException:
            # A fit that did not finish (an error, Ctrl-C) leaves a model that is not fitted,
            # rather than one that scores with half-trained or half-replaced state.
            for name in ("n_users_", "n_items_"):
                self.__dict__.pop(name, None)
            raise
        return self

    def _require_fitted(self) -> None:
        """Raise :class:`NotFittedError` before ``fit``/``load`` (or after a failed fit)."""
        if not hasattr(self, "n_items_"):
            raise NotFittedError(type(self).__name__)

    @abstractmethod
    def _fit(self, train: Interactions, ctx: FitContext) -> None: ...

    def _train_net(self, net: torch.nn.Module, data: Sequence[torch.Tensor], train: Interactions,
                   ctx: FitContext, cfg: TrainConfig,
                   before_validate: Callable[[], None] | None = None) -> TrainResult:
        """Run :func:`genrec.training.train` on ``net`` with what ``ctx`` carries: the
        validation callback (after ``before_validate``, e.g. exporting scoring tensors), the
        seed, the checkpoint folder, and the identity a resumed run must match (this model's
        config, minus keys that do not change what is learned, and the training data)."""
        validate = None
        if ctx.validate is not None:
            def validate(_: torch.nn.Module) -> float:
                if before_validate is not None:
                    before_validate()
                return float(ctx.validate(self))  # type: ignore[misc]

        config = self.config.model_dump(mode="json")
        for key in BENIGN_KEYS:
            head, _, tail = key.partition(".")
            node = config.get(head) if tail else config
            if isinstance(node, dict):
                node.pop(tail or head, None)
        identity = {"model": config, "train_data": train.fingerprint(), "seed": ctx.seed,
                    "valid_metric": ctx.valid_metric if ctx.validate is not None else None,
                    **ctx.identity}
        return train_loop(net, data, cfg, validate=validate, seed=ctx.seed,
                          valid_metric=ctx.valid_metric, checkpoint_dir=ctx.checkpoint_dir,
                          resume=ctx.resume, identity=identity)

    # -- inference --------------------------------------------------------------------------
    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
        """Score items for a batch of users.

        Args:
            histories: The users and their histories.
            items: Item ids to score; all items when None.

        Returns:
            Float tensor ``(B, n_items)`` or ``(B, len(items))``; higher is better.

        Raises:
            NotFittedError: Before ``fit``/``load``.
            ValueError: If the histories use another item id space.
        """
        self._require_fitted()
        if not isinstance(histories, Histories):
            raise TypeError(f"histories must be a Histories batch (EvalSet.histories, "
                            f"Interactions.histories() or Histories.from_lists), got "
                            f"{type(histories).__name__}")
        if histories.n_items != self.n_items_:
            raise ValueError(f"histories have {histories.n_items} items, model has {self.n_items_}")
        if len(histories.items):
            lo, hi = int(histories.items.min()), int(histories.items.max())
            if lo < 0 or hi >= self.n_items_:
                raise ValueError(f"histories hold item ids from {lo} to {hi}; ids must be in "
                                 f"[0, {self.n_items_})")
        cols = None if items is None else _item_ids(items, self.n_items_)
        scores = self._score(histories)
        return scores if cols is None else scores[:, cols]

    @abstractmethod
    def _score(self, histories: Histories) -> torch.Tensor: ...

    def recommend(self, histories: Histories, k: int = 10, *, exclude_seen: bool = True,
                  block: torch.Tensor | np.ndarray | None = None,
                  allow: torch.Tensor | np.ndarray | None = None) -> RecList:
        """Top-``k`` items per user, best first (see :func:`~genrec.models.ranking.rank`).

        Args:
            histories: The users (dense ids; ``-1`` or an id the model never saw is a cold
                user) and their histories.
            k: Items per user.
            exclude_seen: Never recommend an item of the user's history.
            block: Boolean mask ``(I,)`` or ``(B, I)`` of items never recommended.
            allow: Boolean mask ``(I,)`` or ``(B, I)``: only these items may be recommended.

        Raises:
            ValueError: If ``k`` is negative or a mask is not boolean of those shapes.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        scores = self.score(histories).float()
        return RecList.from_ranked(histories.users, rank(
            scores, histories, k, exclude_seen=exclude_seen, block=block, allow=allow))

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save (override in models with learned state)."""
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`_state` returned."""

    def save(self, path: Path) -> None:
        """Write the model folder ``path``: ``config.json``, ``meta.json``,
        ``state.safetensors`` (and what a model adds in :meth:`_save_files`).

        The folder is written whole, beside ``path``, and then renamed into place, so an
        interrupted save leaves the previous model (or nothing), never a mix of the two. An
        existing ``path`` must be an earlier model folder (it holds ``config.json``) or empty.
        """
        self._require_fitted()
        path = Path(path)
        if path.exists() and not (path / "config.json").is_file() and (
                not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} exists and is not a model folder: choose another "
                                  "path (save replaces only an earlier model's folder)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))
        try:
            self._save_files(tmp)
            replace_dir(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _save_files(self, path: Path) -> None:
        """Write the model's files into the (new, empty) folder ``path``."""
        state = {k: v.detach().cpu().contiguous() for k, v in self._state().items()}
        atomic_write(path / "state.safetensors", lambda p: save_file(state, str(p)))
        atomic_write_text(path / "meta.json", json.dumps(
            {"n_users_": self.n_users_, "n_items_": self.n_items_}))
        atomic_write_text(path / "config.json", self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save` (no code is executed: JSON + safetensors).

        Raises:
            ModelFileError: If the folder is missing, damaged, or holds another model's files
                (a pydantic ``ValidationError`` names a config of another kind).
        """
        path = Path(path)
        try:
            model = cls(cls.config_cls.model_validate_json((path / "config.json").read_text()))
            meta = json.loads((path / "meta.json").read_text())
            model.n_users_, model.n_items_ = int(meta["n_users_"]), int(meta["n_items_"])
            # Read into memory rather than memory-map: a file truncated later (e.g. while
            # served) must not be able to crash the process with SIGBUS.
            model._load_state(load((path / "state.safetensors").read_bytes()))
        except (OSError, KeyError, TypeError, json.JSONDecodeError, SafetensorError,
                RuntimeError) as e:
            detail = f"missing {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ModelFileError(f"{path}: not a readable {cls.__name__} model folder "
                                 f"({detail})") from e
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items() if k != "kind")
        return f"{type(self).__name__}({params})"


def _item_ids(items: np.ndarray | torch.Tensor | list[int], n_items: int) -> torch.Tensor:
    """``items`` as a 1-D tensor of item ids, checked.

    Raises:
        ValueError: If ``items`` is not a 1-D array of integers in ``[0, n_items)`` (a boolean
            mask, or the ``-1`` that pads recommendation lists, is not an item id).
    """
    t = torch.as_tensor(np.asarray(items) if isinstance(items, list) else items)
    if t.dim() == 1 and not len(t):
        return t.long()
    if t.dim() != 1 or t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"items must be a 1-D array of integer item ids, got dtype {t.dtype} "
                         f"and shape {tuple(t.shape)}")
    if (int(t.min()) < 0 or int(t.max()) >= n_items):
        raise ValueError(f"items must be ids in [0, {n_items}), got ids from {int(t.min())} to "
                         f"{int(t.max())} (-1 pads recommendation lists; drop it first)")
    return t.long()
