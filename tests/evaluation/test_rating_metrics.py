"""RMSE, MAE and fold summaries against hand-computed values."""

from __future__ import annotations

import math

import pytest

from genrec.evaluation.rating import RatingProtocol, mae, rmse, summarise_folds


def test_rmse_and_mae_hand_computed() -> None:
    pred, true = [1.0, 2.0, 3.0], [1.0, 3.0, 5.0]
    # errors 0, -1, -2: squared mean 5/3, absolute mean 1
    assert rmse(pred, true) == pytest.approx(math.sqrt(5 / 3))   # 1.2909944
    assert mae(pred, true) == pytest.approx(1.0)
    assert rmse([4.0], [4.0]) == 0.0


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no ratings"):
        mae([], [])
    with pytest.raises(ValueError, match="NaN"):
        rmse([float("nan")], [1.0])


def test_summary_over_folds_hand_computed() -> None:
    s = summarise_folds([0.9, 1.0])
    assert s["mean"] == pytest.approx(0.95)
    assert s["std"] == pytest.approx(0.0707107, abs=1e-6)        # sqrt(0.005)
    # t(0.975, 1 dof) = 12.7062047; half width = 12.7062047 * 0.0707107 / sqrt(2) = 0.6353102
    assert s["ci95"] == pytest.approx([0.95 - 0.6353102, 0.95 + 0.6353102], abs=1e-6)


def test_protocol_describes_itself() -> None:
    text = RatingProtocol().describe()
    assert "u1, u2, u3, u4, u5" in text and "RMSE" in text
    with pytest.raises(ValueError):
        RatingProtocol(clip=(5.0, 1.0))
