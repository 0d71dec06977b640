"""Rating baselines: the global mean, and regularised user + item biases.

``Biases`` is Surprise's ``BaselineOnly`` with its ALS solver (Koren 2010, section 2.1):
``r_ui ~ mu + b_u + b_i``, alternating closed-form updates
``b_u = sum_i (r_ui - mu - b_i) / (reg_u + n_u)`` and ``b_i = sum_u (r_ui - mu - b_u) /
(reg_i + n_i)``, each one ``bincount`` over all ratings.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from genrec.data.interactions import Interactions
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.base import RatingModel, known, rating_triples

__all__ = ["Biases", "BiasesConfig", "GlobalMean", "GlobalMeanConfig", "fit_biases"]


class GlobalMeanConfig(ModelConfig):
    """The global mean rating (no parameters)."""

    kind: Literal["global_mean"] = "global_mean"


class GlobalMean(RatingModel[GlobalMeanConfig]):
    """Predicts the mean training rating for every pair."""

    config_cls = GlobalMeanConfig

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        self.mu_ = rating_triples(train)[2].double().mean().float().reshape(1)

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.mu_.expand(len(users))

    def _state(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.mu_ = state["mu"]


def fit_biases(u: torch.Tensor, i: torch.Tensor, r: torch.Tensor, n_users: int, n_items: int,
               reg_u: float, reg_i: float, epochs: int
               ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """ALS estimate of ``(mu, b_u, b_i)`` (float64 sums; see the module docstring)."""
    r = r.double()
    mu = float(r.mean())
    bu = torch.zeros(n_users, dtype=torch.float64)
    bi = torch.zeros(n_items, dtype=torch.float64)
    nu = torch.bincount(u, minlength=n_users).double()
    ni = torch.bincount(i, minlength=n_items).double()
    for _ in range(epochs):
        bi = torch.bincount(i, r - mu - bu[u], minlength=n_items) / (reg_i + ni)
        bu = torch.bincount(u, r - mu - bi[i], minlength=n_users) / (reg_u + nu)
    return mu, bu.float(), bi.float()


class BiasesConfig(ModelConfig):
    """User and item biases around the global mean (Surprise ``BaselineOnly``, ALS)."""

    kind: Literal["biases"] = "biases"
    reg_u: float = Field(15.0, ge=0)
    """Shrinkage of user biases (Surprise's default)."""
    reg_i: float = Field(10.0, ge=0)
    """Shrinkage of item biases (Surprise's default)."""
    epochs: int = Field(10, ge=1)
    """Alternating passes."""


class Biases(RatingModel[BiasesConfig]):
    """``mu + b_u + b_i`` with ALS-fitted, shrunk biases."""

    config_cls = BiasesConfig

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        u, i, r = rating_triples(train)
        c = self.config
        mu, self.bu_, self.bi_ = fit_biases(u, i, r, train.n_users, train.n_items,
                                            c.reg_u, c.reg_i, c.epochs)
        self.mu_ = torch.tensor([mu], dtype=torch.float32)

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        ku, u = known(users, len(self.bu_))
        ki, i = known(items, len(self.bi_))
        return self.mu_ + torch.where(ku, self.bu_[u], 0.0) + torch.where(ki, self.bi_[i], 0.0)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu_, "bu": self.bu_, "bi": self.bi_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.mu_, self.bu_, self.bi_ = state["mu"], state["bu"], state["bi"]
