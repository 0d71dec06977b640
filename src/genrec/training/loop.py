"""One explicit training loop for every torch model in genrec.

The contract with a model is nanoGPT's: ``net(*batch)`` returns ``(output, loss)`` with a
scalar ``loss``, where ``batch`` is one row-slice of the ``data`` tensors. The loop owns
everything else: AdamW, the learning-rate schedule, gradient clipping, seeding, validation and
early stopping, checkpoints and resuming, progress and logging, and data parallelism.

Distributed training needs no code change: launched by ``torchrun`` with ``WORLD_SIZE > 1``
the loop joins the process group (gloo on CPU, NCCL on GPU), wraps the model in
``DistributedDataParallel`` and gives each process every ``W``-th row of each global batch
(the ``DistributedSampler`` scheme), so ``batch_size`` stays the global batch. Only rank 0
validates and writes checkpoints; the metric is broadcast so every process takes the same
early-stopping decision.

A net may declare parameters with sparse gradients (``net.sparse_parameters()``, e.g. a large
item table read by sparse lookups): those are updated by a lazy Adam that touches only the
rows of each step's gradient (:class:`torch.optim.SparseAdam` plus decoupled weight decay on
those rows), everything else by AdamW; clipping takes the global norm over both. Nets that
declare none train exactly as before.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.utils.deterministic
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from genrec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

__all__ = ["BENIGN_KEYS", "ResumeMismatchError", "TrainConfig", "TrainResult", "check_identity",
           "identity_diff", "is_main_process", "resume_checkpoint", "train"]

_log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """How a torch model is trained (embedded as the ``train`` field of model configs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(200, ge=1)
    """Maximum number of passes over the training rows."""
    batch_size: int = Field(128, ge=1)
    """Rows per optimizer step, summed over all processes when distributed."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decoupled weight decay, applied to matrices and embeddings (not biases, norms)."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warm-up from 0 to ``lr``."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning rate after warm-up: constant, or cosine / linear decay to 0 at the last step."""
    grad_clip: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this value; None disables clipping."""
    patience: int | None = Field(10, ge=1)
    """Stop after this many validations without improvement; None trains all epochs."""
    max_minutes: float | None = Field(None, gt=0)
    """Wall-clock budget: after the epoch during which it runs out, validate and stop (the
    best validated weights are kept, as with early stopping). The learning-rate schedule
    still spans ``epochs``. None: no limit."""
    eval_every: int = Field(1, ge=1)
    """Validate every this many epochs (and after the last one)."""
    device: Literal["cpu", "cuda", "auto"] = "auto"
    """Where to train; auto picks cuda when available."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes (0: batches are gathered in the training process)."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""


BENIGN_KEYS = ("train.epochs", "train.max_minutes", "train.progress", "train.num_workers",
               "train.device", "score_batch_size", "score_batch", "name")
"""Model config keys a resumed training may change: how long and where it runs and what it is
called, not what it learns (more epochs continue a run; the learning-rate schedule still
spans ``epochs``)."""


class ResumeMismatchError(ValueError):
    """A checkpoint was written by another experiment than the one asked to resume it."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.")
    return out


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from a checkpoint's JSON: tuples become lists, dict keys
    strings (ints stay ints and floats floats, so ``1`` and ``1.0`` compare equal)."""
    return json.loads(json.dumps(value))


def _same(a: Any, b: Any) -> bool:
    """Equality of JSON values, where NaN equals NaN (it does not survive ``==``)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def identity_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two experiment identities (dotted keys), compared
    as JSON values: ``current`` is taken as a checkpoint would store it."""
    a, b = _flat(_as_json(saved)), _flat(_as_json(current))

    def shown(d: dict[str, Any], k: str) -> str:
        text = repr(d[k]) if k in d else "<absent>"
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{k}: {shown(a, k)} in the checkpoint, {shown(b, k)} now"
            for k in sorted(set(a) | set(b))
            if k not in a or k not in b or not _same(a[k], b[k])]


def check_identity(ckpt: Checkpoint, identity: dict[str, Any], ckpt_dir: Path) -> None:
    """Refuse to resume ``ckpt`` under another experiment ``identity``.

    Raises:
        ResumeMismatchError: Naming the keys that differ.
    """
    if "identity" not in ckpt.meta:
        _log.warning("checkpoint in %s records no experiment identity (written by an older "
                     "genrec): resuming without checking that it belongs to this run", ckpt_dir)
        return
    diff = identity_diff(ckpt.meta["identity"], identity)
    if diff:
        raise ResumeMismatchError(
            f"refusing to resume {ckpt_dir}: it belongs to another experiment ("
            + "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
            + "). Resume with the original settings, or use a new output folder.")


