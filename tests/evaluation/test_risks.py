"""Generative risks on handcrafted outputs: hallucination, duplicates, policy, grounding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.data.interactions import Histories, IdMap
from genrec.evaluation.catalogue import Catalogue, normalize_title
from genrec.evaluation.grounding import Explanation, explanation_grounding, extract_claims
from genrec.evaluation.risks import (
    AttributeConstraint,
    Policy,
    duplicate_rate,
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
    return Catalogue(ITEMS, 6, item_map=IdMap([f"m{i}" for i in range(6)]),
                     encoder=keyword_encoder)


@pytest.fixture
def histories() -> Histories:
    return Histories.from_lists([[1, 2], [4]], n_items=6, users=[0, 1])


OUTPUTS = [["Toy Story", "Casablanka", "The Matrix Revolutions 4", "toy story (1995)", "Se7en"],
           [4, 99, "m2"]]


def test_normalize_title() -> None:
    assert normalize_title("Usual Suspects, The (1995)") == "the usual suspects"
    assert normalize_title("  THE usual-suspects! ") == "the usual suspects"


def test_match_kinds_exact_normalized_fuzzy_embedding_none(catalogue: Catalogue) -> None:
    items, kinds, scores = catalogue.match_titles(
        ["Heat", "the usual suspects", "Casablanka", "Seven, the Fincher thriller",
         "Toy Story 4", "Completely Invented Film"])
    assert kinds == ["exact", "normalized", "fuzzy", "embedding", "none", "none"]
    assert items.tolist() == [2, 0, 4, 3, -1, -1]
    assert scores[2] == pytest.approx(0.9) and scores[3] == pytest.approx(1.0)
    # A sequel number is not a typo: "Toy Story 4" never fuzzily becomes "Toy Story" (or 2).
    no_encoder = Catalogue(ITEMS, 6)
    assert no_encoder.match_titles(["Seven, the Fincher thriller"])[1] == ["none"]


def test_hallucination_rate(catalogue: Catalogue) -> None:
    r = catalogue.resolve(OUTPUTS)
    assert [x.tolist() for x in r.items] == [[1, 4, -1, 1, 3], [4, -1, 2]]
    h = hallucination_rate(r)
    assert h["rate"] == pytest.approx(2 / 8) and h["n"] == 8
    assert h["by_kind"] == {"id": 2, "exact": 2, "normalized": 1, "fuzzy": 1, "embedding": 0,
                            "none": 2}
    assert h["hallucinated"] == [(0, 2), (1, 1)]
    np.testing.assert_allclose(h["per_output"], [1 / 5, 1 / 3])
    titles_only = catalogue.resolve([["m2", "Heat"]], kind="titles")
    assert titles_only.kinds == [["none", "exact"]]
    ids_only = catalogue.resolve([["m2", "Heat"]], kind="ids")
    assert ids_only.kinds == [["id", "none"]]


def test_duplicate_rate_compares_resolved_items(catalogue: Catalogue) -> None:
    d = duplicate_rate(catalogue.resolve(OUTPUTS))
    # "Toy Story" and "toy story (1995)" are one item.
    assert d["rate"] == pytest.approx(1 / 8)
    assert d["outputs_with_duplicates"] == pytest.approx(0.5)
    unmatched = duplicate_rate(catalogue.resolve([["Foo Bar Baz", "foo bar baz!", "Heat"]]))
    assert unmatched["rate"] == pytest.approx(1 / 3)


def test_policy_violations(catalogue: Catalogue, histories: Histories) -> None:
    policy = Policy(blocked_categories=["Animation"], blocked_items=[2],
                    constraints=[AttributeConstraint(attribute="year", op="ge", value=1950)])
    v = policy_violations(catalogue.resolve(OUTPUTS), catalogue, policy,
                          users=np.array([0, 1]), histories=histories)
    assert v["by_rule"] == {"blocked_item": 1, "blocked_category": 2, "year ge 1950": 2,
                            "seen": 3}
    assert (0, 0, "blocked_category") in v["violations"]
    assert (1, 0, "seen") in v["violations"] and (1, 2, "blocked_item") in v["violations"]
    # Entries breaking a rule: (0,0) (0,1) (0,3) (1,0) (1,2) of 8; hallucinations break none.
    assert v["rate"] == pytest.approx(5 / 8) and v["outputs_with_violation"] == 1.0
    with pytest.raises(ValueError):
        policy_violations(catalogue.resolve(OUTPUTS), catalogue, Policy())
    contains = Policy(exclude_seen=False, constraints=[
        AttributeConstraint(attribute="genres", op="not_contains", value="Crime")])
    v2 = policy_violations(catalogue.resolve([["Heat", "Toy Story"]]), catalogue, contains)
    assert v2["violations"] == [(0, 0, "genres not_contains Crime")]


def test_history_membership(histories: Histories) -> None:
    got = history_membership([np.array([1, 4, -1]), np.array([4])], np.array([0, 1]), histories)
    assert [g.tolist() for g in got] == [[True, False, False], [True]]
    with pytest.raises(KeyError):
        history_membership([np.array([1])], np.array([5]), histories)


def test_explanation_grounding(catalogue: Catalogue, histories: Histories) -> None:
    explanations = [
        Explanation(user=0, item="Se7en", attributes={"genres": ["Crime", "Comedy"],
                                                       "year": 1995},
                    cited=["Heat", "Casablanca"]),
        Explanation(user=0, item="Made Up Film", attributes={"genres": "Drama"},
                    cited=["Nonexistent Movie Title"]),
        Explanation(user=1, item=4, attributes={"director": "Curtiz", "year": "1942"}),
    ]
    g = explanation_grounding(explanations, catalogue, histories)
    status = {(r["explanation"], r["attribute"], r["claimed"]): r["status"]
              for r in g["claims"].iter_rows(named=True)}
    assert status == {
        (0, "genres", "Crime"): "grounded",
        (0, "genres", "Comedy"): "contradicted",    # Se7en is not a comedy
        (0, "year", "1995"): "grounded",
        (1, "genres", "Drama"): "unsupported",      # the item itself is hallucinated
        (2, "director", "Curtiz"): "unsupported",   # no such metadata
        (2, "year", "1942"): "grounded",
    }
    cites = [(r["cited"], r["status"]) for r in g["citations"].iter_rows(named=True)]
    assert cites == [("Heat", "in_history"), ("Casablanca", "outside_history"),
                     ("Nonexistent Movie Title", "hallucinated")]
    assert g["contradiction_rate"] == pytest.approx(1 / 6)
    assert g["grounding_rate"] == pytest.approx(3 / 6)
    assert g["citation_rate"] == pytest.approx(1 / 3)
    assert g["outside_history_rate"] == pytest.approx(1 / 3)


def test_claims_from_free_text(catalogue: Catalogue, histories: Histories) -> None:
    text = 'Because you loved "Toy Story", try this Romance classic, a true Western.'
    attrs, cited = extract_claims(text, catalogue)
    assert attrs == {"genres": ["Romance"]} and cited == ["Toy Story"]
    g = explanation_grounding([Explanation(user=1, item="Casablanca", text=text)], catalogue,
                              histories)
    assert g["grounding_rate"] == 1.0
    assert g["citations"]["status"].to_list() == ["outside_history"]


def test_generative_risks_summary_reaches_the_report(catalogue: Catalogue,
                                                    histories: Histories,
                                                    tmp_path: Path) -> None:
    from genrec.evaluation.generative import generative_risks, save_risks
    from genrec.evaluation.report import write_report

    explanations = [Explanation(user=0, item="Se7en", attributes={"genres": "Comedy"},
                                cited=["Casablanca"])]
    summary = generative_risks(OUTPUTS, catalogue, users=np.array([0, 1]), histories=histories,
                               policy=Policy(blocked_categories=["Animation"]),
                               explanations=explanations)
    assert summary["hallucination_rate"] == pytest.approx(2 / 8)
    assert summary["match_fuzzy"] == pytest.approx(1 / 8)
    assert summary["duplicate_rate"] == pytest.approx(1 / 8)
    assert summary["policy_violation_rate"] == pytest.approx(3 / 8)  # 2 Animation + 1 seen
    assert summary["contradiction_rate"] == 1.0 and summary["citation_rate"] == 0.0
    (tmp_path / "results.json").write_text(json.dumps({
        "protocol": {"valid_metric": "ndcg@10"}, "protocol_text": "llm demo",
        "dataset": {"name": "toy", "users": 2, "items": 6, "interactions": 3},
        "results": [{"model": "llm", "fit_seconds": 0.0, "eval_seconds": 0.0, "valid": {},
                     "test": {}}]}))
    save_risks(tmp_path, "llm", summary)
    _, md = write_report(tmp_path)
    text = md.read_text()
    assert "## Generative risks" in text and "hallucination_rate" in text


@pytest.mark.slow
def test_ml100k_titles(data_dir: Path) -> None:
    from genrec.data.recipes import load_dataset

    cat = Catalogue.from_dataset(load_dataset("ml-100k", data_dir=data_dir))
    items, kinds, _ = cat.match_titles(["Godfathr, The", "The Usual Suspects", "Toy Story 7",
                                        "An Entirely Imaginary Motion Picture"])
    assert kinds == ["fuzzy", "normalized", "none", "none"]
    assert cat.title_of(int(items[0])) == "Godfather, The"
