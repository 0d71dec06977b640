"""The SemanticIDs stage: fit, save/load round trip, embedding in a state dict, old folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genrec.semantic_ids import (
    NotFittedError,
    RQKMeansConfig,
    RQVAEConfig,
    SemanticIDs,
    SemanticIDsConfig,
    codebook_health,
)

from .conftest import clustered

SOURCE = {"item_vectors": "text", "text": {"encoder": "hashing:16"}}


def _assert_same(a: SemanticIDs, b: SemanticIDs, vectors: np.ndarray) -> None:
    assert a.config == b.config
    np.testing.assert_array_equal(a.codes_, b.codes_)
    assert a.health_ == b.health_ and a.vocab_sizes_ == b.vocab_sizes_
    assert a.source_ == b.source_ and a.n_items_ == b.n_items_
    torch.testing.assert_close(a.trie_.lookup(torch.from_numpy(a.codes_)),
                               b.trie_.lookup(torch.from_numpy(b.codes_)))
    np.testing.assert_array_equal(a.tokenizer_.transform(vectors), b.tokenizer_.transform(vectors))


def test_fit_codes_every_item_uniquely() -> None:
    x, _ = clustered(n_clusters=4, per=10, dim=8)
    ids = SemanticIDs(tokenizer=RQKMeansConfig(n_levels=2, codebook_size=3)).fit(x, source=SOURCE)
    assert ids.codes_.shape == (40, 3) and ids.codes_.dtype == np.int64
    assert len(np.unique(ids.codes_, axis=0)) == 40
    np.testing.assert_array_equal(ids.raw_codes_, ids.tokenizer_.transform(x))
    assert ids.health_ == codebook_health(ids.raw_codes_, 3)
    assert ids.vocab_sizes_ == [3, 3, int(ids.codes_[:, -1].max()) + 1]
    np.testing.assert_array_equal(ids.trie_.lookup(torch.from_numpy(ids.codes_)).numpy(),
                                  np.arange(40))
    assert ids.source_ == SOURCE and ids.origin_ is None and ids.n_items_ == 40


def test_not_fitted_and_bad_input(tmp_path: Path) -> None:
    ids = SemanticIDs()
    with pytest.raises(NotFittedError):
        ids.save(tmp_path)
    with pytest.raises(NotFittedError):
        ids.state()
    with pytest.raises(ValueError, match="n_items"):
        ids.fit(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="keys"):
        SemanticIDs(tokenizer={"n_levels": 1, "codebook_size": 2}).fit(
            np.eye(4, dtype=np.float32), source={"health": 1})
    with pytest.raises(FileNotFoundError):
        SemanticIDs.load(tmp_path / "nowhere")


@pytest.mark.parametrize("tokenizer", [
    RQKMeansConfig(n_levels=2, codebook_size=4),
    RQVAEConfig(n_levels=2, codebook_size=4, latent_dim=4, hidden_dims=[8], epochs=2,
                batch_size=8),
])
def test_save_load_round_trip(tmp_path: Path, tokenizer) -> None:
    x, _ = clustered(n_clusters=4, per=8, dim=8)
    ids = SemanticIDs(SemanticIDsConfig(tokenizer=tokenizer)).fit(x, source=SOURCE)
    ids.save(tmp_path / "ids")
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == [
        "semantic_ids.json", "semantic_ids.safetensors"]
    meta = json.loads((tmp_path / "ids" / "semantic_ids.json").read_text())
    # The layout `genrec tokenize` has always written, plus a format version.
    assert meta["n_items"] == 32 and meta["tokenizer"]["kind"] == tokenizer.kind
    assert meta["item_vectors"] == "text" and meta["text"] == SOURCE["text"]
    assert meta["health"] == ids.health_.to_dict() and meta["format_version"] == 1
    state = load_file(str(tmp_path / "ids" / "semantic_ids.safetensors"))  # not a pickle
    assert "codes" in state and any(k.startswith("tokenizer.") for k in state)
    loaded = SemanticIDs.load(tmp_path / "ids")
    _assert_same(loaded, ids, x)
    assert loaded.origin_ == str(tmp_path / "ids")
    # Embedded in another state dict (a model's): the same stage, origin kept.
    again = SemanticIDs.from_state(loaded.state())
    _assert_same(again, ids, x)
    assert again.origin_ == loaded.origin_


def test_reads_folders_of_the_first_layout(tmp_path: Path) -> None:
    x, _ = clustered(n_clusters=4, per=8, dim=8)
    ids = SemanticIDs(tokenizer={"n_levels": 2, "codebook_size": 4}).fit(x)
    ids.save(tmp_path)
    meta = json.loads((tmp_path / "semantic_ids.json").read_text())
    old = {"n_items": meta["n_items"], "item_vectors": "auto", "text": {"encoder": "x"},
           "tokenizer": meta["tokenizer"], "health": meta["health"]}
    (tmp_path / "semantic_ids.json").write_text(json.dumps(old))
    loaded = SemanticIDs.load(tmp_path)
    np.testing.assert_array_equal(loaded.codes_, ids.codes_)
    assert loaded.source_ == {"item_vectors": "auto", "text": {"encoder": "x"}}
    (tmp_path / "semantic_ids.json").write_text(json.dumps(old | {"format_version": 99}))
    with pytest.raises(ValueError, match="format"):
        SemanticIDs.load(tmp_path)
