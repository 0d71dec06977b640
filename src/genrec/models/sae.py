"""RecSAE: a TopK sparse autoencoder over a recommender's hidden states.

Trained on the final hidden states of a sequential model (SASRec's ``ln_f`` output, the
vector that is dotted with every item embedding to score items), it rewrites each state as a
sparse sum of ``k`` of ``n_latents`` learned directions (Gao et al., "Scaling and evaluating
sparse autoencoders", 2024)::

    z     = TopK(W_enc (x - b_pre) + b_enc)        # exactly k kept pre-activations, ReLU'd
    x_hat = W_dec z + b_pre                        # W_dec columns have unit norm

TopK fixes the sparsity directly (no L1 coefficient to tune), and the AuxK loss (the top
``aux_k`` *dead* latents reconstruct the residual) keeps latents from dying. Latents are
labelled with item-metadata concepts and tested by substitution and steering in
:mod:`genrec.evaluation.concepts`.

``fit(x) -> self`` follows the sklearn shape: ``x`` is ``(N, D)`` hidden states; learned
state ends in ``_``; ``save`` / ``load`` write ``config.json`` + ``state.safetensors``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from genrec._io import atomic_write_text
from genrec.models.base import NotFittedError

__all__ = ["RecSAE", "SAEConfig", "TopKSAENet", "explained_variance"]

_log = logging.getLogger(__name__)


class SAEConfig(BaseModel):
    """TopK sparse autoencoder hyperparameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_latents: int = Field(512, ge=1)
    """Dictionary size (8x a 64-wide SASRec)."""
    k: int = Field(16, ge=1)
    """Latents kept per input (the TopK)."""
    aux_k: int = Field(64, ge=0)
    """Dead latents that reconstruct the residual in the AuxK loss (0: no AuxK loss)."""
    aux_coef: float = Field(1 / 32, ge=0)
    """Weight of the AuxK loss."""
    dead_after: int = Field(20_000, ge=1)
    """A latent that has not fired for this many training inputs counts as dead (AuxK)."""
    epochs: int = Field(30, ge=1)
    """Passes over the hidden states."""
    batch_size: int = Field(512, ge=1)
    """Inputs per step."""
    lr: float = Field(2e-3, gt=0)
    """Adam learning rate (linearly decayed to 0 over the last 20% of steps)."""
    seed: int = 0
    """Initialisation and shuffling seed."""


