"""Training losses for next-item prediction, as pure functions of scores.

Every function takes the scores (logits) a model produced and returns the mean loss over
rows. Models pick the rows (e.g. the non-padding positions) and compute the scores; nothing
here samples or reads global state.

Shapes: ``N`` rows (positions), ``I`` items, ``M`` negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["softmax_cross_entropy", "sampled_softmax", "bpr", "bce"]


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy over the whole catalogue.

    Args:
        logits: Scores of every item, shape ``(N, I)``.
        targets: Index of the true item per row, shape ``(N,)``.

    Returns:
        Scalar: mean over rows of ``logsumexp(logits) - logits[target]``.
    """
    return F.cross_entropy(logits.float(), targets)


def sampled_softmax(pos_logits: torch.Tensor, neg_logits: torch.Tensor, *,
                    pos_logq: torch.Tensor | None = None, neg_logq: torch.Tensor | None = None,
                    neg_is_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy over the true item and ``M`` sampled negatives, with logQ correction.

    Negatives drawn from a proposal ``q`` (e.g. popularity) over-represent popular items; the
    correction subtracts ``log q`` from every logit so that the sampled softmax estimates the
    full one (Bengio & Senecal 2008; Yi et al. 2019). Like TensorFlow's
    ``sampled_softmax_loss`` the true item is corrected too.

    Args:
        pos_logits: Score of the true item, shape ``(N,)``.
        neg_logits: Scores of the negatives, shape ``(N, M)``.
        pos_logq: ``log q`` of the true item, shape ``(N,)``; None for no correction.
        neg_logq: ``log q`` of the negatives, shape ``(M,)`` (shared) or ``(N, M)``.
        neg_is_pos: True where a negative is the row's true item ("accidental hit"),
            shape ``(N, M)``; those negatives are removed from the softmax.

    Returns:
        Scalar: mean over rows of ``-log softmax([pos, negs])[0]``.
    """
    pos = pos_logits.float()
    neg = neg_logits.float()
    if pos_logq is not None:
        pos = pos - pos_logq
    if neg_logq is not None:
        neg = neg - neg_logq
    if neg_is_pos is not None:
        neg = neg.masked_fill(neg_is_pos, float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)                      # (N, 1 + M)
    return (torch.logsumexp(logits, dim=1) - pos).mean()


def bpr(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: ``-log sigmoid(pos - neg)``.

    Args:
        pos_logits: Score of the true item, shape ``(N,)``.
        neg_logits: Scores of negatives, shape ``(N,)`` or ``(N, M)``.

    Returns:
        Scalar: mean over all (row, negative) pairs.
    """
    if neg_logits.dim() == 2:
        pos_logits = pos_logits[:, None]
    return -F.logsigmoid(pos_logits.float() - neg_logits.float()).mean()


def bce(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with sampled negatives, as in the original SASRec.

    The true item is a positive (label 1), every negative a label 0:
    ``-log sigmoid(pos) - sum_j log(1 - sigmoid(neg_j))``.

    Args:
        pos_logits: Score of the true item, shape ``(N,)``.
        neg_logits: Scores of negatives, shape ``(N,)`` or ``(N, M)``.

    Returns:
        Scalar: mean over rows (the negatives of a row are summed).
    """
    if neg_logits.dim() == 1:
        neg_logits = neg_logits[:, None]
    pos_term = F.softplus(-pos_logits.float())                          # -log sigmoid(pos)
    neg_term = F.softplus(neg_logits.float()).sum(dim=1)                # -log(1 - sigmoid(neg))
    return (pos_term + neg_term).mean()
