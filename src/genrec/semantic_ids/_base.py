"""What every semantic-ID tokenizer shares: residual quantisation and the sklearn shape.

A tokenizer maps item vectors ``(n, D)`` to codes ``(n, L)``: one code in ``0..K-1`` per
level. ``fit(item_emb) -> self`` learns ``codebooks_`` ``(L, K, d)``; ``transform(item_emb)``
quantises residually: level ``l`` picks the codeword nearest to what levels ``< l`` left
unexplained. Tokenizers save their learned tensors with :meth:`Tokenizer.state` and come
back with :meth:`Tokenizer.from_state` (safetensors-friendly: a flat dict of tensors).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from genrec.semantic_ids._kmeans import nearest

__all__ = ["NotFittedError", "Tokenizer", "TokenizerConfig", "residual_quantize"]


class NotFittedError(RuntimeError):
    """Raised when a tokenizer is used before ``fit``."""


class TokenizerConfig(BaseModel):
    """Settings every tokenizer has."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str
    n_levels: int = Field(3, ge=1)
    """Code levels ``L`` (before the dedup level that a model appends)."""
    codebook_size: int = Field(256, ge=2)
    """Codes per level ``K``."""
    seed: int = 0
    """Seeds k-means and (RQ-VAE) initialisation and batching."""


def residual_quantize(x: torch.Tensor,
                      codebooks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy residual quantisation of ``x`` ``(n, d)`` with ``codebooks`` ``(L, K, d)``.

    Returns:
        ``(codes (n, L) long, reconstruction (n, d))``: the sum of the chosen codewords.
    """
    residual = x.float()
    recon = torch.zeros_like(residual)
    codes = []
    for book in codebooks:                                             # (K, d)
        c = nearest(residual, book)                                    # (n,)
        codes.append(c)
        recon = recon + book[c]
        residual = residual - book[c]
    return torch.stack(codes, 1) if codes else torch.zeros(len(x), 0, dtype=torch.long), recon


class Tokenizer(ABC):
    """Base of semantic-ID tokenizers (sklearn transformer shape).

    Args:
        config: Validated settings; defaults to ``config_cls()``.
        **overrides: Fields that replace those of ``config``.
    """

    config_cls: ClassVar[type[TokenizerConfig]]

    def __init__(self, config: TokenizerConfig | None = None, **overrides: Any) -> None:
        merged = (config or self.config_cls()).model_dump() | overrides  # type: ignore[call-arg]
        self.config = self.config_cls.model_validate(merged)

    @abstractmethod
    def fit(self, item_emb: np.ndarray | torch.Tensor) -> Self:
        """Learn ``codebooks_`` from item vectors ``(n, D)``; returns ``self``."""

    @abstractmethod
    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors that the codebooks quantise (identity, or an encoder)."""

    def transform(self, item_emb: np.ndarray | torch.Tensor, *,
                  chunk_size: int = 65_536) -> np.ndarray:
        """Codes ``(n, L)`` int64 of item vectors ``(n, D)`` (no dedup level).

        Items are coded ``chunk_size`` rows at a time (each row's code depends on that row
        only), so the residuals and reconstructions of a million items never exist at once:
        coding 1M 384-d items held 8.6 GB at its peak in one block.

        Raises:
            NotFittedError: Before ``fit``.
        """
        if not hasattr(self, "codebooks_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() first")
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(item_emb), dtype=torch.float32)
            parts = [residual_quantize(self._latent(x[lo : lo + chunk_size]), self.codebooks_)[0]
                     for lo in range(0, len(x), chunk_size)]
            codes = torch.cat(parts) if parts else \
                residual_quantize(self._latent(x), self.codebooks_)[0]
        return codes.numpy()

    def fit_transform(self, item_emb: np.ndarray | torch.Tensor) -> np.ndarray:
        """``fit(item_emb).transform(item_emb)``."""
        return self.fit(item_emb).transform(item_emb)

    def reconstruct(self, item_emb: np.ndarray | torch.Tensor) -> np.ndarray:
        """The quantised approximation of each vector, in the latent space ``(n, d)``."""
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(item_emb), dtype=torch.float32)
            _, recon = residual_quantize(self._latent(x), self.codebooks_)
        return recon.numpy()

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Learned tensors (a flat dict; safetensors-ready)."""
        return {"codebooks": self.codebooks_.detach().cpu().contiguous()}

    @classmethod
    def from_state(cls, config: TokenizerConfig, state: dict[str, torch.Tensor]) -> Self:
        """A fitted tokenizer from ``config`` and what :meth:`state` returned."""
        tok = cls(config)
        tok._load_state(state)
        return tok

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.codebooks_ = state["codebooks"].float()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items() if k != "kind")
        return f"{type(self).__name__}({params})"
