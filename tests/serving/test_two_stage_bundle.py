"""A two-stage model (EASE top-20 -> ranker) exported as a bundle answers /recommend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.data.interactions import Histories
from genrec.data.sources import load_data
from genrec.models.base import FitContext
from genrec.models.ranker import TwoStage
from genrec.models.registry import model_config
from genrec.serving import ServeSettings, create_app, export_bundle, load_bundle
from genrec.serving.testing import ThreadServer

pytestmark = pytest.mark.slow  # fits EASE twice and a small ranker on ML-100K (~10 s)


@dataclass
class Served:
    model: TwoStage
    bundle: Path
    client: httpx.Client
    user_map: object
    item_raw: list[str]


@pytest.fixture(scope="module")
def served(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = load_config(None, [f"dataset.data_dir={data_dir}", "dataset.name=ml-100k"])
    ds = load_data(cfg.dataset)
    model = TwoStage(model_config("two_stage", retriever={"kind": "ease", "l2": 500.0},
                                  candidates=20, holdout=1,
                                  ranker={"epochs": 1, "progress": False, "text": "off"}))
    model.fit(ds.interactions, FitContext(items=ds.items, seed=0, progress=False))
    root = tmp_path_factory.mktemp("two_stage")
    bundle = export_bundle(model, ds, root / "two_stage")
    # Feedback in the test's folder, not ./genrec-feedback.db in the checkout.
    app = create_app([bundle], settings=ServeSettings(feedback_url=str(root / "fb.db")))
    try:
        with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            yield Served(model, bundle, client, ds.user_map, ds.item_map.raw.to_list())
    finally:
        torch.set_num_threads(before)


def test_bundle_loads_with_its_nested_retriever(served: Served) -> None:
    b = load_bundle(served.bundle)
    assert isinstance(b.model, TwoStage) and b.model.retriever_.config.kind == "ease"
    assert "model/retriever/state.safetensors" in b.manifest["files"]


def test_recommend_known_user_matches_the_model(served: Served) -> None:
    c = served.client
    t0 = time.perf_counter()
    r = c.post("/recommend", json={"user": "196", "k": 10})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    items = [it["item"] if isinstance(it, dict) else it for it in r.json()["items"]]
    assert len(items) == 10
    b = load_bundle(served.bundle)
    dense = int(served.user_map.to_index(["196"])[0])  # type: ignore[attr-defined]
    hist = b.history(dense)
    h = Histories(np.array([dense]), np.array([0, len(hist)]), np.asarray(hist, dtype=np.int64),
                  b.n_items)
    expected = [served.item_raw[i] for i in served.model.recommend(h, 10).items[0]]
    assert [str(i) for i in items] == expected
    assert elapsed < 5.0  # one user, 20 candidates: well within the service's budget


def test_recommend_from_a_history_alone(served: Served) -> None:
    r = served.client.post("/recommend", json={"history": ["50", "181", "100"], "k": 5})
    assert r.status_code == 200, r.text
    items = [it["item"] if isinstance(it, dict) else it for it in r.json()["items"]]
    assert len(items) == 5 and not {"50", "181", "100"} & {str(i) for i in items}
