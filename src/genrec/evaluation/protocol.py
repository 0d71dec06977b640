"""The evaluation protocol: everything that decides what a number means, saved with it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genrec.data.splits import SplitConfig
from genrec.evaluation.metrics import METRICS

__all__ = ["Protocol"]


class Protocol(BaseModel):
    """How results are produced. It is written into every ``results.json`` and printed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    split: SplitConfig = Field(default_factory=SplitConfig)
    """The train / valid / test split."""
    candidates: Literal["full", "sampled"] = "full"
    """full: rank every item. sampled: rank the targets among ``n_negatives`` sampled items."""
    n_negatives: int = Field(100, ge=1)
    """Sampled negatives per user (sampled candidates only)."""
    negative_sampling: Literal["uniform", "popularity"] = "uniform"
    """How sampled negatives are drawn (sampled candidates only)."""
    exclude_seen: bool = True
    """Items already in the user's history are never recommended."""
    cutoffs: list[int] = Field(default_factory=lambda: [5, 10, 20])
    """The K of every metric@K."""
    metrics: list[str] = Field(default_factory=lambda: ["recall", "ndcg", "mrr", "map",
                                                        "precision", "hit"])
    """Metric names (see ``genrec.evaluation.metrics.METRICS``)."""
    eval_users: int | None = Field(None, ge=1)
    """Evaluate a random sample of this many users (drawn with ``seed``, the same sample for
    every model); None, or a number at least the evaluation set's size, evaluates every user.
    For large data: full-ranking cost grows with users x items, a fixed sample keeps it
    linear in items."""
    max_history_length: int | None = None
    """Model input is each user's most recent N items (seen-item masking uses all of them)."""
    valid_metric: str = "ndcg@10"
    """Metric used for model selection and early stopping, on validation only."""
    seed: int = 42
    """Seed of every random choice (split, negatives, model initialisation)."""

    @field_validator("cutoffs")
    @classmethod
    def _cutoffs(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("cutoffs must be a non-empty list of positive integers")
        return sorted(set(v))

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        unknown = set(v) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {sorted(METRICS)}")
        return v

    @field_validator("valid_metric")
    @classmethod
    def _valid_metric(cls, v: str) -> str:
        name, _, k = v.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"valid_metric must look like 'ndcg@10' with a metric from "
                             f"{sorted(METRICS)}, got {v!r}")
        return v

    def with_valid_metric(self) -> Protocol:
        """This protocol, measuring the validation metric too (its name and cutoff added to
        ``metrics`` and ``cutoffs`` when missing)."""
        name, _, k = self.valid_metric.partition("@")
        return self.model_copy(update={
            "metrics": self.metrics + ([name] if name not in self.metrics else []),
            "cutoffs": sorted(set(self.cutoffs) | {int(k)})})

    def validation_identity(self) -> dict[str, object]:
        """The settings besides split, seed and ``valid_metric`` that change what a validation
        score means (candidates, seen-item exclusion, user sample, history length), those not
        at their defaults only: a checkpoint records them, and a resumed training under other
        ones is refused, so early stopping never compares epochs measured two ways. (Defaults
        are left out so checkpoints written before this record existed still resume.)"""
        keys = ["candidates", "exclude_seen", "eval_users", "max_history_length"]
        if self.candidates == "sampled":
            keys += ["n_negatives", "negative_sampling"]
        default = Protocol()
        return {k: getattr(self, k) for k in keys if getattr(self, k) != getattr(default, k)}

    def describe(self) -> str:
        """One line that says how the numbers were produced."""
        cand = ("full ranking" if self.candidates == "full" else
                f"{self.n_negatives} {self.negative_sampling}-sampled negatives")
        split = self.split.kind.replace("_", "-")
        if self.split.kind != "leave_one_out":
            split += f" (valid {self.split.valid_ratio}, test {self.split.test_ratio})"
        if self.split.cold_items:
            split += f", {self.split.cold_items:.0%} of items cold (never in training)"
        hist = "all" if self.max_history_length is None else f"last {self.max_history_length}"
        users = ("" if self.eval_users is None else
                 f"users=random sample of {self.eval_users} (seed {self.seed}); ")
        return (f"split={split}; candidates={cand}; seen items "
                f"{'excluded' if self.exclude_seen else 'kept'}; K={self.cutoffs}; "
                f"history={hist}; {users}selection on valid {self.valid_metric}; "
                f"seed={self.seed}")
