"""Robust parsing of model output and grounding of output strings in the candidates."""

from __future__ import annotations

import polars as pl
import pytest

from genrec.data.interactions import IdMap
from genrec.evaluation.catalogue import Catalogue, Matcher
from genrec.evaluation.risks import entry_statuses
from genrec.llm import parse_json_object, parse_list


@pytest.mark.parametrize("text, items, ok", [
    ('{"ranking": ["a", "b"]}', ["a", "b"], True),
    ('["a", 3, {"id": "c"}]', ["a", "3", "c"], True),
    ('```json\n{"ranking": ["a"]}\n```', ["a"], True),
    ('Sure! Here it is: {"ranking": ["x", "y"]} hope it helps', ["x", "y"], False),
    ('{ "ranking" : [ "a", "b",\n\n      ', ["a", "b"], False),  # truncated at max_tokens
    ("1. Red Lipstick\n2) Blue Polish\n- Face Wash", ["Red Lipstick", "Blue Polish", "Face Wash"],
     False),
    ("a, b, c", ["a", "b", "c"], False),
    ("Once upon a time there was a girl", [], False),
    ("", [], False),
    ('{"other": 1}', [], False),
])
def test_parse_list(text: str, items: list[str], ok: bool) -> None:
    p = parse_list(text)
    assert p.items == items
    assert p.well_formed is ok
    assert (p.error is None) is ok


def test_parse_json_object() -> None:
    assert parse_json_object('x {"explanation": "hi"} y') == {"explanation": "hi"}
    assert parse_json_object("[1]") is None
    assert parse_json_object("nothing") is None


@pytest.mark.parametrize("text, items, ok", [
    # a bracketed number in the prose came first and used to win: ["4"], ["1"]
    ('Of the [4] candidates, my ranking: {"ranking": ["H8","G7","F6"]}', ["H8", "G7", "F6"],
     False),
    ('<think>Option [1] Fargo fits best.</think>\n{"ranking": ["H8","G7","F6"]}',
     ["H8", "G7", "F6"], True),
    ('<think>Option [1] {"ranking": ["A1"]} hmm</think> Final: {"ranking": ["H8", "G7"]}',
     ["H8", "G7"], False),
    ('Option [1] fits.</think>{"ranking": ["H8"]}', ["H8"], True),  # template opened <think>
    ('{"ranking": ["H8","G7","F6"]} (scores: [0.9, 0.5])', ["H8", "G7", "F6"], False),
    ('Ranking:\n```json\n{"ranking": ["H8","G7","F6"]}\n```', ["H8", "G7", "F6"], False),
    # no object with the key: the value with the most entries, ties to the last
    ('Top [1]: ["a", "b"] or maybe ["c", "d", "e"]', ["c", "d", "e"], False),
    ('First ["a", "b"], then ["c", "d"].', ["c", "d"], False),
    ('{"answer": {"ranking": ["x"]}, "scores": [1, 2, 3]} ok', ["x"], False),
])
def test_parse_list_picks_the_answer_among_embedded_json(text: str, items: list[str],
                                                         ok: bool) -> None:
    p = parse_list(text)
    assert p.items == items
    assert p.well_formed is ok


def test_parse_json_object_skips_reasoning_and_bracketed_prose() -> None:
    want = {"explanation": "hi"}
    assert parse_json_object('Option [1] wins: {"explanation": "hi"}') == want
    assert parse_json_object('<think>{"explanation": "no"}</think> {"explanation": "hi"}') \
        == want
    assert parse_json_object("<think>[1]</think> nothing") is None


def test_matching_stages(tiny_catalog: Catalogue, hashing_encoder) -> None:
    m = Matcher(tiny_catalog, hashing_encoder, embedding_threshold=0.5)
    cands = [0, 1, 2, 5]
    texts = ["i0", "I1", "Essie Nail Polish Pink", "essie nail polish pinky",
             "Revlon Lipstick Cherri red", "Olay Night Cream", "i7", "zzzz qqqq xxxx",
             "[i5] Revlon Lipstick Cherry", "ab"]
    got = m.match(texts, cands)
    assert [g.kind for g in got] == ["id", "id", "exact", "fuzzy", "embedding", "exact", "id",
                                     "none", "id", "none"]
    assert [g.item for g in got[:5]] == [0, 1, 2, 2, 5]
    # Real items that were not offered are out of candidate, not hallucinated; the second
    # name of Essie pink is a duplicate.
    assert entry_statuses(m.resolve([texts], [cands])) == [[
        "valid", "valid", "valid", "duplicate", "valid", "out_of_candidate",
        "out_of_candidate", "hallucinated", "duplicate", "hallucinated"]]


def test_embedding_stage_with_real_encoder(tiny_catalog: Catalogue, sentence_encoder) -> None:
    m = Matcher(tiny_catalog, sentence_encoder, fuzzy_threshold=0.99, embedding_threshold=0.6)
    got = m.match(["a cherry red lip stick by Revlon", "shampoo for dry hair"], [5, 7, 3])
    assert [(g.item, g.kind) for g in got] == [(5, "embedding"), (7, "embedding")]
    assert m.encoder_s > 0


def test_catalog_from_dataset(tiny, tiny_catalog: Catalogue) -> None:
    cat = tiny_catalog
    assert len(cat) == tiny.n_items
    # "Beauty" (8 of 8 items) and "Makeup" (5 of 8) are on most items: they say little
    assert not {a.value for a in cat.vocab} & {"Beauty", "Makeup"}
    assert cat.values(0, "brand") == ["OPI"] and cat.leaf(0) == "Nail Polish"
    assert "price: $9.50" in cat.describe(0)
    assert cat.by_title("opi nail lacquer RED") == [0] and cat.by_id("I3") == 3
    assert {a.value for a in cat.shared(0, 1)} == {"OPI", "Nails", "Nail Polish"}


def test_catalog_unescapes_html() -> None:
    cat = Catalogue(pl.DataFrame({"item": [0, 1], "title": ["L&#39;Oreal Mascara", "x"]}),
                    item_map=IdMap(["a", "b"]), max_share=1.0)
    assert cat.titles[0] == "L'Oreal Mascara" and cat.by_title("l oreal mascara") == [0]
