"""The ranker network and its training loop (AdamW or Clippy, with NaN restarts).

The ranker trains on a few hundred thousand (user, candidate) rows with a loop of its own
rather than :func:`genrec.training.train`: it needs the optimizer switch (AdamW / Clippy),
the multi-task loss with the DSelect-k regulariser and, for the stability study, a loss
guard: a non-finite loss restores the last good state (weights and optimizer, saved after
every finite epoch), skips the batch and is counted; a loss above ``spike_factor`` times its
running mean is counted as a spike. Both counts go into every epoch's training record.
Like :func:`genrec.training.train` it writes a checkpoint after every epoch when given a
folder (weights, optimizer, RNG, counters; safetensors + JSON) and resumes from it, refusing
a checkpoint of another experiment.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from genrec.models.ranker.towers import MultiTaskTower
from genrec.text import ItemTextConfig
from genrec.training.checkpoint import Checkpoint, save_checkpoint
from genrec.training.clippy import Clippy
from genrec.training.loop import TrainResult, resume_checkpoint

__all__ = ["HEADS", "RankerConfig", "RankerData", "RankerNet", "head_metrics", "train_ranker"]

_log = logging.getLogger(__name__)

Head = Literal["interaction", "like", "rating"]
HEADS: tuple[str, ...] = ("interaction", "like", "rating")
"""Every task head: interaction (the candidate is the user's next item), like (and rated at
least ``like_threshold``), rating (the next item's rating, regression on positives only)."""


_LOSS_WEIGHT = {"interaction": 1.0, "like": 1.0, "rating": 0.1}
"""Default loss weight of each head (see ``RankerConfig.loss_weights``)."""


class RankerConfig(BaseModel):
    """The multi-task ranker: features, tower, heads and optimisation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tower: Literal["shared_bottom", "mmoe", "dselect_k"] = "mmoe"
    """Multi-task architecture (see :mod:`genrec.models.ranker.towers`)."""
    heads: list[Head] | None = None
    """Task heads; None: interaction, plus like and rating when the data has ratings."""
    score_weights: dict[Head, float] = Field(default_factory=lambda: {"interaction": 1.0})
    """The ranking score: sum of weight x head output (logit for interaction / like,
    predicted rating for rating); every key must be a head."""
    loss_weights: dict[Head, float] = Field(default_factory=dict)
    """Weight of each head's loss in the training objective; default 1 for interaction and
    like, 0.1 for rating (its squared error is ~30 times the logloss of a head with 1%
    positives, and at weight 1 it took over the shared experts: valid NDCG@10 0.087 vs 0.093
    on ML-100K)."""
    like_threshold: float = 4.0
    """A held-out item rated at least this is a like."""
    emb_dim: int = Field(16, ge=1)
    """Width of the user, item and category embeddings."""
    text: Literal["auto", "on", "off"] = "auto"
    """Item text embedding as a feature: auto uses it when the items have text."""
    text_config: ItemTextConfig = Field(default_factory=ItemTextConfig)
    """Template, encoder and cache of the item text embeddings."""
    text_dim: int = Field(16, ge=1)
    """Width the text embedding is projected to."""
    max_categories: int = Field(512, ge=0)
    """Most frequent item categories / genres kept as features (0: none)."""
    expert_dims: list[int] = Field(default_factory=lambda: [64])
    """Hidden widths of the shared bottom or of every expert."""
    tower_dims: list[int] = Field(default_factory=lambda: [32])
    """Hidden widths of every task tower."""
    n_experts: int = Field(4, ge=1)
    """Experts (mmoe, dselect_k; a power of two for dselect_k)."""
    k: int = Field(2, ge=1)
    """DSelect-k: selectors per task, the most experts a task uses."""
    gamma: float = Field(0.1, gt=0)
    """DSelect-k: width of the smooth-step band. Narrow enough that the gates become exactly
    sparse within the few epochs a ranker trains (ML-100K: with 1.0 the early-stopped gates
    still mixed 3-4 of 4 experts; with 0.1, at most k after two epochs)."""
    gate: Literal["static", "per_example"] = "static"
    """DSelect-k: one gate per task, or one computed from every example's input."""
    entropy_reg: float = Field(0.05, ge=0)
    """DSelect-k: weight of the selectors' entropy regulariser."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout after hidden layers."""
    user_dropout: float = Field(0.1, ge=0, le=1)
    """Share of training rows whose user id is replaced by the unknown user, so that
    anonymous and new users (served from their history alone) get a trained vector."""
    optimizer: Literal["adamw", "clippy"] = "adamw"
    """AdamW, or Clippy (Adagrad with update clipping, :class:`~genrec.training.clippy.Clippy`)."""
    lr: float = Field(1e-3, gt=0)
    """Learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decoupled weight decay / Clippy L2 penalty."""
    clippy_rel: float = Field(0.5, ge=0)
    """Clippy's relative threshold lambda_rel."""
    clippy_abs: float = Field(1e-2, ge=0)
    """Clippy's absolute threshold lambda_abs."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the global gradient norm (None: no clipping)."""
    epochs: int = Field(20, ge=1)
    """Passes over the training pairs."""
    batch_size: int = Field(1024, ge=1)
    """Pairs per step."""
    patience: int | None = Field(3, ge=1)
    """Stop after this many epochs without validation improvement (None: all epochs)."""
    valid_users: float = Field(0.1, ge=0, lt=1)
    """Share of the training users whose pairs are held out to measure the ranker itself
    (AUC / logloss per head; early stopping when the run gives no validation callback)."""
    spike_factor: float = Field(3.0, gt=1)
    """A batch loss above this times the running mean loss counts as a spike."""
    max_restarts: int = Field(10, ge=0)
    """Non-finite losses tolerated; one more stops training as diverged."""
    progress: bool = True
    """Show a progress bar."""

    @model_validator(mode="after")
    def _check(self) -> RankerConfig:
        if self.tower == "dselect_k":
            if self.n_experts < 2 or self.n_experts & (self.n_experts - 1):
                raise ValueError(f"tower dselect_k needs a power-of-two n_experts >= 2, "
                                 f"got {self.n_experts}")
            if self.k > self.n_experts:
                raise ValueError(f"k ({self.k}) cannot exceed n_experts ({self.n_experts})")
        if self.heads is not None:
            if not self.heads or len(set(self.heads)) != len(self.heads):
                raise ValueError(f"heads must be distinct and non-empty, got {self.heads}")
            for name, weights in (("score_weights", self.score_weights),
                                  ("loss_weights", self.loss_weights)):
                if missing := set(weights) - set(self.heads):
                    raise ValueError(f"{name} names heads that are not trained: "
                                     f"{sorted(missing)} (heads: {self.heads})")
        if not self.score_weights:
            raise ValueError("score_weights must weight at least one head")
        return self


@dataclass
class RankerData:
    """Training rows of the ranker, one per (example, candidate) pair.

    Attributes:
        users: User ids ``(P,)``.
        items: Candidate ids ``(P,)``.
        dense: Dense features ``(P, F)``.
        labels: Interaction and like labels ``(P, 2)`` (0/1).
        rating: Rating of the held-out item ``(P,)`` (NaN without ratings).
        valid: Pair belongs to a held-out user ``(P,)``.
    """

    users: torch.Tensor
    items: torch.Tensor
    dense: torch.Tensor
    labels: torch.Tensor
    rating: torch.Tensor
    valid: torch.Tensor

    def rows(self, mask: torch.Tensor) -> RankerData:
        """The pairs where ``mask`` holds."""
        return RankerData(*(t[mask] for t in (self.users, self.items, self.dense, self.labels,
                                              self.rating, self.valid)))

    def __len__(self) -> int:
        return len(self.users)


class RankerNet(nn.Module):
    """Embeddings + dense features -> :class:`MultiTaskTower` -> one output per head.

    Args:
        n_users: Users; row ``n_users`` of the user table is the unknown user.
        n_items: Items.
        cats: Binary item x category matrix ``(I, C)`` (buffer).
        text: Normalised item text embeddings ``(I, T)`` (buffer), or None.
        dense_mean: Mean of every dense feature over the training pairs ``(F,)``.
        dense_std: Their standard deviation ``(F,)``.
        rating_mean: Mean rating of positives (offset of the rating head).
        heads: Head names, in output order.
        cfg: The ranker config.
    """

    def __init__(self, n_users: int, n_items: int, cats: torch.Tensor,
                 text: torch.Tensor | None, dense_mean: torch.Tensor, dense_std: torch.Tensor,
                 rating_mean: float, heads: list[str], cfg: RankerConfig) -> None:
        super().__init__()
        d = cfg.emb_dim
        self.heads = heads
        self.n_users = n_users
        self.user_emb = nn.Embedding(n_users + 1, d)
        self.item_emb = nn.Embedding(n_items, d)
        for m in (self.user_emb, self.item_emb):
            nn.init.normal_(m.weight, std=0.05)
        self.register_buffer("cats", cats.float())
        self.register_buffer("dense_mean", dense_mean.float())
        self.register_buffer("dense_std", dense_std.float())
        self.register_buffer("rating_mean", torch.tensor(float(rating_mean)))
        in_dim = 2 * d + len(dense_mean)
        self.cat_proj = nn.Linear(cats.shape[1], d, bias=False) if cats.shape[1] else None
        in_dim += d if self.cat_proj is not None else 0
        self.text_proj = None
        if text is not None:
            self.register_buffer("text", text.float())
            self.text_proj = nn.Linear(text.shape[1], cfg.text_dim)
            in_dim += cfg.text_dim
        self.tower = MultiTaskTower(in_dim, len(heads), cfg.tower, cfg.expert_dims,
                                    cfg.tower_dims, cfg.n_experts, cfg.k, cfg.gamma, cfg.gate,
                                    cfg.dropout)

    def inputs(self, users: torch.Tensor, items: torch.Tensor, dense: torch.Tensor
               ) -> torch.Tensor:
        """The tower's input ``(P, D)``; users outside ``[0, n_users)`` are unknown."""
        users = torch.where((users >= 0) & (users < self.n_users), users,
                            torch.full_like(users, self.n_users))
        parts = [self.user_emb(users), self.item_emb(items),
                 (dense - self.dense_mean) / self.dense_std]
        if self.cat_proj is not None:
            c = self.cats[items]                                       # (P, C)
            parts.append(self.cat_proj(c) / c.sum(1, keepdim=True).clamp_min(1))
        if self.text_proj is not None:
            parts.append(self.text_proj(self.text[items]))
        return torch.cat(parts, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor, dense: torch.Tensor
                ) -> torch.Tensor:
        """Head outputs ``(P, H)``: logits, and the predicted rating for the rating head."""
        out = self.tower(self.inputs(users, items, dense))
        if "rating" in self.heads:
            i = self.heads.index("rating")
            out = torch.cat([out[:, :i], out[:, i : i + 1] + self.rating_mean, out[:, i + 1 :]], 1)
        return out

    def loss(self, data: RankerData, weights: dict[str, float], entropy_reg: float
             ) -> torch.Tensor:
        """Weighted multi-task loss of a batch (+ the DSelect-k regulariser)."""
        out = self(data.users, data.items, data.dense)
        total = torch.zeros(())
        for i, head in enumerate(self.heads):
            if head == "rating":
                pos = data.labels[:, 0] > 0
                if not pos.any():
                    continue
                term = F.mse_loss(out[pos, i], data.rating[pos])
            else:
                target = data.labels[:, HEADS.index(head)]
                term = F.binary_cross_entropy_with_logits(out[:, i], target)
            total = total + weights.get(head, _LOSS_WEIGHT[head]) * term
        if entropy_reg:
            total = total + entropy_reg * self.tower.regulariser()
        return total


def _optimizer(net: nn.Module, cfg: RankerConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "clippy":
        return Clippy(params, lr=cfg.lr, lambda_rel=cfg.clippy_rel, lambda_abs=cfg.clippy_abs,
                      weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _finite(net: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in net.parameters())


def train_ranker(net: RankerNet, data: RankerData, cfg: RankerConfig, *,
                 validate: Callable[[], float] | None, seed: int, valid_metric: str,
                 checkpoint_dir: str | Path | None = None, resume: bool = False,
                 identity: dict[str, Any] | None = None
                 ) -> tuple[TrainResult, dict[str, Any]]:
    """Train ``net`` on ``data``; keep the best validated weights (the last good ones without
    ``validate``).

    Args:
        checkpoint_dir: Folder for a checkpoint after every epoch; None writes none.
        resume: Continue from the newest readable checkpoint in ``checkpoint_dir`` (a run
            that had finished trains no further and returns its recorded result).
        identity: JSON-able description of the experiment stored in every checkpoint;
            resuming under another is refused.

    Returns:
        The per-epoch record (loss, lr, seconds, ``nan_restarts``, ``loss_spikes``, metric)
        and the totals ``{"nan_restarts", "loss_spikes", "diverged"}``.

    Raises:
        ResumeMismatchError: If the checkpoint to resume belongs to another experiment.
    """
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    ckpt, identity = resume_checkpoint(ckpt_dir, resume, identity)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = _optimizer(net, cfg)
    result = TrainResult()
    best: dict[str, torch.Tensor] | None = None
    start, bad_evals, restarts, spikes, diverged = 0, 0, 0, 0, False
    ema: float | None = None
    if ckpt is not None:
        net.load_state_dict(ckpt.model)
        opt.load_state_dict(ckpt.optimizer)
        gen.set_state(ckpt.rng["ranker_shuffle"])
        torch.set_rng_state(ckpt.rng["torch_cpu"])
        m = ckpt.meta
        start, bad_evals, restarts, spikes, diverged, ema = (
            m["epoch"], m["bad_evals"], m["nan_restarts"], m["loss_spikes"], m["diverged"],
            m["ema"])
        result = TrainResult(m["history"], m["best_epoch"], m["best_metric"], m["stopped_early"])
        best = ckpt.best
        _log.info("ranker: resumed from %s after epoch %d", ckpt_dir, start)
    good = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()))
    weights = dict(cfg.loss_weights)
    n_steps = -(-len(data) // cfg.batch_size)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=not cfg.progress) as progress:
        task = progress.add_task("ranker", total=cfg.epochs * n_steps,
                                 completed=start * n_steps, info="")
        for epoch in range(start, cfg.epochs):
            if diverged or result.stopped_early:  # a resumed run that had already ended
                break
            t0 = time.perf_counter()
            net.train()
            ep_restarts = ep_spikes = 0
            loss_sum, n_ok = 0.0, 0
            for rows in torch.randperm(len(data), generator=gen).split(cfg.batch_size):
                batch = data.rows(rows)
                if cfg.user_dropout:
                    drop = torch.rand(len(rows), generator=gen) < cfg.user_dropout
                    batch.users = torch.where(drop, torch.full_like(batch.users, -1), batch.users)
                loss = net.loss(batch, weights, cfg.entropy_reg)
                progress.advance(task)
                if not torch.isfinite(loss):
                    restarts += 1
                    ep_restarts += 1
                    net.load_state_dict(good[0])
                    opt.load_state_dict(good[1])
                    if restarts > cfg.max_restarts:
                        diverged = True
                        break
                    continue
                value = float(loss.detach())
                if ema is not None and value > cfg.spike_factor * ema:
                    spikes += 1
                    ep_spikes += 1
                ema = value if ema is None else 0.9 * ema + 0.1 * value
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                loss_sum += value
                n_ok += 1
            if _finite(net):
                good = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()))
            else:  # the last step broke the weights: back to the last good state
                restarts += 1
                ep_restarts += 1
                net.load_state_dict(good[0])
                opt.load_state_dict(good[1])
                diverged = diverged or restarts > cfg.max_restarts
            record: dict[str, float] = {"epoch": epoch + 1,
                                        "loss": loss_sum / n_ok if n_ok else float("nan"),
                                        "lr": cfg.lr, "nan_restarts": ep_restarts,
                                        "loss_spikes": ep_spikes}
            if validate is not None and not diverged:
                net.eval()
                with torch.no_grad():
                    value = float(validate())
                record["metric"] = value
                if result.best_metric is None or value > result.best_metric:
                    result.best_metric, result.best_epoch = value, epoch + 1
                    best, bad_evals = copy.deepcopy(net.state_dict()), 0
                else:
                    bad_evals += 1
                result.stopped_early = (cfg.patience is not None and bad_evals >= cfg.patience
                                        and epoch + 1 < cfg.epochs)
            record["seconds"] = time.perf_counter() - t0
            result.history.append(record)
            shown = f", valid {valid_metric} {record['metric']:.4f}" if "metric" in record else ""
            progress.update(task, info=f"epoch {epoch + 1} loss {record['loss']:.4f}{shown}")
            _log.info("ranker epoch %d/%d: loss %.4f%s, %d NaN restarts, %d spikes, %.1fs",
                      epoch + 1, cfg.epochs, record["loss"], shown, ep_restarts, ep_spikes,
                      record["seconds"])
            if ckpt_dir is not None:
                save_checkpoint(ckpt_dir, Checkpoint(
                    net.state_dict(), opt.state_dict(),
                    {"ranker_shuffle": gen.get_state(), "torch_cpu": torch.get_rng_state()},
                    {"epoch": epoch + 1, "bad_evals": bad_evals, "nan_restarts": restarts,
                     "loss_spikes": spikes, "diverged": diverged, "ema": ema,
                     "best_epoch": result.best_epoch, "best_metric": result.best_metric,
                     "stopped_early": result.stopped_early, "history": result.history,
                     "identity": identity}, best))
            if diverged:
                _log.warning("ranker training diverged: %d non-finite losses (max_restarts "
                             "%d); keeping the last good weights", restarts, cfg.max_restarts)
                break
            if result.stopped_early:
                break
    net.load_state_dict(best if best is not None else good[0])
    net.eval()
    return result, {"nan_restarts": restarts, "loss_spikes": spikes, "diverged": diverged}


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC by ranks (ties averaged); None with a single class."""
    pos = y > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    # average ranks over ties
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def head_metrics(net: RankerNet, data: RankerData, batch_size: int = 65536) -> dict[str, float]:
    """AUC and logloss of every binary head, RMSE of the rating head, on ``data``."""
    if not len(data):
        return {}
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(data.users[i : i + batch_size], data.items[i : i + batch_size],
                             data.dense[i : i + batch_size])
                         for i in range(0, len(data), batch_size)])
    metrics: dict[str, float] = {"pairs": float(len(data))}
    for i, head in enumerate(net.heads):
        if head == "rating":
            pos = data.labels[:, 0] > 0
            if pos.any():
                metrics["rating_rmse"] = float(((out[pos, i] - data.rating[pos]) ** 2)
                                               .mean().sqrt())
            continue
        y = data.labels[:, HEADS.index(head)]
        metrics[f"{head}_logloss"] = float(F.binary_cross_entropy_with_logits(out[:, i], y))
        auc = _auc(y.numpy(), out[:, i].numpy())
        if auc is not None:
            metrics[f"{head}_auc"] = auc
    return metrics
