"""TIGER: the contract, beam = exact parity, valid items only, hallucination, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from genrec.data.interactions import Dataset, Histories
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.generative import beam_risks
from genrec.models.base import FitContext, NotFittedError
from genrec.models.tiger import TIGER, TIGERConfig, training_examples
from genrec.semantic_ids import RQKMeansConfig, SemanticIDs
from genrec.testing import RecommenderContract, random_dataset, tiny_dataset
from genrec.training import TrainConfig

TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False)
TINY = {"dim": 16, "n_heads": 2, "ff_dim": 32, "n_layers": 1, "max_len": 5, "beam_size": 16,
        "tokenizer": RQKMeansConfig(n_levels=2, codebook_size=4), "train": TINY_TRAIN}



class TestTIGER(RecommenderContract):
    model_cls = TIGER
    # beam_size 16 >= 10 items: the constrained search is exhaustive, so every item is scored
    # and the contract's full-catalogue checks apply.
    params = TINY


@pytest.fixture(scope="module")
def trained() -> tuple[TIGER, Dataset]:
    """A TIGER trained a few epochs on a 30-item random dataset (beam < catalogue)."""
    ds = random_dataset(n_users=40, n_items=30, seed=3)
    model = TIGER(**(TINY | {"beam_size": 6, "train": TINY_TRAIN.model_copy(update={"epochs": 3})}))
    return model.fit(ds.interactions), ds


def test_training_examples_are_shifted_left_padded_windows() -> None:
    ds = tiny_dataset()
    seq, target = training_examples(ds.interactions, max_len=3)
    # user 0 walks 0 1 2 3: three examples; user 6 walks 6 4: one.
    np.testing.assert_array_equal(seq[:3].numpy(), [[0, 0, 1], [0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(target[:3].numpy(), [1, 2, 3])
    np.testing.assert_array_equal(seq[-1].numpy(), [0, 0, 7])
    assert target[-1] == 4
    assert len(target) == len(ds.interactions) - ds.n_users


def test_beam_returns_only_real_items_with_their_exact_scores(trained) -> None:
    model, ds = trained
    hist = ds.interactions.histories()
    res = model.generate(hist)
    assert res.items.shape == (len(hist), 6)
    assert ((res.items >= 0) & (res.items < ds.n_items)).all(), "constrained beams are items"
    for row in res.items:
        assert len(set(row.tolist())) == len(row), "no item twice"
    codes = torch.from_numpy(model.codes_)
    torch.testing.assert_close(res.codes, codes[res.items])
    exact = model.exact_scores(hist)
    torch.testing.assert_close(res.scores, exact.gather(1, res.items), rtol=1e-5, atol=1e-5)
    # Scores are sorted, and the dense block is -inf outside the beam.
    assert (res.scores[:, :-1] >= res.scores[:, 1:]).all()
    block = model.score(hist)
    assert (torch.isfinite(block).sum(1) == 6).all()
    rec = model.recommend(hist, k=5, exclude_seen=False)
    assert set(rec.items.ravel().tolist()) <= set(range(ds.n_items))


def test_exhaustive_beam_equals_exact_scoring(trained) -> None:
    model, ds = trained
    hist = ds.interactions.histories()
    res = model.generate(hist, beam_size=ds.n_items)
    dense = torch.full((len(hist), ds.n_items), float("-inf")).scatter_(1, res.items, res.scores)
    torch.testing.assert_close(dense, model.exact_scores(hist), rtol=1e-5, atol=1e-5)
    exact_model = TIGER(model.config.model_copy(update={"decoding": "exact"}))
    exact_model.__dict__.update({k: v for k, v in vars(model).items() if k != "config"})
    top_exact = exact_model.recommend(hist, k=5, exclude_seen=False).items
    top_beam = model.recommend(hist, k=5, exclude_seen=False).items
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top_exact, top_beam, strict=True)])
    assert agree >= 0.8  # beam 6 over 30 items: mostly the same lists


def test_exclude_history_spends_the_beam_on_new_items(trained) -> None:
    model, ds = trained
    hist = ds.interactions.histories()
    masking = TIGER(model.config.model_copy(update={"exclude_history": True}))
    masking.__dict__.update({k: v for k, v in vars(model).items() if k != "config"})
    res = masking.generate(hist)
    for row in range(len(hist)):
        seen = set(hist.items[hist.indptr[row]:hist.indptr[row + 1]].tolist())
        assert not seen & set(res.items[row].tolist())
    assert (res.items >= 0).all()  # every user has >= 6 unseen items: all beams are live
    # Same scores as the unmasked model on the items both return: masking only reorders.
    exact = model.exact_scores(hist)
    torch.testing.assert_close(res.scores, exact.gather(1, res.items), rtol=1e-5, atol=1e-5)


def test_unconstrained_search_reports_hallucinations(trained) -> None:
    model, ds = trained
    hist = ds.interactions.histories()
    res = model.generate(hist, constrained=False, beam_size=12)
    valid = model.trie_.lookup(res.codes)
    torch.testing.assert_close(res.items, valid)
    cat = Catalogue(ds.items, ds.n_items)
    assert beam_risks(res, cat)["hallucination_rate"] == pytest.approx(
        float((valid < 0).float().mean()))
    # A beam as large as the code space enumerates every code: all 30 items and every code
    # that is no item, so the hallucination rate is exactly 1 - items / codes.
    n_codes = int(np.prod(model.trie_.vocab_sizes))
    full = model.generate(hist, constrained=False, beam_size=n_codes)
    assert beam_risks(full, cat)["hallucination_rate"] == pytest.approx(1 - ds.n_items / n_codes)
    assert sorted(full.items[0][full.items[0] >= 0].tolist()) == list(range(ds.n_items))
    unconstrained = TIGER(model.config.model_copy(update={"decoding": "unconstrained",
                                                           "beam_size": 12}))
    unconstrained.__dict__.update({k: v for k, v in vars(model).items() if k != "config"})
    block = unconstrained.score(hist)
    assert (torch.isfinite(block).sum(1) == (valid >= 0).sum(1)).all()


def test_learns_next_item_of_a_cycle() -> None:
    users = [f"u{u}" for u in range(24) for _ in range(6)]
    items = [f"i{(u + t) % 8}" for u in range(24) for t in range(6)]
    ds = Dataset.from_raw("cycle", pl.DataFrame({"user": users, "item": items}))
    model = TIGER(dim=32, n_heads=2, ff_dim=64, n_layers=1, max_len=4, dropout=0.0,
                  beam_size=8, tokenizer={"n_levels": 2, "codebook_size": 3},
                  train={"epochs": 30, "batch_size": 32, "lr": 5e-3, "device": "cpu",
                         "progress": False})
    model.fit(ds.interactions)
    raw = [[f"i{i}" for i in (2, 3, 4)], [f"i{i}" for i in (6, 7)]]
    hist = Histories.from_lists([list(ds.item_map.to_index(h)) for h in raw], ds.n_items)
    top = model.recommend(hist, k=1, exclude_seen=False).items[:, 0]
    assert ds.item_map.to_raw(top) == ["i5", "i0"]


def test_text_item_vectors_and_rqvae_round_trip(tmp_path: Path) -> None:
    ds = tiny_dataset()
    cfg = TINY | {"item_vectors": "text",
                  "text": {"encoder": "hashing:64", "cache_dir": str(tmp_path / "cache")},
                  "tokenizer": {"kind": "rqvae", "n_levels": 2, "codebook_size": 4,
                                "latent_dim": 4, "hidden_dims": [16], "epochs": 5,
                                "batch_size": 4}}
    with pytest.raises(ValueError, match="FitContext"):
        TIGER(**cfg).fit(ds.interactions)
    model = TIGER(**cfg).fit(ds.interactions, FitContext(items=ds.items))
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the embeddings were cached
    assert np.unique(model.codes_, axis=0).shape[0] == ds.n_items
    assert model.semantic_ids_.source_["item_vectors"] == "text"
    model.save(tmp_path / "m")
    loaded = TIGER.load(tmp_path / "m")
    hist = ds.interactions.histories()
    torch.testing.assert_close(loaded.score(hist), model.score(hist), rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.codes_, model.codes_)
    assert loaded.health_ == model.health_
    assert loaded.semantic_ids_.source_ == model.semantic_ids_.source_
    vectors = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.tokenizer_.transform(vectors),
                                  model.tokenizer_.transform(vectors))


def test_semantic_ids_saved_once_are_reused_by_another_model(tmp_path: Path) -> None:
    ds = tiny_dataset()
    cfg = TINY | {"item_vectors": "text", "text": {"encoder": "hashing:32", "cache": False},
                  "tokenizer": RQKMeansConfig(n_levels=2, codebook_size=3)}
    first = TIGER(**cfg).fit_semantic_ids(ds.interactions, FitContext(items=ds.items))
    first.save_semantic_ids(tmp_path / "ids")
    # The reusing model needs no item features; the folder's settings win over the config's
    # (tokenizer 2 x 4 in TINY), and live in the fitted stage, not in the config.
    other = TIGER(**(TINY | {"semantic_ids": str(tmp_path / "ids")}))
    config_before = other.config.model_copy(deep=True)
    other.fit(ds.interactions)
    assert other.config == config_before, "fit must not change the config"
    assert other.config.tokenizer.codebook_size == 4 and other.config.item_vectors == "auto"
    stage = other.semantic_ids_
    np.testing.assert_array_equal(other.codes_, first.codes_)
    assert stage.config.tokenizer.codebook_size == 3 and stage.source_["item_vectors"] == "text"
    assert stage.origin_ == str(tmp_path / "ids")
    assert other.health_ == first.health_
    # The model trained on reused IDs saves and loads without the folder.
    other.save(tmp_path / "m")
    for f in (tmp_path / "ids").iterdir():
        f.unlink()
    loaded = TIGER.load(tmp_path / "m")
    assert loaded.config == other.config
    np.testing.assert_array_equal(loaded.codes_, first.codes_)
    assert loaded.semantic_ids_.config == stage.config
    assert loaded.semantic_ids_.source_ == stage.source_
    assert loaded.semantic_ids_.origin_ == stage.origin_
    hist = ds.interactions.histories()
    torch.testing.assert_close(loaded.score(hist), other.score(hist), rtol=0, atol=0)
    # A model's saved stage is also reusable: write it out again and fit on it.
    loaded.save_semantic_ids(tmp_path / "ids")
    bigger = random_dataset(n_users=20, n_items=ds.n_items + 5, seed=0)
    with pytest.raises(ValueError, match="made for"):
        TIGER(**(TINY | {"semantic_ids": str(tmp_path / "ids")})).fit(bigger.interactions)


def test_fit_semantic_ids_alone_is_not_fitted(tmp_path: Path) -> None:
    ds = tiny_dataset()
    hist = ds.interactions.histories()
    for model in (TIGER(**TINY), TIGER(**TINY).fit(ds.interactions)):
        model.fit_semantic_ids(ds.interactions)
        assert model.codes_.shape == (ds.n_items, 3)
        with pytest.raises(NotFittedError):
            model.score(hist)
        with pytest.raises(NotFittedError):
            model.recommend(hist, k=3)
        with pytest.raises(NotFittedError):
            model.generate(hist)
        with pytest.raises(NotFittedError):
            model.save(tmp_path / "m")
        assert not (tmp_path / "m").exists()
        model.save_semantic_ids(tmp_path / "ids")  # the stage itself is fitted
    with pytest.raises(NotFittedError):
        TIGER(**TINY).save_semantic_ids(tmp_path / "ids2")
    # Then fit trains the network as usual.
    model.fit(ds.interactions)
    assert model.score(hist).shape == (len(hist), ds.n_items)


def test_loads_models_saved_before_the_stage_object(tmp_path: Path) -> None:
    """Older model folders: codes and tokenizer at the top of state.safetensors, their
    settings in config.json."""
    ds = tiny_dataset()
    model = TIGER(**TINY).fit(ds.interactions)
    model.save(tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "state.safetensors"))
    legacy = {k.removeprefix("semantic_ids."): v for k, v in state.items()
              if k.startswith(("semantic_ids.codes", "semantic_ids.tokenizer.", "net."))}
    save_file(legacy, str(tmp_path / "m" / "state.safetensors"))
    loaded = TIGER.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.codes_, model.codes_)
    hist = ds.interactions.histories()
    torch.testing.assert_close(loaded.score(hist), model.score(hist), rtol=0, atol=0)


def test_auto_item_vectors_fall_back_to_interactions() -> None:
    ds = tiny_dataset()
    empty = pl.DataFrame({"item": np.arange(ds.n_items), "colour": [None] * ds.n_items})
    a = TIGER(**TINY).fit(ds.interactions, FitContext(items=empty))
    b = TIGER(**TINY).fit(ds.interactions)
    np.testing.assert_array_equal(a.codes_, b.codes_)
    assert a.semantic_ids_.source_ == {"item_vectors": "collaborative", "collaborative_dim": 64}


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divide"):
        TIGERConfig(dim=10, n_heads=3)
    cfg = TIGERConfig.model_validate({"kind": "tiger", "tokenizer": {"n_levels": 2}})
    assert cfg.tokenizer.kind == "rqkmeans" and cfg.tokenizer.n_levels == 2
    cfg = TIGERConfig.model_validate({"tokenizer": {"kind": "rqvae", "latent_dim": 8}})
    assert cfg.tokenizer.kind == "rqvae"
    with pytest.raises(ValueError):
        TIGERConfig.model_validate({"tokenizer": {"kind": "nope"}})


@pytest.mark.slow
def test_genrec_run_trains_tokenizer_and_tiger_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from genrec.cli import app
    from genrec.config import load_config
    from genrec.data.splits import Split
    from genrec.models.registry import load_model
    from genrec.runs.experiment import load_data

    config = Path(__file__).resolve().parents[2] / "configs" / "tiger-tiny-ml100k.yaml"
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "run", str(config), "--data-dir", str(data_dir), "--output", str(out), "--quiet",
        "--set", "models.0.text.encoder=hashing:64",  # MiniLM is tested in tests/text
        "--set", f"models.0.text.cache_dir={tmp_path / 'cache'}"])
    assert res.exit_code == 0, res.output
    # `genrec tokenize` writes the same semantic IDs the run fitted.
    res = CliRunner().invoke(app, [
        "tokenize", str(config), "--output", str(tmp_path / "ids"), "--quiet",
        "--set", f"dataset.data_dir={data_dir}", "--set", f"output={tmp_path / 'tok'}",
        "--set", "models.0.text.encoder=hashing:64",
        "--set", f"models.0.text.cache_dir={tmp_path / 'cache'}"])
    assert res.exit_code == 0, res.output
    assert "codes used" in res.output and (tmp_path / "ids" / "semantic_ids.json").is_file()
    results = json.loads((out / "results.json").read_text())
    (row,) = results["results"]
    assert row["model"] == "tiger" and row["test"]["recall@10"] >= 0.0
    model = load_model(out / "models" / "tiger")
    assert isinstance(model, TIGER)
    ds = load_data(load_config(config, [f"dataset.data_dir={data_dir}"]).dataset)
    assert model.codes_.shape == (ds.n_items, 3)
    assert model.health_.utilisation[0] > 0.5
    np.testing.assert_array_equal(SemanticIDs.load(tmp_path / "ids").codes_, model.codes_)
    test = Split.load(out / "split", ds).test_set()
    hist = test.histories.slice(0, 200)
    rec = model.recommend(hist, k=10)
    assert ((rec.items >= 0) & (rec.items < ds.n_items)).all(), "every id is a real item"
    raw = ds.item_map.to_raw(rec.items.ravel())
    assert set(raw) <= set(ds.item_map.raw.to_list())
    for row_items, u in zip(rec.items, range(len(hist)), strict=True):
        seen = hist.items[hist.indptr[u]:hist.indptr[u + 1]]
        assert not set(row_items.tolist()) & set(seen.tolist())
