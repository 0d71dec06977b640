"""RQ-VAE: residual-quantised variational autoencoder semantic IDs (TIGER, Rajput et al. 2023).

An MLP encoder maps an item vector to a small latent ``z``; ``L`` codebooks quantise ``z``
residually; an MLP decoder reconstructs the input from the sum of the chosen codewords. The
loss is the reconstruction error plus, per level, the codebook term ``||sg[r] - e||^2`` and
the commitment term ``beta * ||r - sg[e]||^2`` (``r`` the level's residual, ``e`` its
codeword, ``sg`` stop-gradient), with straight-through gradients to the encoder.

Two things keep the codebooks alive, the usual failure of RQ-VAE (codes that no item uses):
the codebooks start as residual k-means of the initial latents, and after every epoch a code
that no item uses is moved onto the residual of a random item at that level.
"""

from __future__ import annotations

import itertools
import logging
from typing import Literal, Self

import numpy as np
import torch
from pydantic import Field
from torch import nn

from genrec.semantic_ids._base import Tokenizer, TokenizerConfig
from genrec.semantic_ids._kmeans import kmeans, nearest

__all__ = ["RQVAEConfig", "RQVAENet", "RQVAETokenizer"]

_log = logging.getLogger(__name__)


class RQVAEConfig(TokenizerConfig):
    """RQ-VAE settings (defaults follow TIGER, with fewer epochs)."""

    kind: Literal["rqvae"] = "rqvae"
    latent_dim: int = Field(32, ge=1)
    """Width ``d`` of the latent and of every codeword."""
    hidden_dims: list[int] = Field(default_factory=lambda: [512, 256, 128])
    """Hidden layer widths of the encoder (the decoder mirrors them)."""
    beta: float = Field(0.25, ge=0)
    """Weight of the commitment term."""
    epochs: int = Field(200, ge=1)
    """Passes over the items."""
    batch_size: int = Field(1024, ge=1)
    """Items per step."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    kmeans_init: bool = True
    """Start the codebooks from residual k-means of the initial latents (else random items)."""
    dead_code_reset: bool = True
    """After each epoch, move codes no item uses onto random residuals of that level."""


class RQVAENet(nn.Module):
    """Encoder, ``L`` codebooks and decoder.

    Args:
        in_dim: Input width ``D``.
        hidden_dims: Encoder hidden widths.
        latent_dim: Latent width ``d``.
        n_levels: Codebooks ``L``.
        codebook_size: Codes per codebook ``K``.
    """

    def __init__(self, in_dim: int, hidden_dims: list[int], latent_dim: int, n_levels: int,
                 codebook_size: int) -> None:
        super().__init__()

        def mlp(dims: list[int]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(itertools.pairwise(dims)):
                layers.append(nn.Linear(a, b))
                if i < len(dims) - 2:
                    layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        self.encoder = mlp([in_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), in_dim])
        self.codebooks = nn.Parameter(torch.randn(n_levels, codebook_size, latent_dim) * 0.01)

    def forward(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
        """Reconstruct ``x`` ``(B, D)``.

        Returns:
            ``(reconstruction (B, D), codes (B, L), loss)``.
        """
        z = self.encoder(x)                                            # (B, d)
        quantised, codes, quant_loss, _ = self.quantise(z, beta)
        z_q = z + (quantised - z).detach()                             # straight-through
        recon = self.decoder(z_q)                                      # (B, D)
        loss = ((recon - x) ** 2).sum(-1).mean() + quant_loss
        return recon, codes, loss

    def quantise(self, z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor,
                                                               torch.Tensor, list[torch.Tensor]]:
        """Residual quantisation of latents ``z`` ``(B, d)``.

        Returns:
            ``(sum of the chosen codewords (B, d), codes (B, L), codebook + commitment loss,
            per level the residual that level quantised (B, d))``. The codewords carry
            gradients to the codebooks; the residuals to the encoder.
        """
        residual, quantised = z, torch.zeros_like(z)
        codes, quant_loss, residuals = [], z.new_zeros(()), []
        for book in self.codebooks:                                    # (K, d)
            c = nearest(residual.detach(), book.detach())              # (B,)
            e = book[c]                                                # (B, d)
            quant_loss = quant_loss + ((residual.detach() - e) ** 2).sum(-1).mean() \
                + beta * ((residual - e.detach()) ** 2).sum(-1).mean()
            residuals.append(residual)
            quantised = quantised + e
            residual = residual - e.detach()
            codes.append(c)
        return quantised, torch.stack(codes, 1), quant_loss, residuals


class RQVAETokenizer(Tokenizer):
    """RQ-VAE tokenizer: ``fit(item_emb) -> self``, ``transform(item_emb) -> codes``.

    Attributes:
        codebooks_: Codewords per level, shape ``(L, K, d)`` (in the latent space).
        net_: The trained :class:`RQVAENet`.
        history_: Per epoch: loss, and share of codes used per level before any reset.
    """

    config_cls = RQVAEConfig
    config: RQVAEConfig

    def _build(self, in_dim: int) -> RQVAENet:
        c = self.config
        return RQVAENet(in_dim, c.hidden_dims, c.latent_dim, c.n_levels, c.codebook_size)

    def fit(self, item_emb: np.ndarray | torch.Tensor) -> Self:
        """Train the autoencoder and codebooks on item vectors ``(n, D)``."""
        return self._fit(torch.as_tensor(np.asarray(item_emb), dtype=torch.float32))

    def _fit(self, x: torch.Tensor) -> Self:
        c = self.config
        n = len(x)
        gen = torch.Generator().manual_seed(c.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            net = self._build(x.shape[1])
            extra = self._extra_module(net)
        with torch.no_grad():
            z = net.encoder(x)
            if c.kmeans_init:
                residual = z.clone()
                for level in range(c.n_levels):
                    centres, labels = kmeans(residual, c.codebook_size, n_iter=20,
                                             seed=c.seed + level)
                    net.codebooks[level] = centres
                    residual -= centres[labels]
            else:
                net.codebooks.copy_(z[torch.randint(n, (c.n_levels, c.codebook_size),
                                                    generator=gen)])
        params = list(net.parameters()) + (list(extra.parameters()) if extra is not None
                                           else [])
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        self.history_: list[dict[str, float | list[float]]] = []
        for epoch in range(c.epochs):
            net.train()
            total = 0.0
            parts: dict[str, float] = {}
            for rows in torch.randperm(n, generator=gen).split(c.batch_size):
                loss, terms = self._step_loss(net, extra, x, rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
                for k, v in terms.items():
                    parts[k] = parts.get(k, 0.0) + float(v) * len(rows)
            used = self._reset_dead_codes(net, x, gen)
            self.history_.append({"epoch": epoch + 1, "loss": total / n, "used": used,
                                  **{k: v / n for k, v in parts.items()}})
            if (epoch + 1) % max(1, c.epochs // 10) == 0 or epoch + 1 == c.epochs:
                _log.info("%s epoch %d/%d: loss %.5f%s, codes used per level %s", c.kind,
                          epoch + 1, c.epochs, total / n,
                          "".join(f", {k} {v / n:.4f}" for k, v in parts.items()),
                          [f"{u:.0%}" for u in used])
        self.net_ = net.eval()
        self.codebooks_ = net.codebooks.detach().clone()
        return self

    def _extra_module(self, net: RQVAENet) -> nn.Module | None:
        """Trainable parts besides the autoencoder (none here; LETTER's projection)."""
        return None

    def _step_loss(self, net: RQVAENet, extra: nn.Module | None, x: torch.Tensor,
                   rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch ``rows`` and its named extra terms (logged per epoch)."""
        _, _, loss = net(x[rows], self.config.beta)
        return loss, {}

    def _reset_dead_codes(self, net: RQVAENet, x: torch.Tensor,
                          gen: torch.Generator) -> list[float]:
        """Share of codes used per level; unused ones move onto random residuals.

        A moved code sits exactly on the residual of an item of a shared code, so it wins
        that item; it may also win every item of another code, which then is dead in turn,
        so the move repeats (at most 10 rounds) until each code has an item.
        """
        used = []
        with torch.no_grad():
            residual = net.encoder(x)                                  # (n, d)
            for book in net.codebooks:                                 # (K, d), a view
                c = nearest(residual, book)
                counts = torch.bincount(c, minlength=len(book))
                used.append(float((counts > 0).float().mean()))
                for _ in range(10 if self.config.dead_code_reset else 0):
                    dead = torch.nonzero(counts == 0).flatten()
                    shared = torch.nonzero(counts[c] > 1).flatten()     # items of shared codes
                    if not len(dead) or not len(shared):
                        break
                    pick = shared[torch.randperm(len(shared), generator=gen)[: len(dead)]]
                    book[dead[: len(pick)]] = residual[pick]
                    c = nearest(residual, book)
                    counts = torch.bincount(c, minlength=len(book))
                residual = residual - book[c]
        return used

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.net_.encoder(x)

    def state(self) -> dict[str, torch.Tensor]:
        """Codebooks and autoencoder weights."""
        return {"codebooks": self.codebooks_.contiguous(),
                **{f"net.{k}": v.detach().contiguous() for k, v in self.net_.state_dict().items()}}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        in_dim = state["net.encoder.0.weight"].shape[1]
        self.net_ = self._build(in_dim).eval()
        self.net_.load_state_dict({k.removeprefix("net."): v for k, v in state.items()
                                   if k.startswith("net.")})
        self.codebooks_ = state["codebooks"].float()
        self.history_ = []

