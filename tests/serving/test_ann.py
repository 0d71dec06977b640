"""Approximate retrieval: dot-product models expose their vectors, the faiss index agrees
with exact scoring (recall@10 vs exact on ML-100K), filters stay exact, the bundle keeps the
index under its checksum and the service and batch paths use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from genrec.config import load_config
from genrec.data.interactions import Histories
from genrec.models import registry
from genrec.models.base import DotProductModel
from genrec.runs.experiment import prepare
from genrec.serving import ModelService, load_bundle, recommend_batch
from genrec.serving.ann import ANN_FILE, AnnConfig, ItemIndex, recommend_ann
from genrec.serving.bundle import BundleError, export_bundle
from genrec.testing import random_dataset

pytest.importorskip("faiss")

TRAIN = {"epochs": 2, "batch_size": 64, "device": "cpu", "progress": False}
DOT = {"bprmf": {"dim": 8}, "lightgcn": {"dim": 8, "n_layers": 1}, "simplex": {"dim": 8},
       "sasrec": {"dim": 8, "max_len": 6, "n_layers": 1, "n_heads": 1},
       "gru4rec": {"dim": 8}, "bert4rec": {"dim": 8, "max_len": 6, "n_layers": 1, "n_heads": 1},
       "hstu": {"dim": 8, "max_len": 6, "n_layers": 1, "n_heads": 1}}


@pytest.mark.parametrize("kind", sorted(DOT))
def test_dot_product_models_expose_their_vectors(kind: str) -> None:
    ds = random_dataset(n_users=30, n_items=25, min_len=2, max_len=9, seed=1)
    model = registry.build_model(registry.model_config(kind, **DOT[kind], train=TRAIN))
    model.fit(ds.interactions)
    assert isinstance(model, DotProductModel)
    h = ds.interactions.histories()
    # Known users, plus an anonymous user (-1) with a history (fold-in / sequence).
    h = Histories(np.append(h.users, -1), np.append(h.indptr, h.indptr[-1] + 2),
                  np.append(h.items, [3, 4]), h.n_items)
    q, v = model.query_vectors(h), model.item_vectors()
    assert q.shape == (len(h), v.shape[1]) and v.shape[0] == ds.n_items
    torch.testing.assert_close(q @ v.T, model.score(h), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["ease", "pop", "itemknn"])
def test_other_models_are_not_dot_products(kind: str) -> None:
    assert not isinstance(registry.build_model(registry.model_config(kind)), DotProductModel)


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> Any:
    cfg = load_config(None, [f"dataset.data_dir={data_dir}", "dataset.name=ml-100k"])
    data = prepare(cfg, write=False)
    torch.manual_seed(0)
    model = registry.build_model(registry.model_config(
        "bprmf", dim=32, train=TRAIN | {"epochs": 3, "batch_size": 1024})).fit(data.split.train)
    return data, model


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(approx, exact, strict=True)]
    return sum(hits) / max(1, int((exact >= 0).sum()))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [AnnConfig(kind="hnsw", m=16, ef_search=64),
                                 AnnConfig(kind="ivf", nprobe=8)], ids=["hnsw", "ivf"])
def test_recall_against_exact_and_filters(ml100k: Any, cfg: AnnConfig) -> None:
    data, model = ml100k
    h = data.test_set.histories
    index = ItemIndex.build(model.item_vectors(), cfg)
    exact = model.recommend(h, 10)
    approx = recommend_ann(model, index, h, 10)
    assert _recall(approx.items, exact.items) >= 0.99
    # Seen items never come back, even for the heaviest users (hundreds of items).
    seen = h.to_csr().toarray() > 0
    assert not seen[np.arange(len(h))[:, None], approx.items].any()
    heavy = int(np.argmax(h.lengths))
    assert h.lengths[heavy] > 300 and (approx.items[heavy] >= 0).all()
    # Block and allow lists: a blocked item never appears; only allowed items appear.
    rows = np.arange(50)
    sub = Histories(h.users[rows], h.indptr[:51], h.items[:h.indptr[50]], h.n_items)
    block = torch.zeros(h.n_items, dtype=torch.bool)
    block[exact.items[:50].ravel()] = True          # every exact top-10 item of these users
    allow = torch.zeros(h.n_items, dtype=torch.bool)
    allow[::7] = True
    got = recommend_ann(model, index, sub, 10, block=block, allow=allow)
    assert (got.items >= 0).all()
    assert not block[got.items].any() and allow[got.items].all()
    want = model.recommend(sub, 10, block=block, allow=allow)
    assert _recall(got.items, want.items) >= 0.99
    # A fetch cap below the heaviest history: those users are scored exactly.
    small = ItemIndex(index.index, cfg.model_copy(update={"max_fetch": 64}), index.max_norm)
    capped = recommend_ann(model, small, h, 10)
    long_rows = h.lengths + 10 > 64
    np.testing.assert_array_equal(capped.items[long_rows], exact.items[long_rows])


@pytest.mark.slow
def test_bundle_keeps_checksummed_index_and_serves_with_it(ml100k: Any, tmp_path: Path) -> None:
    data, model = ml100k
    ds, sp = data.dataset, data.split
    hist = sp.train.concat(sp.valid)
    cfg = AnnConfig(kind="hnsw", m=16, min_items=0)
    dest = export_bundle(model, ds, tmp_path / "b", histories=hist, ann=cfg)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert ANN_FILE in manifest["files"] and manifest["ann"]["built"] is True
    b = load_bundle(dest)
    assert b.ann is not None and b.ann.n_items == ds.n_items
    # The service answers from the index, the exact bundle from scoring: nearly the same.
    plain = load_bundle(export_bundle(model, ds, tmp_path / "exact", histories=hist))
    assert plain.ann is None
    svc, ref = ModelService(b), ModelService(plain)
    users = b.user_ids[:200]
    got = [set(svc.recommend(user=u, k=10).items) for u in users]
    want = [set(ref.recommend(user=u, k=10).items) for u in users]
    assert sum(len(g & w) for g, w in zip(got, want, strict=True)) / 2000 >= 0.99
    assert len(svc.similar(b.item_ids[0], k=5).items) == 5
    # Batch inference uses the same index.
    s = recommend_batch(b, users[:50], tmp_path / "r.parquet", k=10)
    out = pl.read_parquet(tmp_path / "r.parquet")
    assert s.rows == 500
    first = [b.item_index[i] for i in out["item"][:10]]
    assert first == list(svc.recommend(user=users[0], k=10).items)
    # Below min_items no index is built; an altered index is refused.
    small = export_bundle(model, ds, tmp_path / "small", histories=hist,
                          ann=AnnConfig(kind="hnsw"))
    assert load_bundle(small).ann is None
    with open(dest / ANN_FILE, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(dest)


def test_index_needs_a_dot_product_model(tmp_path: Path) -> None:
    ds = random_dataset(n_users=20, n_items=15, seed=2)
    ease = registry.build_model(registry.model_config("ease")).fit(ds.interactions)
    with pytest.raises(ValueError, match="dot-product"):
        export_bundle(ease, ds, tmp_path / "b", ann=AnnConfig(kind="hnsw", min_items=0))
    with pytest.raises(ValueError, match="exact"):
        ItemIndex.build(torch.randn(5, 3), AnnConfig())


def test_cli_export_ann_flags(bundles, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genrec.cli import app

    runner = CliRunner()
    base = ["export", str(bundles.run), "--model", "ease"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--ann", "ivf",
                              "--ann-set", "min_items=0"])
    assert res.exit_code == 2 and "dot-product" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--ann-set", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--ann", "exact"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["ann"]["kind"] == "exact" and ANN_FILE not in manifest["files"]