class TopKSAENet(nn.Module):
    """The autoencoder: ``(N, D) -> (N, n_latents) -> (N, D)``.

    Args:
        dim: Input width ``D``.
        n_latents: Dictionary size.
        k: Latents kept per input.
    """

    def __init__(self, dim: int, n_latents: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.b_pre = nn.Parameter(torch.zeros(dim))
        self.encoder = nn.Linear(dim, n_latents)
        w = torch.randn(dim, n_latents)
        self.W_dec = nn.Parameter(w / w.norm(dim=0, keepdim=True))     # (D, n) unit columns
        with torch.no_grad():  # tied initialisation, as Gao et al.
            self.encoder.weight.copy_(self.W_dec.T)
            self.encoder.bias.zero_()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``W_enc (x - b_pre) + b_enc``, shape ``(N, n_latents)``."""
        return self.encoder(x - self.b_pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes ``(N, n_latents)``: the top ``k`` pre-activations of each row,
        ReLU'd; every other entry is 0."""
        pre = self.pre_activations(x)
        top = pre.topk(self.k, dim=1)                                  # (N, k) each
        return torch.zeros_like(pre).scatter_(1, top.indices, F.relu(top.values))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``W_dec z + b_pre``, shape ``(N, D)``."""
        return z @ self.W_dec.T + self.b_pre

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction (N, D), codes (N, n_latents))``."""
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale the decoder columns to unit norm (so activations carry the magnitude)."""
        self.W_dec /= self.W_dec.norm(dim=0, keepdim=True).clamp(min=1e-8)


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over the rows of ``(N, D)``."""
    resid = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum().clamp(min=1e-12)
    return float(1 - resid / total)


class RecSAE:
    """A TopK SAE fitted on hidden states.

    Args:
        config: Hyperparameters (defaults: :class:`SAEConfig`).
        **overrides: Fields that replace those of ``config``.

    Attributes:
        net_: The trained :class:`TopKSAENet`.
        history_: Per epoch (epoch 0 = before training): explained variance and dead-latent
            share on the training inputs, and the mean loss of the epoch.
        fit_seconds_: Training wall time.
    """

    def __init__(self, config: SAEConfig | None = None, **overrides: object) -> None:
        merged = (config or SAEConfig()).model_dump() | overrides
        self.config = SAEConfig.model_validate(merged)

    def _check(self) -> TopKSAENet:
        if not hasattr(self, "net_"):
            raise NotFittedError(type(self).__name__)
        return self.net_

    def fit(self, x: torch.Tensor) -> Self:
        """Train on hidden states ``x`` ``(N, D)``.

        Returns:
            self.
        """
        cfg = self.config
        x = x.detach().float().cpu()
        n, dim = x.shape
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        net = TopKSAENet(dim, cfg.n_latents, cfg.k)
        with torch.no_grad():
            net.b_pre.copy_(x.mean(0))  # centre first: the mean is no concept
        self.net_ = net
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        steps_per_epoch = max(1, -(-n // cfg.batch_size))
        total = steps_per_epoch * cfg.epochs
        decay_from = int(0.8 * total)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 1.0 if s < decay_from else max(0.0, (total - s) / (total - decay_from)))
        since_fired = torch.zeros(cfg.n_latents, dtype=torch.long)
        var = (x - x.mean(0)).pow(2).sum(1).mean()                     # per-row variance
        self.history_: list[dict[str, float | None]] = [self._epoch_record(x, 0, None)]
        t0 = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            perm = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            for lo in range(0, n, cfg.batch_size):
                xb = x[perm[lo : lo + cfg.batch_size]]                 # (B, D)
                pre = net.pre_activations(xb)                          # (B, n)
                top = pre.topk(cfg.k, dim=1)
                z = torch.zeros_like(pre).scatter(1, top.indices, F.relu(top.values))
                x_hat = net.decode(z)
                loss = (xb - x_hat).pow(2).sum(1).mean() / var        # normalised MSE
                fired = torch.zeros(cfg.n_latents, dtype=torch.bool)
                fired[top.indices[top.values > 0].unique()] = True
                since_fired = torch.where(fired, 0, since_fired + len(xb))
                dead = since_fired >= cfg.dead_after
                if cfg.aux_k and bool(dead.any()):
                    # AuxK: the top dead latents explain what the live ones missed.
                    kd = min(cfg.aux_k, int(dead.sum()))
                    aux_pre = pre.masked_fill(~dead, float("-inf")).topk(kd, dim=1)
                    z_aux = torch.zeros_like(pre).scatter(1, aux_pre.indices,
                                                          F.relu(aux_pre.values))
                    resid = (xb - x_hat).detach()
                    aux = (resid - z_aux @ net.W_dec.T).pow(2).sum(1).mean() / var
                    loss = loss + cfg.aux_coef * aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                net.normalize_decoder()
                loss_sum += float(loss.detach()) * len(xb)
            self.history_.append(self._epoch_record(x, epoch, loss_sum / n))
            _log.info("SAE epoch %d: loss %.4f, explained variance %.4f, dead %.3f", epoch,
                      loss_sum / n, self.history_[-1]["explained_variance"],
                      self.history_[-1]["dead_share"])
        self.fit_seconds_ = time.perf_counter() - t0
        net.eval()
        return self

    @torch.no_grad()
    def _epoch_record(self, x: torch.Tensor, epoch: int, loss: float | None
                      ) -> dict[str, float | None]:
        s = self.stats(x)
        return {"epoch": epoch, "loss": loss, "explained_variance": s["explained_variance"],
                "dead_share": s["dead_share"]}

    @torch.no_grad()
    def stats(self, x: torch.Tensor, batch_size: int = 8192) -> dict[str, float]:
        """Explained variance, dead latents (never fired on ``x``) and mean active latents.

        Args:
            x: Hidden states ``(N, D)``.
            batch_size: Rows per forward pass.

        Returns:
            ``explained_variance``, ``dead_latents``, ``dead_share``, ``mean_active``.
        """
        net = self._check()
        x = x.detach().float().cpu()
        fired = torch.zeros(net.W_dec.shape[1], dtype=torch.bool)
        recon, active = [], 0
        for lo in range(0, len(x), batch_size):
            x_hat, z = net(x[lo : lo + batch_size])
            recon.append(x_hat)
            fired |= (z > 0).any(0)
            active += int((z > 0).sum())
        dead = int((~fired).sum())
        return {"explained_variance": explained_variance(x, torch.cat(recon)),
                "dead_latents": dead, "dead_share": dead / len(fired),
                "mean_active": active / max(len(x), 1)}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes ``(N, n_latents)`` of hidden states ``(N, D)``."""
        return self._check().encode(x.float())

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(N, D)`` from codes ``(N, n_latents)``."""
        return self._check().decode(z.float())

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``, shape ``(N, D)``."""
        return self._check()(x.float())[0]

    @property
    def directions_(self) -> torch.Tensor:
        """Unit decoder directions, one row per latent: ``(n_latents, D)``."""
        return self._check().W_dec.detach().T

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` (config, input width, history) and ``state.safetensors``."""
        net = self._check()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"config": self.config.model_dump(), "dim": int(net.b_pre.shape[0]),
                "history": self.history_, "fit_seconds": getattr(self, "fit_seconds_", 0.0)}
        atomic_write_text(out / "config.json", json.dumps(meta, indent=2))
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()},
                  str(out / "state.safetensors"))

    @classmethod
    def load(cls, path: str | Path) -> RecSAE:
        """Read a folder written by :meth:`save`."""
        src = Path(path)
        meta = json.loads((src / "config.json").read_text(encoding="utf-8"))
        sae = cls(SAEConfig.model_validate(meta["config"]))
        net = TopKSAENet(meta["dim"], sae.config.n_latents, sae.config.k)
        net.load_state_dict(load_file(str(src / "state.safetensors")))
        sae.net_ = net.eval()
        sae.history_ = meta["history"]
        sae.fit_seconds_ = meta["fit_seconds"]
        return sae
