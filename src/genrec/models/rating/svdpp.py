"""SVD++ (Koren 2008): biased MF whose user vector adds the mean of implicit-feedback item
factors over the items the user rated in training (see :mod:`genrec.models.rating._net`)."""

from __future__ import annotations

from typing import Literal

from genrec.data.interactions import Interactions
from genrec.models.rating._net import NetRatingConfig, NetRatingModel

__all__ = ["SVDpp", "SVDppConfig"]


class SVDppConfig(NetRatingConfig):
    """SVD++, trained with AdamW on the mean squared error plus L2 (early-stopped)."""

    kind: Literal["svdpp"] = "svdpp"


class SVDpp(NetRatingModel[SVDppConfig]):
    """SVD++ with a vectorised implicit term (one ``embedding_bag`` per batch)."""

    config_cls = SVDppConfig

    def _implicit(self, train: Interactions) -> bool:
        return True
