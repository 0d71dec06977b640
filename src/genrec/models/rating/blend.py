"""A linear blend of rating models (the Netflix-prize recipe, Töscher & Jahrer 2009, kept
small): ``r_ui ~ w_0 + sum_k w_k f_k(u, i)``.

The weights are a ridge regression fitted on a seeded hold-out of the *training* ratings
only: the members are fitted on the rest, predict the hold-out, the weights are solved, and
(with ``refit``) every member is fitted again on all the training ratings it was given. The
test ratings are never seen, so the blend's number is as honest as its members'.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from genrec.data.interactions import Columns, Interactions
from genrec.data.ratings import holdout
from genrec.models.base import FitContext, ModelConfig
from genrec.models.rating.autorec import AutoRec, AutoRecConfig
from genrec.models.rating.base import RatingModel
from genrec.models.rating.baseline import Biases, BiasesConfig
from genrec.models.rating.knn import KNNBaseline, KNNBaselineConfig
from genrec.models.rating.mf import BiasedMF, BiasedMFConfig
from genrec.models.rating.svdpp import SVDpp, SVDppConfig

__all__ = ["Blend", "BlendConfig"]

_log = logging.getLogger(__name__)

# The blendable kinds. Not the registry itself: the registry lists the blend, so importing it
# here would be a cycle.
_MEMBERS: dict[str, type[RatingModel[Any]]] = {
    "biases": Biases, "biased_mf": BiasedMF, "knn_baseline": KNNBaseline, "svdpp": SVDpp,
    "autorec": AutoRec}

MemberConfig = Annotated[BiasesConfig | BiasedMFConfig | KNNBaselineConfig | SVDppConfig
                         | AutoRecConfig,
                         Field(discriminator="kind")]


def _default_members() -> list[Any]:
    # Diverse members: I-AutoRec (the strongest single model on ML-100K, under a minute per
    # fold), ALS factors, item- and user-kNN, biases (seconds each).
    return [AutoRecConfig(), BiasedMFConfig(solver="als", factors=50, reg=0.1, epochs=15),
            KNNBaselineConfig(), KNNBaselineConfig(user_based=True), BiasesConfig()]


class BlendConfig(ModelConfig):
    """A ridge blend of rating models, weights fitted on a hold-out of the training part."""

    kind: Literal["blend"] = "blend"
    members: list[MemberConfig] = Field(default_factory=_default_members, min_length=1)
    """The blended models (a kind may appear more than once, with other settings)."""
    holdout: float = Field(0.1, gt=0, lt=1)
    """Share of the training ratings the weights are fitted on."""
    ridge: float = Field(1.0, ge=0)
    """L2 penalty of the weights (not of the intercept)."""
    refit: bool = True
    """Fit the members again on all training ratings after the weights are found."""


class Blend(RatingModel[BlendConfig]):
    """A linear blend of rating models (learned: ``members_``, ``weights_``, ``intercept_``)."""

    config_cls = BlendConfig

    def _build(self) -> list[RatingModel[Any]]:
        return [_MEMBERS[m.kind](m) for m in self.config.members]

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        c = self.config
        names = [f"{k}:{m.label}" for k, m in enumerate(c.members)]
        inner, held = holdout(train, c.holdout, ctx.seed + 1)
        f = held.frame
        users, items = f[Columns.user].to_numpy(), f[Columns.item].to_numpy()
        y = torch.tensor(f[Columns.rating].to_numpy(), dtype=torch.float64)
        members = self._build()
        x = torch.stack([torch.as_tensor(m.fit(inner, ctx).predict(users, items),
                                         dtype=torch.float64) for m in members], 1)  # (N, K)
        xm, ym = x.mean(0), y.mean()
        xc = x - xm
        gram = xc.T @ xc + c.ridge * torch.eye(x.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(gram, xc.T @ (y - ym))                                # (K,)
        self.weights_ = w.float()
        self.intercept_ = (ym - xm @ w).float().reshape(1)
        _log.info("blend weights %s, intercept %.3f (hold-out of %d ratings)",
                  dict(zip(names, [round(float(v), 3) for v in w], strict=True)),
                  float(self.intercept_), len(y))
        self.members_ = [m.fit(train, ctx) for m in self._build()] if c.refit else members

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        preds = torch.stack([torch.from_numpy(m.predict(users, items)) for m in self.members_],
                            1)                                                    # (N, K)
        return self.intercept_ + preds @ self.weights_

    def _state(self) -> dict[str, torch.Tensor]:
        state = {"weights": self.weights_, "intercept": self.intercept_}
        for k, m in enumerate(self.members_):
            state |= {f"m{k}.{name}": v for name, v in m._state().items()}
        return state

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.weights_, self.intercept_ = state["weights"], state["intercept"]
        self.members_ = self._build()
        for k, m in enumerate(self.members_):
            prefix = f"m{k}."
            m.n_users_, m.n_items_ = self.n_users_, self.n_items_
            m._load_state({name[len(prefix):]: v for name, v in state.items()
                           if name.startswith(prefix)})
