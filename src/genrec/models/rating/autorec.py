"""Item-based AutoRec (Sedhain, Menon, Sanner & Xie, WWW 2015): an autoencoder over the
rating columns of the user-item matrix.

Item ``i``'s input is ``r^(i)``, its observed ratings from every user (zeros elsewhere);
``h(r) = sigmoid(V r + b)``, ``r_hat = W h(r) + c``, and the loss counts only the observed
entries::

    min  sum_i || (r^(i) - r_hat(r^(i))) * m^(i) ||^2  +  (lambda / 2) (||W||^2 + ||V||^2)

(``m^(i)`` the mask of observed ratings). ``r_hat_ui`` is the prediction of user ``u``'s rating
of item ``i``. I-AutoRec is the paper's stronger variant on MovieLens (ML-1M RMSE 0.831 vs
biased MF 0.845 in its Table 2). Trained with Adam on mini-batches of items, the weight
penalty written out (not Adam's coupled weight decay), the best validation epoch kept when the
fit context has a validation callback. Users or items without training ratings get the global
mean plus the known biases' share (here: the global mean), never an error; the paper's
"default rating of 3" is not used.

The saved state holds the training ratings (the model's input at prediction time) as a
sparse COO triple, so a loaded model predicts exactly what the fitted one did.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from genrec.data.interactions import Interactions
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.base import BestEpoch, RatingModel, known, rating_triples

__all__ = ["AutoRec", "AutoRecConfig"]

_log = logging.getLogger(__name__)


class AutoRecConfig(ModelConfig):
    """I-AutoRec hyperparameters (defaults: the paper's hidden width; lambda and the
    optimiser settings chosen on a validation hold-out of u1.base, see BENCHMARKS.md)."""

    kind: Literal["autorec"] = "autorec"
    hidden: int = Field(500, ge=1)
    """Hidden units (the paper uses 500)."""
    reg: float = Field(100.0, ge=0)
    """lambda: weight of ``(||W||^2 + ||V||^2) / 2`` against the summed squared error."""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate."""
    batch_items: int = Field(128, ge=1)
    """Items (input rows) per step."""
    epochs: int = Field(300, ge=1)
    """Passes over the items."""
    patience: int | None = Field(20, ge=1)
    """With a validation callback: stop after this many epochs without improvement."""


class _Net(nn.Module):
    def __init__(self, n_users: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(n_users, hidden)
        self.decoder = nn.Linear(hidden, n_users)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.sigmoid(self.encoder(x)))


class AutoRec(RatingModel[AutoRecConfig]):
    """I-AutoRec (learned: ``net_``, ``mu_``, the training ratings ``rows_/cols_/vals_``)."""

    config_cls = AutoRecConfig

    def _inputs(self, items: torch.Tensor) -> torch.Tensor:
        """Dense input rows ``(len(items), n_users)`` of the given items."""
        return self.matrix_.index_select(0, items).to_dense()

    def _set_ratings(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor) -> None:
        self.rows_, self.cols_, self.vals_ = rows, cols, vals
        # Invariants checked: a loaded file with out-of-range ids is an error, not a crash.
        self.matrix_ = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), vals, (self.n_items_, self.n_users_),
            check_invariants=True).coalesce()
        self.item_seen_ = torch.bincount(rows, minlength=self.n_items_) > 0
        self.user_seen_ = torch.bincount(cols, minlength=self.n_users_) > 0

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        c = self.config
        u, i, r = rating_triples(train)
        self.mu_ = r.double().mean().float().reshape(1)
        self._set_ratings(i, u, r)                           # rows are items
        torch.manual_seed(ctx.seed)
        g = torch.Generator().manual_seed(ctx.seed)
        self.net_ = _Net(self.n_users_, c.hidden)
        opt = torch.optim.Adam(self.net_.parameters(), lr=c.lr)
        rated = torch.nonzero(self.item_seen_).squeeze(1)  # items with at least one rating
        weights = [self.net_.encoder.weight, self.net_.decoder.weight]
        keeper = BestEpoch(c.patience)
        self.epochs_run_ = 0
        for epoch in range(c.epochs):
            self.net_.train()
            for b in rated[torch.randperm(len(rated), generator=g)].split(c.batch_items):
                x = self._inputs(b)                                       # (B, U)
                err = ((self.net_(x) - x) * (x != 0)).square().sum()
                penalty = sum(w.square().sum() for w in weights)
                # The per-batch share of the penalty, so one epoch adds lambda/2 ||.||^2 once.
                loss = err + 0.5 * c.reg * penalty * (len(b) / len(rated))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            self.epochs_run_ = epoch + 1
            self.net_.eval()
            if ctx.validate is not None and keeper.update(epoch + 1, float(ctx.validate(self)),
                                                          self.net_.state_dict):
                break
        if keeper.state is not None:
            self.net_.load_state_dict(keeper.state)
            self.best_epoch_ = keeper.best_epoch
            _log.info("autorec: best validation epoch %d of %d", keeper.best_epoch,
                      self.epochs_run_)
        self.net_.eval()

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        ku, u = known(users, self.n_users_)
        ki, i = known(items, self.n_items_)
        ok = ku & ki
        ok &= self.user_seen_[u] & self.item_seen_[i]
        out = self.mu_.expand(len(users)).clone()
        if ok.any():
            uniq, where = torch.unique(i[ok], return_inverse=True)
            recon = self.net_(self._inputs(uniq))                       # (n_uniq, U)
            out[ok] = recon[where, u[ok]]
        return out

    def _state(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu_, "rows": self.rows_, "cols": self.cols_, "vals": self.vals_,
                **{f"net.{k}": v for k, v in self.net_.state_dict().items()}}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.mu_ = state["mu"]
        self._set_ratings(state["rows"], state["cols"], state["vals"])
        self.net_ = _Net(self.n_users_, self.config.hidden)
        self.net_.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.net_.eval()