def resume_checkpoint(ckpt_dir: Path | None, resume: bool, identity: dict[str, Any] | None
                      ) -> tuple[Checkpoint | None, dict[str, Any]]:
    """The checkpoint a training loop continues from (None: start afresh) and ``identity`` as
    checkpoints store it (JSON values). Every loop that writes checkpoints starts here.

    Raises:
        ResumeMismatchError: If the checkpoint was written under another identity.
        CheckpointError: If checkpoints exist but none can be read.
    """
    if ckpt_dir is None:  # nothing is written or read: the identity is not needed as JSON
        return None, identity or {}
    identity = _as_json(identity or {})
    ckpt = load_checkpoint(ckpt_dir) if resume and ckpt_dir is not None else None
    if ckpt is not None:
        check_identity(ckpt, identity, ckpt_dir)
    return ckpt, identity


@dataclass
class TrainResult:
    """What happened during training.

    Attributes:
        history: One entry per epoch: epoch, loss, lr, seconds, peak_mem_mb and, on
            validation epochs, metric.
        best_epoch: Epoch (1-based) whose weights were kept; 0 if never validated.
        best_metric: Its validation metric; None if never validated.
        stopped_early: True if patience ran out before ``epochs``.
        out_of_time: True if ``max_minutes`` ran out before ``epochs``.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float | None = None
    stopped_early: bool = False
    out_of_time: bool = False


class _Rows(TorchDataset):
    """Row-slices of a few aligned tensors; indexed by a whole batch of row ids at once."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t[rows] for t in self.tensors)


def _out_of_time(started: float, max_minutes: float | None, device: torch.device,
                 world: int) -> bool:
    """Whether the time budget is spent; with several processes, whether any one's is (so
    they all stop after the same epoch)."""
    if max_minutes is None:
        return False
    spent = torch.tensor(float(time.perf_counter() - started > 60 * max_minutes), device=device)
    if world > 1:
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)
    return bool(spent.item())


def _epoch_batches(n: int, seed: int, epoch: int, rank: int, world: int,
                   local_batch: int) -> list[torch.Tensor]:
    """This process's batches of row ids for ``epoch``: a seeded permutation, padded to a
    multiple of ``world`` by repeating rows, every ``world``-th row from ``rank`` on."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    pad = (-n) % world
    if pad:
        perm = torch.cat([perm, perm.repeat(math.ceil(pad / n))[:pad]])
    return list(perm[rank::world].split(local_batch))


def _lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine / linear decay (nanoGPT's ``get_lr``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    done = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
    return cfg.lr * max(0.0, 1.0 - done)


def _adamw(net: nn.Module, cfg: TrainConfig,
           exclude: Sequence[nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW that decays matrices and embeddings but not biases and norm gains (nanoGPT),
    over the parameters of ``net`` other than ``exclude``."""
    skip = {id(p) for p in exclude}
    params = [p for p in net.parameters() if p.requires_grad and id(p) not in skip]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


class _SparseAdamW(torch.optim.SparseAdam):
    """Lazy AdamW for parameters with sparse gradients: :class:`torch.optim.SparseAdam` (moments
    and updates of the rows in the gradient only) after AdamW's decoupled weight decay applied
    to those same rows (``row *= 1 - lr * weight_decay``); rows a step did not read are
    neither moved nor decayed."""

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float) -> None:
        super().__init__([{"params": params, "weight_decay": weight_decay}], lr=lr)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Decay the touched rows, then SparseAdam's step."""
        for group in self.param_groups:
            shrink = 1.0 - group["lr"] * group["weight_decay"]
            if shrink == 1.0:
                continue
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = p.grad.coalesce()
                    rows = p.grad.indices()[0]
                    p.index_copy_(0, rows, p.index_select(0, rows) * shrink)
        return super().step(closure)


