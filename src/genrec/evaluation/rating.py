"""Rating prediction: its protocol, RMSE and MAE (pure functions), and fold summaries."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrec.evaluation.stats import t_interval

__all__ = ["RatingProtocol", "mae", "rmse", "summarise_folds"]


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and ratings {t.shape} differ in shape")
    if p.size == 0:
        raise ValueError("no ratings to score")
    if not np.isfinite(p).all():
        raise ValueError("predictions contain NaN or infinity")
    return p, t


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error ``sqrt(mean((pred - true)^2))``."""
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error ``mean(|pred - true|)``."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


class RatingProtocol(BaseModel):
    """What a rating-prediction number means: the split, the clipping, the validation.

    ``split: official`` reads the GroupLens ML-100K folds (``folds``) and reports the mean
    and standard deviation over them; ``split: random`` holds out ``test_ratio`` of the
    ratings once per seed in ``seeds``. Models that early-stop or are tuned see only a
    ``valid_ratio`` hold-out of each training part, never the test ratings.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    split: Literal["official", "random"] = "official"
    """``official``: ML-100K ``u1``-``u5`` files; ``random``: a seeded hold-out."""
    folds: list[str] = Field(default_factory=lambda: ["u1", "u2", "u3", "u4", "u5"])
    """Official fold names (``split: official``)."""
    test_ratio: float = Field(0.2, gt=0, lt=1)
    """Share of ratings held out for testing (``split: random``)."""
    seeds: list[int] = Field(default_factory=lambda: [42, 43, 44], min_length=1)
    """``split: random``: one split per seed; every split also seeds model training."""
    valid_ratio: float = Field(0.05, ge=0, lt=1)
    """Share of each training part held out for early stopping (0: none)."""
    clip: tuple[float, float] | None = (1.0, 5.0)
    """Predictions are clipped to this rating scale (None: no clipping)."""

    @model_validator(mode="after")
    def _check(self) -> RatingProtocol:
        if self.split == "official" and not self.folds:
            raise ValueError("split: official needs at least one fold")
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {self.clip}")
        return self

    def describe(self) -> str:
        """One line that says what the numbers mean."""
        if self.split == "official":
            what = f"official GroupLens folds {', '.join(self.folds)} (mean ± std over folds)"
        else:
            what = (f"random {self.test_ratio:.0%} test hold-out, seeds "
                    f"{', '.join(map(str, self.seeds))} (mean ± std over seeds)")
        clip = f"clipped to [{self.clip[0]:g}, {self.clip[1]:g}]" if self.clip else "unclipped"
        return (f"task=rating prediction; split={what}; predictions {clip}; early stopping on "
                f"a {self.valid_ratio:.0%} hold-out of each training part; metrics RMSE, MAE")


def summarise_folds(values: list[float]) -> dict[str, Any]:
    """Mean, sample std and a 95% t-interval of a metric over folds or seeds."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    lo, hi = t_interval(v)
    return {"mean": round(mean, 6), "std": round(std, 6),
            "ci95": [round(lo, 6), round(hi, 6)],
            "per_fold": [round(float(x), 6) for x in v]}
