"""Generative risks on handcrafted outputs: matching, hallucination, duplicates, policy,
grounding, and the one definition of every rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.data.interactions import Histories, IdMap
from genrec.evaluation.catalogue import Catalogue, Matcher, normalize_title
from genrec.evaluation.grounding import Explanation, GroundingChecker, explanation_grounding
from genrec.evaluation.risks import (
    RATES,
    AttributeConstraint,
    EntryCounts,
    Policy,
    duplicate_rate,
    entry_statuses,
    hallucination_rate,
    history_membership,
    policy_violations,
)

ITEMS = pl.DataFrame({
    "item": [0, 1, 2, 3, 4, 5],
    "title": ["Usual Suspects, The", "Toy Story", "Heat", "Se7en", "Casablanca", "Toy Story 2"],
    "year": [1995, 1995, 1995, 1995, 1942, 1999],
    "genres": [["Crime", "Thriller"], ["Animation", "Comedy", "Children's"], ["Action", "Crime"],
               ["Crime", "Thriller"], ["Drama", "Romance"], ["Animation", "Comedy"]],
})
KEYWORDS = ["suspect", "toy", "heat", "seven", "casablanca"]


def keyword_encoder(texts: list[str]) -> np.ndarray:
    """A fake text encoder: one dimension per keyword, plus a per-text noise dimension."""
    out = np.zeros((len(texts), len(KEYWORDS) + 1), dtype=np.float32)
    for i, t in enumerate(texts):
        low = t.lower().replace("se7en", "seven")
        hits = [j for j, w in enumerate(KEYWORDS) if w in low]
        out[i, hits] = 1.0
        out[i, -1] = 0.0 if hits else 1.0
    return out


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue(ITEMS, 6, item_map=IdMap([f"m{i}" for i in range(6)]))


@pytest.fixture
def matcher(catalogue: Catalogue) -> Matcher:
    return Matcher(catalogue, keyword_encoder)


@pytest.fixture
def histories() -> Histories:
    return Histories.from_lists([[1, 2], [4]], n_items=6, users=[0, 1])


OUTPUTS = [["Toy Story", "Casablanka", "The Matrix Revolutions 4", "toy story (1995)", "Se7en"],
           [4, 99, "m2"]]


def test_normalize_title() -> None:
    assert normalize_title("Usual Suspects, The (1995)") == "the usual suspects"
    assert normalize_title("  THE usual-suspects! ") == "the usual suspects"


def test_match_kinds_exact_normalized_fuzzy_embedding_none(catalogue: Catalogue,
                                                         matcher: Matcher) -> None:
    got = matcher.match(["Heat", "the usual suspects", "Casablanka",
                         "Seven, the Fincher thriller", "Toy Story 4", "Completely Invented Film"])
    assert [m.kind for m in got] == ["exact", "normalized", "fuzzy", "embedding", "none", "none"]
    assert [m.item for m in got] == [2, 0, 4, 3, -1, -1]
    assert got[2].score == pytest.approx(0.9) and got[3].score == pytest.approx(1.0)
    # A sequel number is not a typo: "Toy Story 4" never fuzzily becomes "Toy Story" (or 2).
    assert Matcher(catalogue).match(["Seven, the Fincher thriller"])[0].kind == "none"


def test_candidates_split_out_of_candidate_from_hallucinated(matcher: Matcher) -> None:
    # Offered: Heat (2) and Casablanca (4). Exact names of other real items are out of
    # candidate; fuzzy and embedding matching only recover the offered items.
    got = matcher.match(["m2", "Toy Story", "Casablanka", "Se7en thriller by Fincher",
                         "[m4] the one with Bogart", "Toy Storyy"], candidates=[2, 4])
    assert [(m.item, m.kind, m.offered) for m in got] == [
        (2, "id", True), (1, "exact", False), (4, "fuzzy", True), (-1, "none", False),
        (4, "id", True), (-1, "none", False)]


def test_hallucination_rate(matcher: Matcher) -> None:
    r = matcher.resolve(OUTPUTS)
    assert [x.tolist() for x in r.items] == [[1, 4, -1, 1, 3], [4, -1, 2]]
    h = hallucination_rate(r)
    assert h["rate"] == pytest.approx(2 / 8) and h["n"] == 8
    assert h["by_kind"] == {"id": 2, "exact": 2, "normalized": 1, "fuzzy": 1, "embedding": 0,
                            "none": 2}
    assert h["hallucinated"] == [(0, 2), (1, 1)]
    np.testing.assert_allclose(h["per_output"], [1 / 5, 1 / 3])
    titles_only = matcher.resolve([["m2", "Heat"]], kind="titles")
    assert titles_only.kinds == [["none", "exact"]]
    ids_only = matcher.resolve([["m2", "Heat"]], kind="ids")
    assert ids_only.kinds == [["id", "none"]]


def test_duplicate_rate_compares_resolved_items(matcher: Matcher) -> None:
    d = duplicate_rate(matcher.resolve(OUTPUTS))
    # "Toy Story" and "toy story (1995)" are one item.
    assert d["rate"] == pytest.approx(1 / 8)
    assert d["outputs_with_duplicates"] == pytest.approx(0.5)
    # A repeated hallucination counts once, as a hallucination: the statuses partition the
    # entries, so the rates add up.
    r = matcher.resolve([["Foo Bar Baz", "foo bar baz!", "Heat", "Heat"]])
    assert entry_statuses(r) == [["hallucinated", "hallucinated", "valid", "duplicate"]]
    assert duplicate_rate(r)["rate"] == pytest.approx(1 / 4)


def test_entry_counts_are_the_one_definition(matcher: Matcher) -> None:
    r = matcher.resolve([["m2", "Toy Story", "Heat", "Invented Film Title", "m4"], [3, -1]],
                        candidates=[[2, 4], [3]])
    c = EntryCounts.from_resolved(r)
    assert (c.entries, c.hallucinated, c.out_of_candidate, c.duplicates) == (7, 2, 1, 1)
    assert c.matched["id"] == 3 and sum(c.matched.values()) == 3
    rates = c.rates()
    assert rates == {"hallucination_rate": 2 / 7, "out_of_candidate_rate": 1 / 7,
                     "invalid_rate": 3 / 7, "duplicate_rate": 1 / 7}
    assert set(rates) <= set(RATES) and hallucination_rate(r)["rate"] == rates[
        "hallucination_rate"]
    total = EntryCounts()
    total.add(c)
    total.add(c)
    assert total.entries == 14 and total.rates() == rates
    assert EntryCounts().rates()["hallucination_rate"] == 0.0


def test_policy_violations(catalogue: Catalogue, matcher: Matcher,
                           histories: Histories) -> None:
    policy = Policy(blocked_categories=["Animation"], blocked_items=[2],
                    constraints=[AttributeConstraint(attribute="year", op="ge", value=1950)])
    v = policy_violations(matcher.resolve(OUTPUTS), catalogue, policy,
                          users=np.array([0, 1]), histories=histories)
    assert v["by_rule"] == {"blocked_item": 1, "blocked_category": 2, "year ge 1950": 2,
                            "seen": 3}
    assert (0, 0, "blocked_category") in v["violations"]
    assert (1, 0, "seen") in v["violations"] and (1, 2, "blocked_item") in v["violations"]
    # Entries breaking a rule: (0,0) (0,1) (0,3) (1,0) (1,2) of 8; hallucinations break none.
    assert v["rate"] == pytest.approx(5 / 8) and v["outputs_with_violation"] == 1.0
    with pytest.raises(ValueError):
        policy_violations(matcher.resolve(OUTPUTS), catalogue, Policy())
    contains = Policy(exclude_seen=False, constraints=[
        AttributeConstraint(attribute="genres", op="not_contains", value="Crime")])
    v2 = policy_violations(matcher.resolve([["Heat", "Toy Story"]]), catalogue, contains)
    assert v2["violations"] == [(0, 0, "genres not_contains Crime")]


def test_history_membership(histories: Histories) -> None:
    got = history_membership([np.array([1, 4, -1]), np.array([4])], np.array([0, 1]), histories)
    assert [g.tolist() for g in got] == [[True, False, False], [True]]
    with pytest.raises(KeyError):
        history_membership([np.array([1])], np.array([5]), histories)
    # Without users, output i is history row i (anonymous users, beams of those rows).
    anonymous = Histories.from_lists([[1, 2], [4]], n_items=6)
    got = history_membership([np.array([2, 4]), np.array([4])], None, anonymous)
    assert [g.tolist() for g in got] == [[True, False], [True]]


def test_explanation_grounding(catalogue: Catalogue, matcher: Matcher,
                               histories: Histories) -> None:
    explanations = [
        Explanation(user=0, item="Se7en", attributes={"genres": ["Crime", "Comedy"],
                                                       "year": 1995},
                    cited=["Heat", "Casablanca"]),
        Explanation(user=0, item="Made Up Film", attributes={"genres": "Drama"},
                    cited=["Nonexistent Movie Title"]),
        Explanation(user=1, item=4, attributes={"director": "Curtiz", "year": "1942"}),
    ]
    g = explanation_grounding(explanations, GroundingChecker(catalogue, matcher), histories)
    claims = g["claims"]
    status = {(r["explanation"], r["field"], r["claimed"]): r["status"]
              for r in claims.filter(pl.col("kind") == "attribute").iter_rows(named=True)}
    assert status == {
        (0, "genres", "Crime"): "grounded",
        (0, "genres", "Comedy"): "contradicted",    # Se7en is not a comedy
        (0, "year", "1995"): "grounded",
        (1, "genres", "Drama"): "unsupported",      # the item itself is hallucinated
        (2, "director", "Curtiz"): "unsupported",   # no such metadata
        (2, "year", "1942"): "grounded",
    }
    cites = [(r["claimed"], r["status"])
             for r in claims.filter(pl.col("kind") == "item").iter_rows(named=True)]
    assert cites == [("Heat", "grounded"), ("Casablanca", "outside_history"),
                     ("Nonexistent Movie Title", "hallucinated")]
    # 9 claims: 4 grounded (Crime, 1995, 1942, Heat), 1 contradicted, 2 unsupported, 1
    # outside the history, 1 hallucinated citation.
    assert g["n_claims"] == 9 and g["n_citations"] == 3
    assert g["ungrounded_claim_rate"] == pytest.approx(5 / 9)
    assert g["contradiction_rate"] == pytest.approx(1 / 9)
    assert g["hallucinated_citation_rate"] == pytest.approx(1 / 3)
    assert g["outside_history_rate"] == pytest.approx(1 / 3)


def test_claims_from_free_text(catalogue: Catalogue, histories: Histories) -> None:
    checker = GroundingChecker(catalogue)
    text = 'Because you loved "Toy Story", try this Romance classic, a true Western.'
    rep = checker.check(text, 4, history=[4])
    assert [(c.kind, c.text, c.status) for c in rep.claims] == [
        ("item", "toy story", "outside_history"),      # a real film, not in the history
        ("attribute", "romance", "grounded")]          # "Western" is no known value
    g = explanation_grounding([Explanation(user=1, item="Casablanca", text=text)], checker,
                              histories)
    assert g["ungrounded_claim_rate"] == pytest.approx(1 / 2)
    assert g["claims"]["status"].to_list() == ["outside_history", "grounded"]
    # Another genre of a film with genres is a contradiction; a quoted non-title is a
    # hallucinated citation; a negated genre the film has contradicts it.
    rep = checker.check('A Comedy, like "The Invented Movie", and not a Drama.', 4, [4])
    assert [(c.text, c.status) for c in rep.claims] == [
        ("the invented movie", "hallucinated"), ("comedy", "contradicted"),
        ("drama", "contradicted")]


def test_generative_risks_summary_reaches_the_report(catalogue: Catalogue,
                                                    histories: Histories,
                                                    tmp_path: Path) -> None:
    from genrec.evaluation.generative import generative_risks, load_risks, save_risks
    from genrec.evaluation.report import write_report

    explanations = [Explanation(user=0, item="Se7en", attributes={"genres": "Comedy"},
                                cited=["Casablanca"])]
    summary = generative_risks(OUTPUTS, catalogue, users=np.array([0, 1]), histories=histories,
                               policy=Policy(blocked_categories=["Animation"]),
                               explanations=explanations, encoder=keyword_encoder)
    assert summary["entries"] == 8 and summary["invalid_items"] == 2
    assert summary["hallucination_rate"] == pytest.approx(2 / 8)
    assert summary["match_fuzzy"] == pytest.approx(1 / 8)
    assert summary["duplicate_rate"] == pytest.approx(1 / 8)
    assert summary["policy_violation_rate"] == pytest.approx(3 / 8)  # 2 Animation + 1 seen
    assert summary["contradiction_rate"] == pytest.approx(1 / 2)     # Comedy; Casablanca
    assert summary["outside_history_rate"] == 1.0                    # is not user 0's
    assert "out_of_candidate_rate" not in summary
    offered = generative_risks([["Heat", "Casablanca"]], catalogue, candidates=[[2]])
    assert offered["out_of_candidate_rate"] == pytest.approx(1 / 2)
    (tmp_path / "results.json").write_text(json.dumps({
        "protocol": {"valid_metric": "ndcg@10"}, "protocol_text": "llm demo",
        "dataset": {"name": "toy", "users": 2, "items": 6, "interactions": 3},
        "results": [{"model": "llm", "fit_seconds": 0.0, "eval_seconds": 0.0, "valid": {},
                     "test": {}}]}))
    save_risks(tmp_path, "llm", summary, protocol="two handcrafted lists")
    assert load_risks(tmp_path)["llm"]["rates"]["entries"] == 8
    _, md = write_report(tmp_path)
    text = md.read_text()
    section = text.split("## Generative risks")[1]
    assert "hallucination_rate" in section and "two handcrafted lists" in section
    assert "| llm | 8 | 2 | 0.2500 |" in section


@pytest.mark.slow
def test_ml100k_titles(data_dir: Path) -> None:
    from genrec.data.recipes import load_dataset

    cat = Catalogue.from_dataset(load_dataset("ml-100k", data_dir=data_dir))
    got = Matcher(cat).match(["Godfathr, The", "The Usual Suspects", "Toy Story 7",
                              "An Entirely Imaginary Motion Picture"])
    assert [m.kind for m in got] == ["fuzzy", "normalized", "none", "none"]
    assert cat.titles[got[0].item] == "Godfather, The"
