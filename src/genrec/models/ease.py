"""EASE: Embarrassingly Shallow Autoencoders (Steck, WWW 2019).

Closed form: ``P = (X^T X + lambda I)^-1``, ``B = I - P / diag(P)`` with a zero diagonal.
The inverse goes through a Cholesky factorisation in float32 (``X^T X + lambda I`` is
symmetric positive definite), about a third of the flops of a general inverse.

The model is inherently ``items^2``: two dense float32 ``(I, I)`` matrices at the peak (8 GiB
at 32k items, 298 GiB at 200k). A fit that would not fit in the available memory is refused
up front with both numbers (:class:`EASEMemoryError`) instead of dying in the allocator; past
that limit use ItemKNN, which stays sparse.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender

__all__ = ["EASEConfig", "EASE", "EASEMemoryError", "available_memory_bytes",
           "ease_memory_bytes"]

_log = logging.getLogger(__name__)


class EASEMemoryError(MemoryError):
    """EASE's dense ``items x items`` matrices would not fit in the available memory."""


def ease_memory_bytes(n_items: int) -> int:
    """Peak bytes of an EASE fit: two dense float32 ``(I, I)`` matrices at a time (the Gram
    matrix and its Cholesky factor, then the factor and the inverse)."""
    return 2 * 4 * n_items * n_items


def available_memory_bytes() -> int | None:
    """Memory this process can still take: ``MemAvailable`` of ``/proc/meminfo`` (capped by a
    cgroup v2 limit when there is one), or None where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            free = int(limit) - used
            avail = free if avail is None else min(avail, free)
    except (OSError, ValueError):
        pass
    return avail


class EASEConfig(ModelConfig):
    """EASE hyperparameters."""

    kind: Literal["ease"] = "ease"
    l2: float = Field(500.0, gt=0)
    """L2 regularisation added to the diagonal of the Gram matrix."""


class EASE(Recommender[EASEConfig]):
    """Item-item linear autoencoder with a closed-form solution."""

    config_cls = EASEConfig
    seed_dependent = False  # nothing is drawn at random: every seed fits the same model

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        need, avail = ease_memory_bytes(train.n_items), available_memory_bytes()
        if avail is not None and need > avail:
            raise EASEMemoryError(
                f"EASE on {train.n_items:,} items needs about {need / 2**30:.1f} GiB (two dense "
                f"items x items float32 matrices) but {avail / 2**30:.1f} GiB is available: "
                "use itemknn (sparse item-item, any catalogue size), or shrink the catalogue "
                "(dataset.preprocess.min_item_interactions)")
        x = train.to_csr()                                               # (U, I) sparse
        gram = torch.from_numpy((x.T @ x).toarray().astype(np.float32))  # (I, I)
        gram.diagonal().add_(self.config.l2)
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) != 0:
            raise RuntimeError("EASE: Gram matrix is not positive definite; raise l2")
        del gram
        p = torch.cholesky_inverse(chol)                                 # (I, I)
        del chol
        b = p.div_(-p.diagonal().clone())                                # B = -P / diag(P)
        b.diagonal().zero_()
        self.weights_ = b.contiguous()  # cholesky_inverse returns column-major memory

    def _score(self, histories: Histories) -> torch.Tensor:
        # scipy's CSR x dense product: histories are short, so this is a sum of a few rows
        # of B per user (measured 3x faster than torch's sparse CSR/COO matmul on CPU).
        return torch.from_numpy(histories.to_csr() @ self.weights_.numpy())  # (B, I)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.weights_ = state["weights"]
