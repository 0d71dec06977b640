"""What the sequential models share: the next-item training task, its losses, the wrapper,
and item-text initialisation of the item table (``item_text: init``).

A sequential net maps a left-padded item sequence ``(B, L)`` (ids shifted by 1, 0 = padding,
most recent item last) to hidden states ``(B, L, D)``, and scores item ``i`` at position
``t`` by ``h_t . E[i + 1]`` with the same item embedding ``E`` it reads its input with (tied
output embeddings). Training predicts, at every position, the next item of the user's
training sequence.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender
from genrec.text import ItemTextConfig, item_embeddings
from genrec.training import losses
from genrec.training.loop import TrainConfig

__all__ = ["SPARSE_AUTO_MIN_ITEMS", "SequentialConfig", "SequentialNet", "SequentialRecommender",
           "log_proposal", "next_item_loss", "text_init", "use_sparse_embeddings"]

_log = logging.getLogger(__name__)

LossName = Literal["ce", "sampled_softmax", "bce", "bpr"]


class SequentialConfig(ModelConfig):
    """Settings every sequential model has."""

    max_len: int = Field(50, ge=1)
    """Most recent items the model reads (50 suits Amazon data, 200 MovieLens-1M)."""
    loss: LossName = "ce"
    """ce: full softmax over all items at every position; sampled_softmax: softmax over
    ``n_negatives`` popularity-sampled items with logQ correction; bce / bpr: one uniform
    negative per position."""
    n_negatives: int = Field(256, ge=1)
    """Negatives per batch for ``sampled_softmax`` (shared by all positions)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Optimisation, early stopping, checkpoints and device."""
    item_text: Literal["none", "init", "adaptor"] = "none"
    """How item text is used. ``none``: learned ID embeddings. ``init``: the ID embeddings
    start from the items' text embeddings (their top ``dim`` principal components, scaled to
    the usual N(0, 0.02) spread), then train as usual. ``adaptor`` (SASRec only): no ID
    table, an item's vector is a small MLP over its frozen text embedding, so cold items are
    ranked from their text. Any setting but none needs item features with text."""
    text: ItemTextConfig = Field(default_factory=ItemTextConfig)
    """Item text template, encoder and embedding cache (``item_text`` other than none)."""

    text_modes: ClassVar[tuple[str, ...]] = ("none", "init")
    """The ``item_text`` settings this model implements."""

    @model_validator(mode="after")
    def _text_mode(self) -> SequentialConfig:
        if self.item_text not in self.text_modes:
            raise ValueError(f"{self.kind}: item_text={self.item_text!r} is not available "
                             f"(this model has {', '.join(self.text_modes)})")
        return self


SPARSE_AUTO_MIN_ITEMS = 50_000
"""``sparse_embeddings: auto`` turns sparse item-table gradients on from this many items: below
it the dense update is cheap and today's results stay bit for bit."""


def use_sparse_embeddings(setting: str | bool, loss: str, n_items: int, who: str) -> bool:
    """Whether the item table gets sparse gradients (and a lazy optimizer) in training.

    Args:
        setting: The ``sparse_embeddings`` config value: ``"auto"``, True or False.
        loss: The training loss; only losses that read sampled item rows allow it.
        n_items: Catalogue size (``auto`` needs :data:`SPARSE_AUTO_MIN_ITEMS`).
        who: Model name for messages.

    Raises:
        ValueError: If ``setting`` is True with the full-softmax ``ce`` loss.
    """
    if setting is False:
        return False
    if loss == "ce":
        if setting is True:
            raise ValueError(f"{who}: sparse_embeddings: true needs a sampled loss "
                             "(sampled_softmax, bce or bpr); loss ce scores every item, so "
                             "its gradient covers the whole item table")
        return False
    if setting == "auto" and n_items < SPARSE_AUTO_MIN_ITEMS:
        return False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        # Not made to work under DistributedDataParallel: its reducer's sparse-gradient path
        # (backend-dependent) and the clipping and lazy update across ranks are untested here.
        _log.warning("%s: sparse_embeddings is not supported under torchrun (WORLD_SIZE=%d): "
                     "the item table is trained with dense gradients and AdamW", who, world)
        return False
    return True


