"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Layout of a checkpoint folder::

    ckpt/
      latest.json              {"dir": "epoch-0003"}  <- written last, atomically
      epoch-0002/              the previous checkpoint, kept as a fallback
      epoch-0003/
        model.safetensors      current weights
        best.safetensors       weights of the best validation epoch (absent before the first)
        optimizer.safetensors  optimizer state tensors, keys "state.<param>.<name>"
        optimizer.json         the rest of the optimizer state (param groups, scalars)
        rng.safetensors        RNG states as uint8 tensors, one per process
        state.json             epoch, step, best metric, early-stopping counter, history,
                               the experiment identity a resume must match

Each file is written atomically (``state.json`` last, so a folder without it is incomplete),
and a checkpoint becomes visible only when ``latest.json`` points at its folder, so a crash
mid-write leaves the previous checkpoint intact. The two newest checkpoints are kept: when
the newest cannot be read (a truncated file, a disk error), :func:`load_checkpoint` warns and
falls back to the one before it; when none can be read it raises :class:`CheckpointError`.
Tensors are read into memory, never memory-mapped (a file truncated later cannot SIGBUS).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save_file

from genrec._io import atomic_write, atomic_write_text

__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "flatten_optimizer_state", "unflatten_optimizer_state"]

_log = logging.getLogger(__name__)

_LATEST = "latest.json"


class CheckpointError(RuntimeError, ValueError):
    """Checkpoints exist but none can be read (a ValueError too, so that the command line
    reports it as one line of input error)."""


@dataclass
class Checkpoint:
    """Everything needed to continue training exactly where it stopped.

    Attributes:
        model: Current weights (a ``state_dict``).
        optimizer: The optimizer ``state_dict``.
        rng: RNG states as uint8 tensors, e.g. ``"torch_cpu.rank0"``.
        meta: JSON-able training state (epoch, step, best metric, history...).
        best: Weights of the best validation epoch so far, if any.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    best: dict[str, torch.Tensor] | None = None


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor],
                                                                   dict[str, Any]]:
    """Split an optimizer ``state_dict`` into flat tensors and a JSON-able rest.

    Returns:
        ``({"state.<param>.<name>": tensor}, {"state": {param: {name: value}},
        "param_groups": [...]})``.
    """
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for pid, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(pid), {})[name] = value
    return tensors, {"state": rest, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor],
                              rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in rest["state"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [dict(g) for g in rest["param_groups"]]
    for g in groups:
        if isinstance(g.get("betas"), list):  # JSON turned the tuple into a list
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share memory (views, tied weights)
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda p: save_file(_cpu(tensors), str(p)))


def save_checkpoint(folder: Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` as ``folder/epoch-NNNN`` and point ``latest.json`` at it.

    Once it is committed, only it and the newest epoch folder before it (the fallback) are
    kept. A folder of the same epoch already there (left by a crash, or the unreadable
    checkpoint a resume fell back from) is replaced, never mixed with.

    Returns:
        The folder of this checkpoint.
    """
    folder = Path(folder)
    name = f"epoch-{int(ckpt.meta['epoch']):04d}"
    out = folder / name
    if out.exists():  # left by a run that crashed, or unreadable: never mix old files in
        shutil.rmtree(out)
    out.mkdir(parents=True)
    opt_tensors, opt_rest = flatten_optimizer_state(ckpt.optimizer)
    _save_tensors(out / "model.safetensors", ckpt.model)
    if ckpt.best is not None:
        _save_tensors(out / "best.safetensors", ckpt.best)
    _save_tensors(out / "optimizer.safetensors", opt_tensors)
    atomic_write_text(out / "optimizer.json", json.dumps(opt_rest))
    _save_tensors(out / "rng.safetensors", ckpt.rng)
    atomic_write_text(out / "state.json", json.dumps(ckpt.meta, indent=2))  # last: complete
    atomic_write_text(folder / _LATEST, json.dumps({"dir": name}))  # the commit point
    # Keep the checkpoint before this one as the fallback; older (or newer: stale) go.
    older = sorted(p.name for p in folder.glob("epoch-*") if p.is_dir() and p.name < name)
    keep = {name, *older[-1:]}
    for old in folder.glob("epoch-*"):
        if old.name not in keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    _log.debug("checkpoint written to %s", out)
    return out


def _latest_name(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / _LATEST).read_text())["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """Read the newest readable checkpoint; None if there is none.

    The one ``latest.json`` points at comes first; if it (or ``latest.json``) cannot be read,
    the newest other epoch folder is tried, with a warning naming what failed.

    Raises:
        CheckpointError: If checkpoints exist but none can be read.
    """
    folder = Path(folder)
    if not (folder / _LATEST).exists():  # nothing was ever committed
        return None
    latest = _latest_name(folder)
    # Older folders only: one newer than latest.json was never committed.
    others = sorted((p.name for p in folder.glob("epoch-*")
                     if p.is_dir() and (latest is None or p.name < latest)), reverse=True)
    candidates = ([latest] if latest else []) + others
    if not candidates:
        return None
    errors = []
    for name in candidates:
        try:
            ckpt = _read(folder / name)
        except Exception as e:  # noqa: BLE001 - any unreadable file means: try the previous
            why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            errors.append(f"{name}: {why}")
            _log.warning("checkpoint %s is unreadable (%s); trying the previous one",
                         folder / name, why)
            continue
        if name != latest:
            _log.warning("resuming from the older checkpoint %s", folder / name)
        return ckpt
    raise CheckpointError(
        f"no readable checkpoint in {folder} (" + "; ".join(errors) + "): remove the folder "
        "to train from scratch, or run without resume")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    # Read into memory rather than memory-map: a file truncated while the tensors are in use
    # must not be able to crash the process with SIGBUS.
    return load(path.read_bytes())


def _read(src: Path) -> Checkpoint:
    meta = json.loads((src / "state.json").read_text())
    if not isinstance(meta, dict) or "epoch" not in meta:
        raise ValueError("state.json has no epoch")
    best = src / "best.safetensors"
    if meta.get("best_epoch") and not best.exists():
        raise FileNotFoundError(f"{best} is missing (best epoch {meta['best_epoch']})")
    return Checkpoint(
        model=_tensors(src / "model.safetensors"),
        optimizer=unflatten_optimizer_state(_tensors(src / "optimizer.safetensors"),
                                            json.loads((src / "optimizer.json").read_text())),
        rng=_tensors(src / "rng.safetensors"),
        meta=meta,
        best=_tensors(best) if best.exists() else None,
    )
