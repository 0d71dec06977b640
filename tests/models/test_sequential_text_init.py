"""``item_text: init`` on every sequential model: the item table starts from the items' text."""

from __future__ import annotations

import pytest
import torch

from genrec.models._sequential import text_init
from genrec.models.base import FitContext
from genrec.models.registry import MODELS
from genrec.testing import tiny_dataset
from genrec.training import TrainConfig

TEXT = {"encoder": "hashing:32", "cache": False}
# A learning rate so small that one epoch leaves the initial table in place to 1e-9.
STILL = TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False, lr=1e-12,
                    weight_decay=0.0)
PARAMS = {"sasrec": {"n_heads": 2}, "hstu": {"n_heads": 2}, "gru4rec": {}, "bert4rec": {"n_heads": 2}}


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_the_item_table_starts_from_the_text_and_reloads(kind: str, tmp_path) -> None:
    ds = tiny_dataset()
    cls = MODELS[kind]
    # dim 8 < the tiny catalogue's 10 items: every column is a text component (no noise padding)
    params = {"dim": 8, "max_len": 6, "train": STILL, "item_text": "init", "text": TEXT,
              **PARAMS[kind]}
    with pytest.raises(ValueError, match="item features"):
        cls(**params).fit(ds.interactions)
    model = cls(**params).fit(ds.interactions, FitContext(items=ds.items))
    table = model.net_.item_emb.weight.detach()[1 : ds.n_items + 1]
    torch.testing.assert_close(table, text_init(model.text_emb_, 8), rtol=0, atol=1e-9)
    # Without text the same seed gives a different (random) table.
    plain = cls(**{**params, "item_text": "none"}).fit(ds.interactions)
    assert not torch.allclose(plain.net_.item_emb.weight[1 : ds.n_items + 1], table)
    hist = ds.interactions.histories()
    model.save(tmp_path / "m")
    loaded = cls.load(tmp_path / "m")  # init needs no text at load: the table is saved
    torch.testing.assert_close(loaded.score(hist), model.score(hist), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["hstu", "gru4rec", "bert4rec"])
def test_only_sasrec_has_the_text_adaptor(kind: str) -> None:
    with pytest.raises(ValueError, match="item_text='adaptor' is not available"):
        MODELS[kind](dim=16, item_text="adaptor")