def next_item_loss(hidden: torch.Tensor, targets: torch.Tensor, item_emb: torch.Tensor, *,
                   loss: LossName, n_negatives: int, logq: torch.Tensor,
                   sparse: bool = False) -> torch.Tensor:
    """Loss of predicting ``targets`` from ``hidden`` at every non-padding position.

    Args:
        hidden: Hidden states, shape ``(B, L, D)``.
        targets: Next item at every position, shifted ids (0 = no target), shape ``(B, L)``.
        item_emb: Item embedding table with the padding row first, shape ``(I + 1, D)``.
        loss: Which loss (see :class:`SequentialConfig`).
        n_negatives: Sampled-softmax negatives.
        logq: Log-probability of each item under the negative sampler, shape ``(I,)``.
        sparse: Read the rows of ``item_emb`` (a leaf parameter) with sparse-gradient lookups,
            so its gradient holds only the target and negative rows (not with ``ce``).

    Returns:
        Scalar loss, a mean over positions.
    """
    keep = targets > 0
    h = hidden[keep]                                                   # (N, D)
    t = targets[keep] - 1                                              # (N,) 0-based items
    if loss == "ce":
        if sparse:
            raise ValueError("sparse item gradients need a sampled loss; ce reads every item")
        return losses.softmax_cross_entropy(h @ item_emb[1:].T, t)     # logits (N, I)

    def rows(idx: torch.Tensor) -> torch.Tensor:                       # 0-based ids -> (*, D)
        return F.embedding(idx + 1, item_emb, sparse=True) if sparse else item_emb[idx + 1]

    pos = (h * rows(t)).sum(-1)                                        # (N,)
    if loss == "sampled_softmax":
        neg = torch.multinomial(logq.exp(), n_negatives, replacement=True)  # (M,)
        return losses.sampled_softmax(pos, h @ rows(neg).T, pos_logq=logq[t],
                                      neg_logq=logq[neg], neg_is_pos=neg[None] == t[:, None])
    neg = torch.randint(0, len(item_emb) - 1, t.shape, device=t.device)  # (N,) uniform
    neg_logits = (h * rows(neg)).sum(-1)                               # (N,)
    return losses.bce(pos, neg_logits) if loss == "bce" else losses.bpr(pos, neg_logits)


