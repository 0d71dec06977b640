"""Position bias of a reranker: how much of its output order is the input order.

A listwise LLM reranker that copies the order it was shown changes nothing; one that keeps
only the first few candidates favours whatever the candidate model put first. Given each
request's input list and the reranker's output (the valid entries it emitted, in order):

- ``order_copy_rate``: share of requests whose output is exactly the input's prefix of the
  same length, in order (1.0: the LLM reproduced the list it was shown);
- ``top1_kept_rate``: share of requests whose first output is the first input;
- ``spearman_mean``: mean Spearman correlation between output rank and input position over
  requests with at least two output entries (1: same order, 0: unrelated, -1: reversed);
- ``mean_input_position``: mean input position (0-based) of the emitted entries, against
  ``(n - 1) / 2`` for entries drawn uniformly from the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = ["position_bias"]


def position_bias(outputs: Sequence[Sequence[int]],
                  inputs: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Position-bias statistics of reranked lists (see the module docstring).

    Args:
        outputs: Per request, the emitted entries that are input items, in output order
            (entries not in the input and repeats are ignored).
        inputs: Per request, the list shown to the reranker, in the order shown.

    Returns:
        The rates, ``requests`` and ``requests_with_2plus`` (those ``spearman_mean`` uses).

    Raises:
        ValueError: If ``outputs`` and ``inputs`` differ in length.
    """
    if len(outputs) != len(inputs):
        raise ValueError("position_bias: outputs and inputs differ in length")
    copies = top1 = 0
    rhos, positions, uniform = [], [], []
    for out, inp in zip(outputs, inputs, strict=True):
        pos = {int(x): j for j, x in enumerate(inp)}
        seq = [pos[int(x)] for x in dict.fromkeys(int(o) for o in out) if int(x) in pos]
        uniform.append((len(inp) - 1) / 2 if len(inp) else 0.0)
        if not seq:
            continue
        copies += seq == list(range(len(seq)))
        top1 += seq[0] == 0
        positions += seq
        if len(seq) >= 2:
            rhos.append(float(sps.spearmanr(np.arange(len(seq)), seq).statistic))
    n = len(inputs)
    return {"requests": n, "requests_with_2plus": len(rhos),
            "order_copy_rate": copies / n if n else 0.0,
            "top1_kept_rate": top1 / n if n else 0.0,
            "spearman_mean": float(np.mean(rhos)) if rhos else float("nan"),
            "mean_input_position": float(np.mean(positions)) if positions else float("nan"),
            "uniform_input_position": float(np.mean(uniform)) if uniform else float("nan")}
