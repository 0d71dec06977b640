"""Critique parsing, session state, save/restore, and the template simulated user."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.llm import (
    ConversationalRecommender,
    CritiqueParser,
    SessionState,
    SimulatedUser,
    SimulationConfig,
    simulate,
)
from genrec.models.registry import build_model, model_config


@pytest.fixture(scope="module")
def tiny_engine(tiny, tiny_catalog):
    model = build_model(model_config("pop")).fit(tiny.interactions)
    return ConversationalRecommender(model, tiny_catalog, CritiqueParser(tiny_catalog), k=2)


def keys(attrs) -> list[str]:
    return [a.key for a in attrs]


def test_parser_exact_negation_price_ordinals(tiny_catalog) -> None:
    p = CritiqueParser(tiny_catalog)
    c = p.parse("I'm looking for Nail Polish, but not from Essie. Under $9.75 please.")
    assert keys(c.like) == ["categories=Nail Polish"] and keys(c.avoid) == ["brand=Essie"]
    assert c.price_max == 9.75
    c = p.parse("not the second one, more like the first one", shown=[4, 5])
    assert c.avoid_items == [5] and c.like_items == [4]
    c = p.parse("Cheaper please", shown=[4, 7])
    assert c.price_max == pytest.approx(0.9 * np.median([25.0, 4.5]), abs=0.01)
    c = p.parse("Yes, I'll take Olay Night Cream", shown=[3, 4])
    assert c.accept and c.like_items == [4]
    assert p.parse("").empty and p.parse("hmm").empty
    # "OPI" is short: only matched when written as a name, and "you're" never finds a brand
    assert keys(p.parse("anything by OPI").like) == ["brand=OPI"]
    assert p.parse("you're opi-nionated").like == []


def test_parser_paraphrase_needs_the_real_encoder(tiny_catalog, sentence_encoder) -> None:
    assert CritiqueParser(tiny_catalog).parse("some nail varnish").like == []
    p = CritiqueParser(tiny_catalog, sentence_encoder).warmup()
    c = p.parse("do you have some nail varnish?")
    assert keys(c.like) == ["categories=Nail Polish"]
    assert c.matched["categories=Nail Polish"].startswith("embedding:")
    c = p.parse("no lip stuff, please")
    assert keys(c.avoid) == ["categories=Lips"] or keys(c.avoid) == ["categories=Lipstick"]
    assert p.encoder_s > 0


def test_state_update_rules() -> None:
    from genrec.evaluation.catalogue import Attribute
    from genrec.llm import Critique

    st = SessionState()
    sv = frozenset({"brand"})
    st.apply(Critique(like=[Attribute("brand", "OPI"), Attribute("categories", "Nails")]), sv)
    st.apply(Critique(like=[Attribute("brand", "Essie")], avoid=[Attribute("categories", "Nails")],
                      price_max=10.0), sv)
    assert st.like == ["brand=Essie"] and st.avoid == ["categories=Nails"]
    assert st.price_max == 10.0


def test_session_filters_and_names_items(tiny_engine, tiny_catalog) -> None:
    s = tiny_engine.start([0], user=0)
    first = s.respond()
    assert len(first.items) == 2 and 0 not in first.items
    assert all(tiny_catalog.titles[i] in first.text for i in first.items)
    r = s.respond("No Nail Polish, please. Something under $9.")
    assert "Got it" in r.text
    for i in r.items:
        assert "Nail Polish" not in tiny_catalog.values(i, "categories")
        assert tiny_catalog.prices[i] <= 9
        assert i not in first.items  # never shown twice
    assert s.state.turn == 2 and [t["role"] for t in s.state.transcript] == ["system", "user", "system"]
    r = tiny_engine.start([0]).respond("I'd prefer something from Dove")
    assert r.items[0] == 7  # the only Dove item comes first


def test_save_restore_round_trip(tiny_engine, tmp_path) -> None:
    a = tiny_engine.start([0, 1], user=1)
    a.respond()
    a.respond("No Lipstick")
    path = tmp_path / "session.json"
    a.save(path)
    b = tiny_engine.restore(path)
    assert b.state == a.state
    assert tiny_engine.restore(a.to_json()).state == a.state
    ra, rb = a.respond("Something from Olay"), b.respond("Something from Olay")
    assert ra.items == rb.items and ra.text == rb.text
    assert a.state == b.state


def test_simulated_user_reveals_target_facts(tiny_catalog) -> None:
    u = SimulatedUser(4, tiny_catalog, np.random.default_rng(0))  # Olay Night Cream, $25
    ok, text = u.respond([0, 1])
    assert not ok and "Creams & Moisturizers" in text
    assert "Not OPI" in text  # rejects an attribute of the shown items the target lacks
    ok, text = u.respond([2])
    assert "Face" in text or "$" in text
    ok, text = u.respond([3, 4])
    assert ok and "Olay Night Cream" in text


def test_simulation_critiques_beat_paging_on_ml100k(ml100k) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    cfg = SimulationConfig(users=60, turns=5, seed=0)
    base = simulate(ConversationalRecommender(model, cat, use_critiques=False), te, cfg)
    conv = simulate(ConversationalRecommender(model, cat), te, cfg)
    assert conv["success_rate"] > base["success_rate"]
    assert base["success_at"][0] == conv["success_at"][0]  # turn 1 is the model alone
    assert conv["recall"]["@10"][-1] == conv["success_rate"]
    assert len(conv["recall"]["@20"]) == 5 and conv["users"] == 60
    assert conv["mean_turns_to_success"] is not None and conv["overhead_ms_per_turn"]["p50"] < 5
    assert conv["transcripts"] and conv["transcripts"][0]["transcript"][0]["role"] == "system"


@pytest.mark.parametrize("utterance, price_max, price_min", [
    ("under $1,000", 1000.0, None),
    ("something under $1,299.99, please", 1299.99, None),
    ("under 1,000 dollars", 1000.0, None),
    ("under €10", 10.0, None),
    ("below £12.50", 12.5, None),
    ("under 15", 15.0, None),
    ("not over $50", 50.0, None),
    ("never more than $40", 40.0, None),
    ("no less than $5", None, 5.0),
    ("not under $20, but under $1,500", 1500.0, 20.0),
    ("over $10 and under $20", 20.0, 10.0),
    ("under $15, please", 15.0, None),  # the simulator's phrasing: a comma, not a separator
])
def test_parser_price_bounds(tiny_catalog, utterance: str, price_max, price_min) -> None:
    c = CritiqueParser(tiny_catalog).parse(utterance)
    assert (c.price_max, c.price_min) == (price_max, price_min)


def test_negated_price_bound_does_not_negate_attributes(tiny_catalog) -> None:
    c = CritiqueParser(tiny_catalog).parse("Essie not over $9")
    assert keys(c.like) == ["brand=Essie"] and c.avoid == [] and c.price_max == 9.0


def test_parser_normalises_the_utterance_like_the_catalogue(tiny_catalog) -> None:
    import unicodedata

    import polars as pl

    from genrec.data.interactions import Dataset
    from genrec.evaluation.catalogue import Catalogue

    p = CritiqueParser(tiny_catalog)
    assert keys(p.parse("ＯＰＩ please").like) == ["brand=OPI"]  # full-width letters
    assert p.parse("under ＄２０").price_max == 20.0
    items = pl.DataFrame({"item": ["a", "b", "c"], "title": ["x1", "x2", "x3"],
                          "brand": ["L'Oréal Paris", "Neutrogena", "Olay"]})
    inter = pl.DataFrame({"user": ["u", "u", "u"], "item": ["a", "b", "c"], "timestamp": [0, 1, 2]})
    p = CritiqueParser(Catalogue.from_dataset(Dataset.from_raw("t", inter, items)))
    nfd = unicodedata.normalize("NFD", "I want Olay, no L'Oréal Paris")  # "e" + combining accent
    c = p.parse(nfd)
    assert keys(c.avoid) == ["brand=L'Oréal Paris"] and keys(c.like) == ["brand=Olay"]


def test_avoiding_a_liked_item_undoes_the_like() -> None:
    from genrec.llm import Critique

    st = SessionState()
    st.apply(Critique(like_items=[5]), frozenset())
    st.apply(Critique(avoid_items=[5]), frozenset())
    assert st.like_items == [] and st.avoid_items == [5]
    st.apply(Critique(like_items=[5]), frozenset())
    assert st.like_items == [5] and st.avoid_items == []