class SequentialNet(nn.Module):
    """Base of sequential nets: an item embedding ``item_emb`` and a sequence encoder."""

    item_emb: nn.Embedding
    sparse: bool = False
    """True when training reads the item table with sparse-gradient lookups: the training
    loop then updates :meth:`sparse_parameters` with a lazy optimizer."""
    padding_invariant: bool = False
    """True when a row's scores do not depend on how much left padding it has (padding keys
    masked, positions counted from the end): scoring then trims each batch to its longest
    history (a test checks this for every net that claims it)."""

    def forward(self, seq: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states ``(B, L, D)`` of ``seq`` ``(B, L)``, and the loss if ``targets``."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """nanoGPT initialisation: N(0, 0.02) weights, zero biases, zero padding embedding."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def item_table(self) -> torch.Tensor:
        """Item vectors, padding row first, shape ``(I + 1, D)`` (read and scored with)."""
        return self.item_emb.weight

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose training gradients are sparse (the item table when ``sparse``)."""
        return [self.item_emb.weight] if self.sparse else []

    def query(self, seq: torch.Tensor) -> torch.Tensor:
        """The state items are scored against after the last position, ``(B, D)``."""
        hidden, _ = self(seq)                                          # (B, L, D)
        return hidden[:, -1]

    def output_table(self) -> torch.Tensor:
        """Item vectors ``query`` is dotted with, in dense-id order, ``(I, D)``."""
        return self.item_table()[1:]

    def score(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores of every item after the last position, shape ``(B, I)``."""
        return self.query(seq) @ self.output_table().T                 # (B, I)


C = TypeVar("C", bound=SequentialConfig)


class SequentialRecommender(Recommender[C]):
    """Wrapper that trains a :class:`SequentialNet` with :func:`genrec.training.train`."""

    @abstractmethod
    def _build_net(self, item_counts: np.ndarray | None) -> SequentialNet:
        """A freshly initialised net (``item_counts`` feed the negative sampler)."""

    def _new_net(self, train: Interactions, ctx: FitContext) -> SequentialNet:
        """A freshly initialised net for ``train``, its item table filled from the item text
        under ``item_text: init`` (the text embeddings are kept in ``text_emb_``)."""
        cfg = self.config
        self.text_emb_: torch.Tensor | None = None
        if cfg.item_text != "none":
            if ctx.items is None:
                raise ValueError(f"item_text={cfg.item_text!r} needs item features: "
                                 "fit(train, FitContext(items=dataset.items))")
            self.text_emb_ = torch.from_numpy(item_embeddings(
                ctx.items, train.n_items, cfg.text,
                who=f"{type(self).__name__.lower()} (item_text={cfg.item_text})"))
        torch.manual_seed(ctx.seed)  # initialisation
        net = self._build_net(train.item_counts())
        if cfg.item_text == "init":
            assert self.text_emb_ is not None
            with torch.no_grad():  # rows 1..I are the items (0: padding; BERT4Rec's mask after)
                table = net.item_emb.weight
                table[1 : train.n_items + 1] = text_init(self.text_emb_, table.shape[1])
        return net

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        cfg = self.config
        self.net_ = self._new_net(train, ctx)
        seq = train.histories().padded(cfg.max_len + 1)                # (U, L + 1)
        inputs, targets = seq[:, :-1], seq[:, 1:]                      # (U, L) each
        keep = (targets > 0).any(dim=1)                                # users with a next item
        _log.info("%s: %d training sequences, %d items, %d parameters", type(self).__name__,
                  int(keep.sum()), train.n_items, sum(p.numel() for p in self.net_.parameters()))
        self.train_result_ = self._train_net(self.net_, (inputs[keep], targets[keep]), train,
                                             ctx, cfg.train)

    score_batch: int = 256
    """Rows per forward pass when scoring a padding-invariant net (sorted by length)."""

    def _score(self, histories: Histories) -> torch.Tensor:
        return self._per_row(histories, self.net_.score, self.n_items_)

    def _per_row(self, histories: Histories, fn: Callable[[torch.Tensor], torch.Tensor],
                 width: int) -> torch.Tensor:
        """``fn`` (the net's ``score`` or ``query``) of every history, ``(B, width)``."""
        net = self.net_.eval()
        device = next(net.parameters()).device
        max_len = self.config.max_len
        seq = histories.padded(max_len)                                # (B, L)
        with torch.no_grad():
            if not net.padding_invariant:
                return fn(seq.to(device))                              # (B, width)
            # Rows sorted by history length, in batches padded only to their longest history:
            # no attention or recurrence over padding (ML-1M: 109 of 200 positions are real).
            lengths = torch.from_numpy(np.minimum(histories.lengths, max_len))
            order = torch.argsort(lengths, stable=True)
            out = torch.empty(len(histories), width, device=device)
            for lo in range(0, len(order), self.score_batch):
                rows = order[lo : lo + self.score_batch]
                w = max(1, int(lengths[rows].max()))
                out[rows.to(device)] = fn(seq[rows, max_len - w :].to(device))
            return out

    def query_vectors(self, histories: Histories) -> torch.Tensor:
        """Sequence states ``(B, D)``: ``score = query_vectors @ item_vectors().T``."""
        self._require_fitted()
        return self._per_row(histories, self.net_.query, self.item_vectors().shape[1]).cpu()

    def item_vectors(self) -> torch.Tensor:
        """Output item vectors ``(I, D)``."""
        self._require_fitted()
        with torch.no_grad():
            return self.net_.eval().output_table().detach().cpu()

    def _state(self) -> dict[str, torch.Tensor]:
        return {f"net.{k}": v for k, v in self.net_.state_dict().items()}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net_ = self._build_net(None)
        self.net_.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})


def text_init(text: torch.Tensor, dim: int) -> torch.Tensor:
    """The top ``dim`` principal components of text embeddings ``(I, T)``, scaled to standard
    deviation 0.02 (the spread of a fresh embedding table): ``(I, dim)``."""
    x = text.float() - text.float().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)                # v: (min(I, T), T)
    proj = x @ v[:dim].T                                               # (I, <= dim)
    if proj.shape[1] < dim:  # fewer components than dim: pad with small noise
        proj = torch.cat([proj, torch.randn(len(x), dim - proj.shape[1]) * proj.std()], 1)
    return proj * (0.02 / proj.std().clamp(min=1e-12))


def log_proposal(item_counts: np.ndarray | None, n_items: int) -> torch.Tensor:
    """Log-probabilities of the sampled-softmax proposal: popularity with add-one smoothing
    (uniform when counts are unknown, e.g. after ``load``, where no training happens)."""
    counts = np.ones(n_items) if item_counts is None else item_counts + 1.0
    return torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32))
