"""Every registered model, served, answers exactly what ``Recommender.recommend`` answers.

Each model of :data:`genrec.models.registry.MODELS` is fitted (tiny config) on a slice of
ML-100K, exported as a bundle and served over real HTTP. Then:

* ``/recommend`` for a known user equals ``model.recommend`` for that user (their real dense
  id and stored history), also with a filter (as ``block`` / ``allow`` masks) and with extra
  history appended (the user keeps their id);
* a history-only request equals ``model.recommend`` for the anonymous user ``-1`` with that
  history;
* ``/similar`` equals ``model.recommend`` for user ``-1`` with the one-item history, and
  differs between items for every model but popularity;
* batch inference (``recommend_batch`` and ``genrec recommend``) equals ``model.recommend``.

Before serving passed real user ids, every known user of a factor model got user 0's list:
users 5, 17 and 33 (the reported example) must get different lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from genrec.cli import app as cli_app
from genrec.data.interactions import Columns, Dataset, Histories
from genrec.data.recipes import load_dataset
from genrec.models.base import FitContext, Recommender
from genrec.models.ranking import rank
from genrec.models.registry import MODELS, model_config
from genrec.serving import (
    Bundle,
    ServeSettings,
    create_app,
    export_bundle,
    load_bundle,
    recommend_batch,
)
from genrec.serving.testing import ThreadServer

N_USERS = 120  # raw ML-100K users "1".."120"
LAST = 40      # their 40 most recent ratings: ~4.6k interactions, ~1.1k items
K = 10
USERS = ["5", "17", "33", "1", "64", "120"]
ITEMS = ["50", "181", "1"]  # Star Wars, Return of the Jedi, Toy Story (all in the slice)

_SEQ = {"dim": 16, "max_len": 10, "loss": "ce",
        "train": {"epochs": 1, "batch_size": 256, "device": "cpu", "progress": False}}
_FACTOR = {"dim": 16, "train": {"epochs": 2, "batch_size": 512, "device": "cpu",
                                "progress": False}}
TINY: dict[str, dict[str, Any]] = {
    "pop": {},
    "itemknn": {"k": 20},
    "ease": {},
    "sasrec": _SEQ | {"n_layers": 1, "n_heads": 2},
    "gru4rec": _SEQ,
    "bert4rec": _SEQ | {"n_layers": 1, "n_heads": 2},
    "hstu": _SEQ | {"n_layers": 1, "n_heads": 2},
    "bprmf": _FACTOR,
    "lightgcn": _FACTOR | {"n_layers": 2},
    "simplex": _FACTOR | {"n_negatives": 8, "history_len": 10},
    "graph_heuristic": {},
    "tiger": {"item_vectors": "text", "text": {"encoder": "hashing:64", "cache": False},
              "tokenizer": {"kind": "rqkmeans", "n_levels": 2, "codebook_size": 8},
              "dim": 16, "n_heads": 2, "ff_dim": 32, "n_layers": 1, "max_len": 5,
              "beam_size": 16,
              "train": {"epochs": 5, "batch_size": 128, "device": "cpu", "progress": False}},
    "two_stage": {"candidates": 20, "ranker": {"epochs": 1, "text": "off"}},
}
"""A tiny config for every registered model (the test below fails on a new one)."""


def test_every_registered_model_has_a_tiny_config() -> None:
    assert set(TINY) == set(MODELS)


@dataclass
class Served:
    dataset: Dataset
    models: dict[str, Recommender[Any]]
    bundles: dict[str, Path]
    loaded: dict[str, Bundle]
    client: httpx.Client


@pytest.fixture(scope="module")
def served(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    full = load_dataset("ml-100k", data_dir=data_dir)
    keep = np.flatnonzero(full.user_map.raw.cast(pl.Int64).to_numpy() <= N_USERS)
    frame = (full.interactions.frame.filter(pl.col(Columns.user).is_in(keep))
             .group_by(Columns.user, maintain_order=True).tail(LAST))
    ds = full.subset(frame)
    root = tmp_path_factory.mktemp("parity")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only cost on a shared machine
    models: dict[str, Recommender[Any]] = {}
    bundles: dict[str, Path] = {}
    for kind, params in TINY.items():
        model = MODELS[kind](model_config(kind, **params))
        model.fit(ds.interactions, FitContext(items=ds.items, seed=0, progress=False))
        models[kind] = model
        bundles[kind] = export_bundle(model, ds, root / kind)
    loaded = {kind: load_bundle(path) for kind, path in bundles.items()}
    # Feedback in the test's folder, not ./genrec-feedback.db in the checkout.
    app = create_app(list(bundles.values()),
                     settings=ServeSettings(feedback_url=str(root / "fb.db")))
    try:
        with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            yield Served(ds, models, bundles, loaded, client)
    finally:
        torch.set_num_threads(before)


def _raw_items(s: Served, dense: np.ndarray) -> list[str]:
    raw = s.dataset.item_map.raw
    return [raw[int(i)] for i in dense if i >= 0]


def _expected(s: Served, kind: str, users: list[int], histories: list[np.ndarray],
              **kw: Any) -> list[list[str]]:
    """``model.recommend`` of the fitted (in-memory) model, as raw item ids per row."""
    lengths = [len(h) for h in histories]
    h = Histories(np.asarray(users, dtype=np.int64),
                  np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                  np.concatenate(histories).astype(np.int64), s.dataset.n_items)
    rec = s.models[kind].recommend(h, K, **kw)
    return [_raw_items(s, row) for row in rec.items]


def _dense_user(s: Served, raw: str) -> int:
    return int(s.dataset.user_map.to_index([raw])[0])


def _history(s: Served, user: int) -> np.ndarray:
    return s.dataset.interactions.histories(np.array([user])).items


def _post(s: Served, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = s.client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _served_items(body: dict[str, Any]) -> list[str]:
    return [i["item"] for i in body["items"]]


@pytest.mark.parametrize("kind", list(TINY))
def test_served_recommendations_equal_model_recommend(served: Served, kind: str) -> None:
    s = served
    got = {}
    for raw in USERS:
        u = _dense_user(s, raw)
        body = _post(s, "/recommend", {"model": kind, "user": raw, "k": K})
        assert body["cold_start"] is False
        got[raw] = _served_items(body)
        assert got[raw] == _expected(s, kind, [u], [_history(s, u)])[0], raw
    if kind != "pop":  # one list for every user was the bug
        lists = [tuple(got[u]) for u in ("5", "17", "33")]
        assert len(set(lists)) == 3, f"{kind}: users 5, 17, 33 got {lists}"

    # A filter travels as a block / allow mask.
    cats = s.loaded[kind].categories
    drama = torch.tensor(["Drama" in c for c in cats])
    comedy = torch.tensor(["Comedy" in c for c in cats])
    u = _dense_user(s, "17")
    body = _post(s, "/recommend", {"model": kind, "user": "17", "k": K, "filters": {
        "blocked_categories": ["Drama"], "blocked_items": ["50"], "categories": ["Comedy"]}})
    block = drama.clone()
    block[s.dataset.item_map.to_index(["50"])[0]] = True
    assert _served_items(body) == _expected(s, kind, [u], [_history(s, u)], block=block,
                                            allow=comedy)[0]

    # A known user with extra history keeps their id.
    extra = ["1", "181"]
    body = _post(s, "/recommend", {"model": kind, "user": "33", "history": extra, "k": K})
    u = _dense_user(s, "33")
    hist = np.concatenate([_history(s, u), s.dataset.item_map.to_index(extra)])
    assert _served_items(body) == _expected(s, kind, [u], [hist])[0]

    # History-only, and an unknown user with a history: the anonymous user -1.
    hist_raw = ["50", "181", "172", "174"]
    hist = s.dataset.item_map.to_index(hist_raw)
    want = _expected(s, kind, [-1], [hist])[0]
    for extra_user in ({}, {"user": "no-such-user"}):
        body = _post(s, "/recommend", {"model": kind, "history": hist_raw, "k": K} | extra_user)
        assert body["cold_start"] is False
        assert _served_items(body) == want

    # /similar: user -1 with the one-item history; the item itself never comes back.
    sims = {}
    for item in ITEMS:
        body = _post(s, "/similar", {"model": kind, "item": item, "k": K})
        sims[item] = _served_items(body)
        assert item not in sims[item]
        assert sims[item] == _expected(s, kind, [-1], [s.dataset.item_map.to_index([item])])[0]
    if kind != "pop":
        lists = [tuple(v) for v in sims.values()]
        assert len(set(lists)) == len(ITEMS), f"{kind}: /similar gave {lists}"


@pytest.mark.parametrize("kind", list(TINY))
def test_batch_inference_equals_model_recommend(served: Served, kind: str,
                                                tmp_path: Path) -> None:
    s = served
    # recommend_batch over every known user, in one chunk.
    out = tmp_path / "all.parquet"
    recommend_batch(s.loaded[kind], None, out, k=K, chunk_size=4096)
    table = pl.read_parquet(out)
    hist = s.dataset.interactions.histories()
    rec = s.models[kind].recommend(hist, K)
    raw_users = s.dataset.user_map.raw
    got = table.group_by("user", maintain_order=True).agg(pl.col("item"))
    want = {raw_users[int(u)]: _raw_items(s, row) for u, row in zip(hist.users, rec.items,
                                                                     strict=True)}
    assert dict(zip(got["user"], got["item"].to_list(), strict=True)) == want
    assert not table["cold_start"].any()

    # `genrec recommend` for a users file with an unknown user (popularity answer).
    users = ["5", "17", "33", "ghost"]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    res = CliRunner().invoke(cli_app, [
        "recommend", "--model", str(s.bundles[kind]), "--users", str(tmp_path / "users.txt"),
        "--k", str(K), "--out", str(tmp_path / "cli.parquet"), "--quiet"])
    assert res.exit_code == 0, res.output
    table = pl.read_parquet(tmp_path / "cli.parquet")
    dense = [_dense_user(s, u) for u in users[:3]]
    want_rows = _expected(s, kind, dense, [_history(s, u) for u in dense])
    pop = torch.from_numpy(s.dataset.interactions.item_counts().astype(np.float32))[None]
    want_rows.append(_raw_items(s, rank(pop, None, K)[0][0].numpy()))
    for u, want_items in zip(users, want_rows, strict=True):
        rows = table.filter(pl.col("user") == u)
        assert rows["item"].to_list() == want_items, u
        assert rows["cold_start"].to_list() == [u == "ghost"] * len(want_items)
