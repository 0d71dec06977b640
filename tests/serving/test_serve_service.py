"""ModelService and ModelPool: raw ids, cold start, filters, similar items, reload."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from genrec.serving import BundleError, ModelPool, ModelService, UnknownItemError, load_bundle
from genrec.serving.service import UnknownModelError


@pytest.fixture(scope="module")
def ease(bundles) -> ModelService:
    return ModelService(load_bundle(bundles.ease))


def test_known_user_matches_model_recommend(ease) -> None:
    b = ease.bundle
    u = b.user_index["196"]
    r = ease.recommend(user="196", k=20)
    assert not r.cold_start and r.reason is None
    from genrec.data.interactions import Histories

    h = Histories(np.array([u]), np.array([0, len(b.history(u))]), b.history(u), b.n_items)
    expected = b.model.recommend(h, k=20)
    np.testing.assert_array_equal(r.items, expected.items[0])
    assert not set(r.items) & set(b.history(u))  # seen items excluded


def test_exclude_seen_false_can_return_history(ease) -> None:
    r = ease.recommend(user="196", k=ease.bundle.n_items, exclude_seen=False)
    assert len(r.items) == ease.bundle.n_items


def test_unknown_user_gets_popularity(ease) -> None:
    r = ease.recommend(user="no-such-user", k=5)
    assert r.cold_start and r.reason == "unknown user"
    pop = ease.bundle.popularity
    np.testing.assert_array_equal(pop[r.items], np.sort(pop)[::-1][:5])  # ties in any order
    r2 = ease.recommend(k=5)
    assert r2.cold_start and r2.reason == "empty history"


def test_unknown_user_with_history_is_personalised(ease) -> None:
    r = ease.recommend(user="no-such-user", history=["50", "181"], k=5)
    assert not r.cold_start
    assert ease.bundle.item_index["50"] not in r.items


def test_unknown_history_item_raises(ease) -> None:
    with pytest.raises(UnknownItemError, match="'nope'"):
        ease.recommend(history=["50", "nope"])


def test_filters(ease) -> None:
    cats = ease.bundle.categories
    r = ease.recommend(user="196", k=50, blocked_categories=["Drama", "Comedy"],
                       blocked_items=["50", "unknown-is-ignored"])
    assert len(r.items) == 50
    assert all(not {"Drama", "Comedy"} & set(cats[i]) for i in r.items)
    assert ease.bundle.item_index["50"] not in r.items
    r = ease.recommend(user="196", k=10, categories=["Horror"])
    assert all("Horror" in cats[i] for i in r.items)
    assert len(ease.recommend(user="196", k=10, categories=["no-such-genre"]).items) == 0


def test_similar_excludes_the_item(ease) -> None:
    r = ease.similar("50", k=5)
    titles = [ease.bundle.titles[i] for i in r.items]
    assert ease.bundle.item_index["50"] not in r.items
    assert "Return of the Jedi" in titles
    assert np.all(np.diff(r.scores) <= 0)
    with pytest.raises(UnknownItemError):
        ease.similar("nope")


def test_k_larger_than_catalogue(ease) -> None:
    r = ease.recommend(user="196", k=10_000)
    assert len(r.items) == ease.bundle.n_items - len(ease.bundle.history(ease.bundle.user_index[
        "196"]))


def test_pool_names_default_and_unknown(bundles) -> None:
    pool = ModelPool([(None, bundles.ease), ("popular", bundles.pop)])
    assert pool.names == ["ease", "popular"]
    assert pool.get().name == "ease" and pool.get("popular").name == "popular"
    with pytest.raises(UnknownModelError, match="served: ease, popular"):
        pool.get("x")
    with pytest.raises(ValueError, match="two models"):
        ModelPool([(None, bundles.ease), (None, bundles.ease)])


def test_pool_reload_swaps_and_refuses_corruption(bundles, tmp_path) -> None:
    path = tmp_path / "m"
    shutil.copytree(bundles.pop, path)
    pool = ModelPool([("m", path)])
    before = pool.get("m")
    assert pool.reload() == ["m"] and pool.get("m") is not before
    # A bundle replaced by a corrupted one is refused; the old model keeps serving.
    current = pool.get("m")
    state = path / "model" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(BundleError):
        pool.reload("m")
    assert pool.get("m") is current
    # A new bundle of another model kind at the same folder is picked up.
    shutil.rmtree(path)
    shutil.copytree(bundles.ease, path)
    pool.reload("m")
    assert pool.get("m").bundle.model.config.kind == "ease"


def test_queries_carry_real_user_ids(ease) -> None:
    b = ease.bundle
    u = b.user_index["196"]
    assert ease.prepare(user="196").user == u
    assert ease.prepare(user="196", history=["50"]).user == u  # extra history: still the user
    assert ease.prepare(history=["50"]).user == -1              # history-only: anonymous
    assert ease.prepare(user="no-such-user", history=["50"]).user == -1
    q = ease.prepare_similar("50")
    assert q.user == -1 and q.history.tolist() == [b.item_index["50"]]
    assert q.block is not None and q.block[b.item_index["50"]]


def test_batched_ranking_equals_one_by_one(ease) -> None:
    """Mixed queries ranked together (cold and warm, exclude_seen on and off, filters on some
    rows only, several k) get exactly their one-by-one answers."""
    queries = [
        ease.prepare(user="196", k=5),
        ease.prepare(user="no-such-user", k=3),
        ease.prepare(user="1", k=20, exclude_seen=False, blocked_categories=["Drama"]),
        ease.prepare(history=["50", "181"], k=7, categories=["Horror"]),
        ease.prepare_similar("50", k=4, blocked_items=["181"]),
        ease.prepare(k=2, categories=["Comedy"]),
        ease.prepare(user="186", k=10, blocked_items=["50"]),
    ]
    together = ease.rank(queries)
    for q, r in zip(queries, together, strict=True):
        alone = ease.rank([q])[0]
        np.testing.assert_array_equal(r.items, alone.items)
        np.testing.assert_allclose(r.scores, alone.scores, rtol=1e-6)
        assert r.cold_start == q.cold_start and len(r.items) <= q.k
    cats = ease.bundle.categories
    assert all("Drama" not in cats[i] for i in together[2].items)
    assert all("Horror" in cats[i] for i in together[3].items)
    assert together[1].cold_start and together[5].cold_start
    assert all("Comedy" in cats[i] for i in together[5].items)
    assert ease.bundle.item_index["181"] not in together[4].items
