"""CFRAG-style collaborative retrieval: a hand-computed example, no leakage on ML-100K, prompts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.interactions import Histories, Interactions
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.position import position_bias
from genrec.llm import ConversationalRecommender, CritiqueParser, Explainer, LLMReranker
from genrec.llm.collab import CollabConfig, CollabRetriever
from genrec.llm.prompts import PROMPT_VERSIONS, rerank_messages
from genrec.llm.rerank import RerankConfig
from genrec.llm.runner import Prepared, run_rerank
from genrec.llm.scripted import ScriptedClient
from genrec.models.base import NotFittedError, RecList
from genrec.models.registry import build_model, model_config

# Train histories: u0 {0,1,2}, u1 {0,1,3}, u2 {4,5}, u3 {0,1,2,6}; 7 items.
HAND = [[0, 1, 2], [0, 1, 3], [4, 5], [0, 1, 2, 6]]


def hand_train() -> Interactions:
    rows = [(u, i, t) for u, h in enumerate(HAND) for t, i in enumerate(h)]
    frame = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    return Interactions(frame, n_users=4, n_items=7)


def test_hand_computed_neighbours_and_items() -> None:
    r = CollabRetriever(neighbours=3, items=3, idf=False, relevance=0.0).fit(hand_train())
    ctx = r.retrieve(Histories.from_lists([[0, 1, 2]], 7, users=[0]))
    # cosine of binary histories: u3 3/(sqrt3*2), u1 2/(sqrt3*sqrt3); u2 shares nothing
    assert ctx.neighbours[0].tolist() == [3, 1, -1]
    np.testing.assert_allclose(ctx.similarity[0], [3 / (math.sqrt(3) * 2), 2 / 3, 0], rtol=1e-6)
    # their items the user has not seen, by similarity mass; u0 is never its own neighbour
    assert ctx.row(0) == [6, 3]
    assert ctx.support[0].tolist() == [1, 1, 0]
    # relevance to the recent items: item 6 co-occurs with 0, 1, 2 (cosines 1/sqrt3, 1/sqrt3,
    # 1/sqrt2), item 3 with 0 and 1 only -> 6 stays first; an anonymous user with the same
    # history gets u0 itself as the best neighbour (cosine 1) but u0's items are all seen
    rel = CollabRetriever(neighbours=3, items=3, idf=False, relevance=1.0).fit(hand_train())
    assert rel.retrieve_one([0, 1, 2], user=0) == [6, 3]
    anon = rel.retrieve(Histories.from_lists([[0, 1, 2]], 7))
    assert anon.neighbours[0, 0] == 0 and anon.similarity[0, 0] == pytest.approx(1.0)
    assert rel.retrieve_one([4], user=-1) == [5]
    with pytest.raises(NotFittedError):
        CollabRetriever().retrieve(Histories.from_lists([[0]], 7))


@pytest.mark.slow
def test_no_leakage_on_ml100k(ml100k) -> None:
    """Neighbours' items come from their *training* rows; the context holds no seen item and
    the held-out item only where a neighbour trained on it."""
    sp, te = ml100k["split"], ml100k["test"]
    r = CollabRetriever(neighbours=10, items=10).fit(sp.train)
    h = te.histories.slice(0, 200)
    ctx = r.retrieve(h)
    train_rows = sp.train.to_csr().tolil().rows
    held = sp.valid.concat(sp.test).histories()
    held_rows = [set(held.items[held.indptr[u]: held.indptr[u + 1]].tolist())
                 for u in range(len(held))]
    targets = te.target_items[te.target_indptr[:-1]][:200]
    leaked_from_heldout = 0
    for row in range(len(h)):
        user = int(h.users[row])
        nbs = [int(v) for v in ctx.neighbours[row] if v >= 0]
        assert user not in nbs
        pool = set().union(*(set(train_rows[v]) for v in nbs))
        items = ctx.row(row)
        hist = set(h.items[h.indptr[row]: h.indptr[row + 1]].tolist())
        assert items and set(items) <= pool and not set(items) & hist
        # an item a neighbour has only in its held-out (valid/test) interactions is never used
        held_only = set().union(*(held_rows[v] for v in nbs)) - pool
        leaked_from_heldout += len(set(items) & held_only)
        if targets[row] in items:
            assert any(targets[row] in train_rows[v] for v in nbs)
    assert leaked_from_heldout == 0
    # vectorised batches give the same answer as one user at a time
    assert ctx.row(7) == r.retrieve_one(h.items[h.indptr[7]: h.indptr[8]].tolist(),
                                        user=int(h.users[7]))


def test_prompts_carry_the_context_and_their_version(tiny, tiny_catalog: Catalogue) -> None:
    plain = rerank_messages(tiny_catalog, [0, 1], [2, 3, 4], 2)
    with_ctx = rerank_messages(tiny_catalog, [0, 1], [2, 3, 4], 2, context=[5, 6])
    assert "also chose" not in plain[1]["content"]
    body = with_ctx[1]["content"]
    assert "Users with histories like this user's also chose:" in body
    assert body.index("Revlon Lipstick Cherry") < body.index("Candidates:")
    train = tiny.interactions
    retriever = CollabRetriever(neighbours=2, items=2).fit(train)
    client = ScriptedClient(['{"ranking": ["i3", "i2"]}'])
    rr = LLMReranker(client, tiny_catalog, n_candidates=3, k=2, retriever=retriever)
    assert rr.prompt_version == PROMPT_VERSIONS["rerank_collab"]
    h = Histories.from_lists([[0, 1]], 8)
    out = rr.rerank(h, RecList(h.users, np.array([[2, 3, 4]]), np.zeros((1, 3), np.float32)))
    assert out.items[0].tolist() == [3, 2]
    ctx = rr.results_[0].context
    assert ctx == retriever.retrieve_one([0, 1]) and ctx
    sent = client.calls[0]["messages"][1]["content"]
    assert all(tiny_catalog.title(i, 80) in sent for i in ctx)
    assert LLMReranker(client, tiny_catalog).prompt_version == PROMPT_VERSIONS["rerank"]
    # explanations: the similar-user count is in the prompt and the template
    ex = Explainer(tiny_catalog, retriever=retriever)
    (e,) = ex.explain_many([2], [0, 1], user=-1)
    assert e.support is not None and e.support[1] == 2
    n_chose = int(sum(2 in train.histories().items[
        train.histories().indptr[v]: train.histories().indptr[v + 1]]
        for v in retriever.retrieve(h).neighbours[0]))
    assert e.support[0] == n_chose
    if n_chose:
        assert f"{n_chose} of the 2 users with the most similar histories" in e.text
    assert e.report.ok and ex.prompt_version == PROMPT_VERSIONS["explain_collab"]


def test_position_bias_hand_computed() -> None:
    inputs = [[10, 11, 12, 13], [10, 11, 12, 13], [10, 11, 12, 13], [10, 11]]
    outputs = [[10, 11, 12], [13, 12, 11, 10], [11, 99, 11], []]
    pb = position_bias(outputs, inputs)
    assert pb["requests"] == 4 and pb["requests_with_2plus"] == 2
    assert pb["order_copy_rate"] == 0.25 and pb["top1_kept_rate"] == 0.25
    assert pb["spearman_mean"] == pytest.approx(0.0)   # mean of +1 and -1
    assert pb["mean_input_position"] == pytest.approx((0 + 1 + 2 + 3 + 2 + 1 + 0 + 1) / 8)
    with pytest.raises(ValueError):
        position_bias([[1]], [])


def test_conversation_prompts_carry_the_context(tiny, tiny_catalog: Catalogue) -> None:
    model = build_model(model_config("pop")).fit(tiny.interactions)
    retriever = CollabRetriever(neighbours=2, items=3).fit(tiny.interactions)
    chosen: list[str] = []

    def last_candidate(messages, schema):  # the LLM moves the last of the 4 candidates first
        chosen.append(schema["properties"]["ranking"]["items"]["enum"][-1])
        return json.dumps({"ranking": chosen[-1:]})

    client = ScriptedClient(last_candidate)
    rr = LLMReranker(client, tiny_catalog, n_candidates=4, k=2, retriever=retriever)
    eng = ConversationalRecommender(model, tiny_catalog, CritiqueParser(tiny_catalog), k=2,
                                    reranker=rr, rerank_top=4)
    reply = eng.start([0, 1]).respond()
    assert len(reply.items) == 2 and f"i{reply.items[0]}" == chosen[0]
    ctx = retriever.retrieve_one([0, 1])   # anonymous session: no training row excluded
    assert ctx and rr.results_ == [] and client.calls
    sent = client.calls[0]["messages"][1]["content"]
    assert "also chose" in sent and all(tiny_catalog.title(i, 80) in sent for i in ctx)


@pytest.mark.slow
def test_run_rerank_measures_against_hand_computed_values(ml100k) -> None:
    """A scripted LLM that reverses its candidates: hit@5 / NDCG@5 and position bias by hand."""
    ds, te, cat, model = ml100k["ds"], ml100k["test"], ml100k["catalog"], ml100k["model"]
    p = Prepared(ds, te, cat, model, "ease", 0.0, train=ml100k["split"].train)

    def reverse(messages, schema):
        ids = schema["properties"]["ranking"]["items"]["enum"]
        return json.dumps({"ranking": ids[::-1][:5]})

    client = ScriptedClient(reverse)
    res = run_rerank(p, client, users=30, config=RerankConfig(n_candidates=10, k=5),
                     collab=CollabConfig(items=5))
    assert res["prompt_version"] == PROMPT_VERSIONS["rerank_collab"]
    assert all("also chose" in c["messages"][1]["content"] for c in client.calls)
    rows = np.sort(np.random.default_rng(0).choice(len(te), 30, replace=False))
    h = te.histories
    hs = Histories.from_lists([h.items[h.indptr[r]: h.indptr[r + 1]].tolist() for r in rows],
                              h.n_items, users=h.users[rows].tolist())
    cands = model.recommend(hs, 10).items
    targets = te.target_items[te.target_indptr[:-1]][rows]
    before = [list(c[:5]) for c in cands]
    after = [list(c[::-1][:5]) for c in cands]

    def ndcg(lists):
        return [1 / math.log2(lst.index(t) + 2) if t in lst else 0.0
                for lst, t in zip(lists, targets, strict=True)]

    assert res["hit@5_before"] == pytest.approx(np.mean([t in b for b, t in zip(before, targets)]))
    assert res["hit@5_after"] == pytest.approx(np.mean([t in a for a, t in zip(after, targets)]))
    assert res["ndcg@5_before"] == pytest.approx(np.mean(ndcg(before)))
    assert res["ndcg@5_after"] == pytest.approx(np.mean(ndcg(after)))
    pb = res["position_bias"]
    assert pb["order_copy_rate"] == 0 and pb["top1_kept_rate"] == 0
    assert pb["spearman_mean"] == pytest.approx(-1.0)
    assert pb["mean_input_position"] == pytest.approx(7.0)   # positions 9..5 of 0..9


@pytest.mark.slow
def test_cli_rerank_and_explain_with_collab(data_dir: Path, tmp_path: Path,
                                            llama_servers: dict[str, str]) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["rerank", "--dataset", "ml-100k", "--model", "pop", "--users", "3",
                            "--top-n", "8", "--k", "4", "--collab", "5", "--data-dir",
                            str(data_dir), "--llm-url", llama_servers["stories260K"],
                            "--output", str(tmp_path / "rr"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rr" / "rerank.json").read_text())
    assert res["prompt_version"] == "rerank-collab/v1" and res["collab"]["items"] == 5
    assert all(len(ex["context"]) == 5 for ex in res["examples"])
    assert set(res["position_bias"]) >= {"order_copy_rate", "spearman_mean"}
    r = runner.invoke(app, ["explain", "--dataset", "ml-100k", "--model", "pop", "--k", "2",
                            "--collab", "--data-dir", str(data_dir), "--output",
                            str(tmp_path / "ex"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("["):])
    assert all(e["similar_users"]["of"] == 20 for e in out)


def test_a_loaded_model_of_another_kind_than_asked_is_refused(ml100k, data_dir, tmp_path) -> None:
    # --model ease --model-path <a pop model> once answered with Popularity while the run's
    # config said ease; now the kinds must agree (and without --model the folder decides).
    from genrec.config import ExperimentConfig
    from genrec.llm.runner import prepare
    from genrec.models.registry import build_model, model_config

    build_model(model_config("pop")).fit(ml100k["split"].train).save(tmp_path / "pop")
    base = {"dataset": {"name": "ml-100k", "data_dir": str(data_dir)}}
    asked = ExperimentConfig.model_validate({**base, "models": [{"kind": "ease"}],
                                             "output": str(tmp_path / "a")})
    with pytest.raises(ValueError, match="holds a pop model, but the candidate model is ease"):
        prepare(asked, model_path=tmp_path / "pop")
    free = ExperimentConfig.model_validate({**base, "models": [], "output": str(tmp_path / "b")})
    assert prepare(free, model_path=tmp_path / "pop").model.config.kind == "pop"
