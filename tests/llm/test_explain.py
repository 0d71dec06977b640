"""Template and LLM explanations, and the grounding / contradiction checks."""

from __future__ import annotations

import json

import polars as pl
import pytest

from genrec.data.interactions import IdMap
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.grounding import GroundingChecker
from genrec.llm import Explainer, LLMError
from genrec.llm.scripted import ScriptedClient


def test_template_is_grounded_and_cites_history(tiny_catalog) -> None:
    ex = Explainer(tiny_catalog)
    e = ex.explain(1, history=[3, 0, 5])  # OPI Blue; history holds OPI Red
    assert e.source == "template" and e.report.ok and e.report.score == 1.0
    assert [h for h, _ in e.evidence] == [0]
    assert "OPI Nail Lacquer Red" in e.text and "OPI" in e.text and "Nail Polish" in e.text
    kinds = {c.kind for c in e.report.claims}
    assert kinds == {"attribute", "item"}


def test_template_without_shared_history(tiny_catalog) -> None:
    e = Explainer(tiny_catalog).explain(7, history=[4])
    assert e.evidence == [] and e.report.ok and "Shampoos" in e.text


def test_checker_flags_ungrounded_and_contradictions(tiny_catalog) -> None:
    chk = GroundingChecker(tiny_catalog)
    item, hist = 1, [0, 3]
    assert chk.check("A Nail Polish by OPI, like OPI Nail Lacquer Red.", item, hist).ok
    r = chk.check("A great Shampoos pick by Revlon.", item, hist)
    assert {c.text for c in r.ungrounded} == {"shampoos", "revlon"}
    # Another brand than OPI, and a category the item's categories do not hold.
    assert {c.text for c in r.contradictions} == {"shampoos", "revlon"}
    r = chk.check("This is not a Nail Polish.", item, hist)
    assert r.contradictions and not r.ok
    r = chk.check('You loved "Olay Night Cream".', item, hist)  # not in the history
    assert [(c.kind, c.status) for c in r.ungrounded] == [("item", "outside_history")]
    r = chk.check('Like "A Lipstick That Never Was".', item, hist)
    assert [(c.kind, c.status) for c in r.ungrounded] == [("item", "hallucinated")]
    assert chk.check("Only $10.00!", item, hist).ok
    r = chk.check("Only $3!", item, hist)
    assert r.contradictions and r.contradictions[0].kind == "price"
    assert chk.check("Nice.", item, hist).score == 1.0


def test_llm_text_kept_when_grounded_else_template(tiny_catalog) -> None:
    good = json.dumps({"explanation": "An OPI Nail Polish, like the OPI Nail Lacquer Red you"
                                      " bought."})
    bad = json.dumps({"explanation": "A Revlon Shampoos bestseller."})
    ex = Explainer(tiny_catalog, ScriptedClient([good, bad, "Once upon a time", LLMError("x")]))
    out = [ex.explain(1, [0, 3]) for _ in range(4)]
    assert [e.source for e in out] == ["llm", "fallback", "fallback", "fallback"]
    assert all(e.report.ok for e in out)
    assert out[1].llm_report is not None and not out[1].llm_report.ok
    s = ex.stats_
    assert (s.llm_texts, s.llm_rejected, s.llm_failures, s.final_ungrounded) == (3, 2, 1, 0)
    assert s.rates()["llm_contradiction_rate"] > 0 and s.llm_claims.contradicted == 2
    d = out[1].to_dict(tiny_catalog)
    assert d["item"] == "i1" and d["llm_grounding"]["n_ungrounded"] == 2


@pytest.fixture(scope="module")
def movies() -> Catalogue:
    """Ten films, two of them sharing a title (the reviewer's reproduction)."""
    titles = ["Toy Story (1995)", "Heat (1995)", "Sabrina (1954)", "Sabrina (1995)",
              "Toy Story 2 (1999)", "Casino (1995)", "Se7en (1995)", "Fargo (1996)",
              "Alien (1979)", "Aliens (1986)"]
    genres = [["Comedy"], ["Action"], ["Romance"], ["Romance"], ["Comedy"], ["Drama"],
              ["Thriller"], ["Crime"], ["SciFi"], ["SciFi"]]
    items = pl.DataFrame({"item": list(range(10)), "title": titles, "genres": genres})
    return Catalogue(items, 10, item_map=IdMap([f"m{j}" for j in range(10)]))


@pytest.mark.parametrize("text, ok, cited", [
    # Toy Story 2 is neither the explained film (Fargo) nor in the history: rejected
    ("Fargo is a Crime film; fans of Toy Story 2 (1999) love it.", False,
     [("toy story 2 1999", "outside_history", 4)]),
    ("Fargo is a Crime film; fans of Toy Story 2 love it.", False,
     [("toy story 2", "outside_history", 4)]),
    # a history item, with or without its year
    ("Fargo is a Crime film, like Casino (1995) which you watched.", True,
     [("casino 1995", "grounded", 5)]),
    ("Fargo (1996) is a Crime film.", True, []),                  # the explained item only
    ("A Crime story: fans of a toy story will smile.", True, []),  # prose, not a title
    # an invented title cannot be told from prose (documented limitation)
    ("Fargo is a Crime film; fans of The Godfather love it.", True, []),
])
def test_checker_flags_other_catalogue_items_named_in_text(movies, text: str, ok: bool,
                                                          cited: list) -> None:
    rep = GroundingChecker(movies).check(text, 7, [1, 5])
    assert rep.ok is ok
    assert [(c.text, c.status, c.item) for c in rep.claims if c.kind == "item"] == cited
    got = Explainer(movies, ScriptedClient([json.dumps({"explanation": text})])).explain(7, [1, 5])
    assert got.source == ("llm" if ok else "fallback") and got.report.ok


def test_title_index_is_built_once_and_finds_a_title_in_a_12k_catalogue() -> None:
    n = 12_000
    titles = [f"Product {j} Deluxe Edition Number {j % 97} Series ({1950 + j % 70})"
              for j in range(n)]
    cat = Catalogue(pl.DataFrame({"item": list(range(n)), "title": titles}), n)
    chk = GroundingChecker(cat)
    assert GroundingChecker(cat)._titles is chk._titles           # built once per catalogue
    text = "A lovely pick that matches your taste. " * 8 + f"Like {titles[42]}."
    rep = chk.check(text, 7, [1, 2, 3])
    assert [(c.status, c.item) for c in rep.claims] == [("outside_history", 42)]


def test_ml100k_templates_all_grounded(ml100k) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    h = te.histories.slice(0, 30)
    rec = model.recommend(h, 5)
    ex = Explainer(cat)
    for r in range(len(h)):
        hist = h.items[h.indptr[r]:h.indptr[r + 1]].tolist()
        for e in ex.explain_many(rec.items[r], hist):
            assert e.report.ok, (e.text, e.report.to_dict())
    assert ex.stats_.explanations == 150 and ex.stats_.final_ungrounded == 0