class _Optimizers:
    """AdamW and the lazy AdamW of sparse-gradient parameters, stepped as one optimizer.

    The state dict has the shape of one optimizer's (the second's parameter ids and groups
    follow the first's), so checkpoints store and restore both without a format change.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every group of every optimizer (the loop sets their learning rate)."""
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient."""
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Step every optimizer."""
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        """Both states, parameter ids renumbered to follow on."""
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for o in self.optimizers:
            sd = o.state_dict()
            state |= {int(pid) + offset: v for pid, v in sd["state"].items()}
            groups += [g | {"params": [i + offset for i in g["params"]]}
                       for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(groups)} parameter groups, this "
                             f"optimizer {len(self.param_groups)} (dense vs sparse item table?)")
        offset, first = 0, 0
        for o in self.optimizers:
            mine = groups[first : first + len(o.param_groups)]
            n = sum(len(g["params"]) for g in mine)
            o.load_state_dict({
                "state": {int(pid) - offset: v for pid, v in state_dict["state"].items()
                          if offset <= int(pid) < offset + n},
                "param_groups": [g | {"params": [i - offset for i in g["params"]]}
                                 for g in mine]})
            offset += n
            first += len(o.param_groups)


def _optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer | _Optimizers:
    """AdamW over ``net``; with sparse-gradient parameters (``net.sparse_parameters()``),
    AdamW over the rest and a lazy AdamW over those."""
    declared = getattr(net, "sparse_parameters", None)
    sparse = [p for p in declared() if p.requires_grad] if callable(declared) else []
    if not sparse:
        return _adamw(net, cfg)
    return _Optimizers(_adamw(net, cfg, exclude=sparse),
                       _SparseAdamW(sparse, lr=cfg.lr, weight_decay=cfg.weight_decay))


