"""Popularity: the contract plus hand-checked counts on the tiny fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.data.interactions import Histories
from genrec.models.pop import Popularity
from genrec.testing import TINY_ITEM_COUNTS, RecommenderContract, tiny_dataset


class TestPopularity(RecommenderContract):
    model_cls = Popularity


def test_counts_are_training_interactions_per_item() -> None:
    train = tiny_dataset().interactions
    model = Popularity().fit(train)
    np.testing.assert_array_equal(model.counts_.numpy(), TINY_ITEM_COUNTS)


def test_every_user_gets_the_same_scores_whatever_the_history() -> None:
    model = Popularity().fit(tiny_dataset().interactions)
    batch = Histories.from_lists([[], [9], [0, 1, 2, 3, 4]], n_items=10)
    expected = torch.tensor(TINY_ITEM_COUNTS, dtype=torch.float32).expand(3, -1)
    torch.testing.assert_close(model.score(batch), expected, rtol=0, atol=0)


def test_recommends_most_popular_unseen() -> None:
    model = Popularity().fit(tiny_dataset().interactions)
    # Counts [3, 4, 4, 2, 3, 2, 2, 2, 2, 2]: with 1 and 2 seen, item 0 and 4 tie at 3 and
    # lead everything else; with 0, 2 and 6 seen, item 1 (4 interactions) is the unique best.
    rec = model.recommend(Histories.from_lists([[1, 2], [0, 2, 6]], n_items=10), k=2)
    assert set(rec.items[0].tolist()) == {0, 4}
    assert rec.items[1, 0] == 1 and rec.items[1, 1] == 4
    np.testing.assert_array_equal(rec.scores, [[3.0, 3.0], [4.0, 3.0]])


def test_score_refuses_what_is_not_an_item_id() -> None:
    # -1 pads recommendation lists; scoring it once returned the last item's score.
    ds = tiny_dataset()
    m = Popularity().fit(ds.interactions)
    h = Histories.from_lists([[0], [1, 2]], n_items=ds.n_items)
    assert torch.equal(m.score(h, items=np.array([3, 1])), m.score(h)[:, [3, 1]])
    assert m.score(h, items=[]).shape == (2, 0)
    for bad in ([-1], [ds.n_items], np.arange(ds.n_items) < 2, np.array([1.0, 2.0]),
                np.array([[1, 2]])):
        with pytest.raises(ValueError, match="items must be"):
            m.score(h, items=bad)
