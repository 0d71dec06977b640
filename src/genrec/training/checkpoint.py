"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Layout of a checkpoint folder::

    ckpt/
      latest.json              {"dir": "epoch-0003"}  <- written last, atomically
      epoch-0003/
        model.safetensors      current weights
        best.safetensors       weights of the best validation epoch (absent before the first)
        optimizer.safetensors  optimizer state tensors, keys "state.<param>.<name>"
        optimizer.json         the rest of the optimizer state (param groups, scalars)
        rng.safetensors        RNG states as uint8 tensors, one per process
        state.json             epoch, step, best metric, early-stopping counter, history

Each file is written atomically, and a checkpoint becomes visible only when ``latest.json``
points at its folder, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from genrec._io import atomic_write, atomic_write_text

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "flatten_optimizer_state",
           "unflatten_optimizer_state"]

_log = logging.getLogger(__name__)

_LATEST = "latest.json"


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

    Older epoch folders are removed once the new one is in place.

    Returns:
        The folder of this checkpoint.
    """
    folder = Path(folder)
    name = f"epoch-{int(ckpt.meta['epoch']):04d}"
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_rest = flatten_optimizer_state(ckpt.optimizer)
    _save_tensors(out / "model.safetensors", ckpt.model)
    if ckpt.best is not None:
        _save_tensors(out / "best.safetensors", ckpt.best)
    _save_tensors(out / "optimizer.safetensors", opt_tensors)
    atomic_write_text(out / "optimizer.json", json.dumps(opt_rest))
    _save_tensors(out / "rng.safetensors", ckpt.rng)
    atomic_write_text(out / "state.json", json.dumps(ckpt.meta, indent=2))
    atomic_write_text(folder / _LATEST, json.dumps({"dir": name}))  # the commit point
    for old in folder.glob("epoch-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    _log.debug("checkpoint written to %s", out)
    return out


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """Read the checkpoint ``latest.json`` points at; None if there is none."""
    folder = Path(folder)
    latest = folder / _LATEST
    if not latest.exists():
        return None
    src = folder / json.loads(latest.read_text())["dir"]
    best = src / "best.safetensors"
    return Checkpoint(
        model=load_file(str(src / "model.safetensors")),
        optimizer=unflatten_optimizer_state(load_file(str(src / "optimizer.safetensors")),
                                            json.loads((src / "optimizer.json").read_text())),
        rng=load_file(str(src / "rng.safetensors")),
        meta=json.loads((src / "state.json").read_text()),
        best=load_file(str(best)) if best.exists() else None,
    )