def _clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_``, also over sparse gradients (which it cannot take): the
    global norm counts each row of a sparse gradient once its duplicates are summed."""
    grads = [p.grad for p in params if p.grad is not None]
    if not any(g.is_sparse for g in grads):
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    values = [p.grad._values() if p.grad.is_sparse else p.grad
              for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in values]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for v in values:
        v.mul_(coef)


def _device(kind: str) -> torch.device:
    """The torch device of a ``device`` setting (``auto``, ``cpu``, ``cuda``).

    Raises:
        ValueError: If ``cuda`` is asked for on a machine without a usable CUDA device.
    """
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for, but no CUDA device is available "
                             "(torch.cuda.is_available() is False); use device: auto or cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rng_states(device: torch.device, rank: int, world: int) -> dict[str, torch.Tensor]:
    """Every process's RNG states (gathered on all ranks; rank 0 writes them)."""
    mine = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["torch_cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return {f"{k}.rank0": v for k, v in mine.items()}
    out = {}
    for k, v in mine.items():
        parts = [torch.empty_like(v, device=device) for _ in range(world)]
        dist.all_gather(parts, v.to(device))
        out |= {f"{k}.rank{r}": p.cpu() for r, p in enumerate(parts)}
    return out


def _set_rng_states(states: dict[str, torch.Tensor], device: torch.device, rank: int) -> None:
    if f"torch_cpu.rank{rank}" not in states:
        _log.warning("checkpoint has no RNG state for rank %d (other world size?): "
                     "continuing with a fresh seed, so the run is not bitwise reproducible", rank)
        return
    torch.set_rng_state(states[f"torch_cpu.rank{rank}"])
    if device.type == "cuda" and f"torch_cuda.rank{rank}" in states:
        torch.cuda.set_rng_state(states[f"torch_cuda.rank{rank}"], device)


def _copy_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` launch (``RANK`` > 0): results,
    splits and saved models are written by rank 0 only."""
    return int(os.environ.get("RANK", "0")) == 0


def train(net: nn.Module, data: Sequence[torch.Tensor], cfg: TrainConfig, *,
          validate: Callable[[nn.Module], float] | None = None, seed: int = 42,
          valid_metric: str = "metric", checkpoint_dir: str | Path | None = None,
          resume: bool = False, identity: dict[str, Any] | None = None) -> TrainResult:
    """Train ``net`` on the rows of ``data``; the best validated weights are loaded at the end.

    Args:
        net: A module whose ``forward(*batch)`` returns ``(output, scalar_loss)``.
        data: Aligned CPU tensors with one row per training example (same first dimension).
        cfg: Optimisation, validation, checkpoint and device settings.
        validate: Called with ``net`` (in eval mode, without grad) on rank 0 every
            ``cfg.eval_every`` epochs; returns the validation metric, higher is better.
            None trains all epochs and keeps the final weights.
        seed: Seeds the shuffling and this process's random stream (plus the rank).
        valid_metric: Name of the validation metric (logs only).
        checkpoint_dir: Folder for a checkpoint after every epoch; None writes none.
        resume: Continue from the newest readable checkpoint in ``checkpoint_dir``.
        identity: JSON-able description of the experiment (model config, data and split
            fingerprints) stored in every checkpoint; resuming under another is refused.

    Returns:
        The per-epoch history and the best epoch.

    Raises:
        ResumeMismatchError: If the checkpoint to resume was written under another identity
            (keys of :data:`BENIGN_KEYS` left out by the caller may differ).
        CheckpointError: If ``resume`` finds checkpoints but none can be read (an
            unreadable newest one falls back to the one before it, with a warning).
    """
    if len(data[0]) == 0:
        raise ValueError("train: no training rows")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    # Read and check the checkpoint first: a refused resume changes no global state.
    ckpt, identity = resume_checkpoint(ckpt_dir, resume, identity)

    # -- processes and device ------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(cfg.device)
    created_group = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created_group = True
    rank = dist.get_rank() if world > 1 else 0
    deterministic_before = (torch.are_deterministic_algorithms_enabled(),
                            torch.is_deterministic_algorithms_warn_only_enabled(),
                            torch.utils.deterministic.fill_uninitialized_memory)
    try:
        result, best_state = _train(net, data, cfg, validate, seed, valid_metric, ckpt_dir,
                                    ckpt, identity, device, rank, world)
    finally:
        torch.use_deterministic_algorithms(deterministic_before[0],
                                           warn_only=deterministic_before[1])
        torch.utils.deterministic.fill_uninitialized_memory = (  # type: ignore[attr-defined]
            deterministic_before[2])
        if created_group:
            dist.destroy_process_group()
    if best_state is not None:
        net.load_state_dict(best_state)
    return result


def _train(net: nn.Module, data: Sequence[torch.Tensor], cfg: TrainConfig,
           validate: Callable[[nn.Module], float] | None, seed: int, valid_metric: str,
           ckpt_dir: Path | None, ckpt: Checkpoint | None, identity: dict[str, Any],
           device: torch.device, rank: int, world: int
           ) -> tuple[TrainResult, dict[str, torch.Tensor] | None]:
    """The body of :func:`train`, once the process group and the checkpoint are known;
    returns the result and the best validated weights (None if never validated)."""
    if device.type == "cpu":  # cheap on CPU; on CUDA it would slow down embedding backward
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ...but filling every torch.empty with NaN (the default in this mode) is not cheap
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.manual_seed(seed + rank)  # dropout / negative-sampling stream of this process

    net.to(device)
    model: nn.Module = net
    if world > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                        else None)
    optimizer = _optimizer(net, cfg)
    n_rows = len(data[0])
    local_batch = math.ceil(cfg.batch_size / world)
    steps_per_epoch = math.ceil(math.ceil(n_rows / world) / local_batch)
    total_steps = cfg.epochs * steps_per_epoch

    # -- state that a checkpoint carries -------------------------------------------------
    result = TrainResult()
    start_epoch, step, bad_evals = 0, 0, 0
    spent_before = 0.0  # training seconds of the run before this process resumed it
    best_state: dict[str, torch.Tensor] | None = None
    if ckpt is not None:
        net.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
        _set_rng_states(ckpt.rng, device, rank)
        meta = ckpt.meta
        start_epoch, step, bad_evals = meta["epoch"], meta["step"], meta["bad_evals"]
        result = TrainResult(meta["history"], meta["best_epoch"], meta["best_metric"],
                             meta["stopped_early"])
        # The time budget spans the whole run, not each process: a run that used its
        # max_minutes stays finished on resume (as it would uninterrupted), and one cut
        # short continues with what is left. (Checkpoints before this record: 0 s.)
        spent_before = float(meta.get("train_seconds", 0.0))
        result.out_of_time = (cfg.max_minutes is not None and start_epoch < cfg.epochs
                              and spent_before > 60 * cfg.max_minutes)
        best_state = ({k: v.to(device) for k, v in ckpt.best.items()}
                      if ckpt.best is not None else None)
        if meta.get("world_size", world) != world:
            _log.warning("resuming a %d-process run with %d processes", meta["world_size"], world)
        _log.info("resumed from %s after epoch %d (step %d)", ckpt_dir, start_epoch, step)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    progress = Progress(*columns, disable=not (cfg.progress and rank == 0))
    with progress:
        task = progress.add_task("training", total=total_steps, completed=step, info="")
        started = time.perf_counter() - spent_before
        for epoch in range(start_epoch, cfg.epochs):
            if result.stopped_early or result.out_of_time:
                break
            t0 = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            net.train()
            batches = _epoch_batches(n_rows, seed, epoch, rank, world, local_batch)
            loader = DataLoader(_Rows(data), sampler=batches, batch_size=None,
                                num_workers=cfg.num_workers,
                                generator=torch.Generator().manual_seed(seed + epoch))
            loss_sum = torch.zeros((), device=device)
            for i, batch in enumerate(loader):
                lr = _lr_at(step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = [t.to(device, non_blocking=True) for t in batch]
                _, loss = model(*batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    _clip_grad_norm(list(net.parameters()), cfg.grad_clip)
                optimizer.step()
                step += 1
                loss_sum += loss.detach()
                if i % 10 == 0:  # .item() waits for the GPU: not on every step
                    progress.update(task, info=f"epoch {epoch + 1} loss {loss.item():.4f}")
                progress.advance(task)
            if world > 1:  # mean loss over processes, for the log only
                dist.all_reduce(loss_sum)
                loss_sum /= world
            epoch_loss = loss_sum.item() / max(1, len(batches))
            if not math.isfinite(epoch_loss):
                # Checked once per epoch (a per-step check would wait for the GPU every step),
                # before this epoch is checkpointed: the last checkpoint stays a finite one.
                raise FloatingPointError(
                    f"training diverged: the mean loss of epoch {epoch + 1} is {epoch_loss} "
                    f"(lr {lr:.2e}); lower train.lr or set train.grad_clip. The last "
                    "checkpoint, if any, is the previous epoch's")

            # -- validation and early stopping (rank 0 scores, everyone decides) --------
            record: dict[str, float] = {"epoch": epoch + 1, "loss": epoch_loss, "lr": lr}
            result.out_of_time = (epoch + 1 < cfg.epochs
                                  and _out_of_time(started, cfg.max_minutes, device, world))
            if validate is not None and ((epoch + 1) % cfg.eval_every == 0
                                         or epoch + 1 == cfg.epochs or result.out_of_time):
                metric = torch.zeros((), dtype=torch.float64, device=device)
                if rank == 0:
                    net.eval()
                    with torch.no_grad():
                        metric.fill_(float(validate(net)))
                if world > 1:
                    dist.broadcast(metric, src=0)
                value = metric.item()
                record["metric"] = value
                if result.best_metric is None or value > result.best_metric:
                    result.best_metric, result.best_epoch = value, epoch + 1
                    best_state, bad_evals = _copy_state(net), 0
                else:
                    bad_evals += 1
                result.stopped_early = (cfg.patience is not None and bad_evals >= cfg.patience
                                        and epoch + 1 < cfg.epochs)
            record["seconds"] = time.perf_counter() - t0
            record["peak_mem_mb"] = _peak_mem_mb(device)
            result.history.append(record)
            shown = (f" valid {valid_metric} {record['metric']:.4f}"
                     if "metric" in record else "")
            progress.update(task, info=f"epoch {epoch + 1} loss {epoch_loss:.4f}{shown}")
            _log.info("epoch %d/%d: loss %.4f%s, lr %.2e, %.1fs, peak memory %.0f MB",
                      epoch + 1, cfg.epochs, epoch_loss, shown, lr, record["seconds"],
                      record["peak_mem_mb"])

            # -- checkpoint (all ranks gather RNG states, rank 0 writes) ----------------
            if ckpt_dir is not None:
                rng = _rng_states(device, rank, world)
                if rank == 0:
                    meta: dict[str, Any] = {
                        "epoch": epoch + 1, "step": step, "bad_evals": bad_evals,
                        "best_epoch": result.best_epoch, "best_metric": result.best_metric,
                        "stopped_early": result.stopped_early, "history": result.history,
                        "train_seconds": time.perf_counter() - started,
                        "world_size": world, "identity": identity}
                    save_checkpoint(ckpt_dir, Checkpoint(
                        net.state_dict(), optimizer.state_dict(), rng, meta, best_state))
                if world > 1:
                    dist.barrier()  # no process runs ahead of a half-written checkpoint
        if result.out_of_time:
            _log.info("time budget of %.1f minutes used after epoch %d; best epoch %d",
                      cfg.max_minutes, result.history[-1]["epoch"], result.best_epoch)
        if result.stopped_early:
            _log.info("early stop: no %s improvement in %d validations; best epoch %d (%.4f)",
                      valid_metric, cfg.patience, result.best_epoch, result.best_metric)
    return result, best_state
