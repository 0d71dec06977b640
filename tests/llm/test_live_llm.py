"""Against a real llama.cpp server (xllamacpp) serving the tiny GGUF models.

Their output is near-random, so these tests are where the grounding layer meets real
malformed, hallucinated and repeated output over the real OpenAI-compatible protocol.
"""

from __future__ import annotations

import numpy as np
import pytest

from genrec.llm import (
    ConversationalRecommender,
    CritiqueParser,
    Explainer,
    LLMReranker,
    SimulationConfig,
    simulate,
)
from genrec.evaluation.catalogue import Attribute

N_USERS = 12


@pytest.mark.parametrize("structured", [True, False])
def test_rerank_many_requests_stays_grounded(live_client, ml100k, structured: bool) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    h = te.histories.slice(0, N_USERS)
    cands = model.recommend(h, 10)
    rr = LLMReranker(live_client, cat, n_candidates=10, k=10, history_len=5, permutations=2,
                     structured=structured, title_chars=40)
    out = rr.rerank(h, cands)
    for row in range(N_USERS):
        got = out.items[row].tolist()
        assert len(got) == len(set(got)) == 10  # no duplicate, full list
        assert set(got) == set(cands.items[row].tolist())  # exactly the offered items
    s = rr.stats_
    assert s.requests == 2 * N_USERS and s.failed_requests == 0
    assert s.entries == s.hallucinated + s.out_of_candidate + s.duplicates \
        + sum(s.matched.values())
    rates = s.rates()
    if not structured:  # free text from a toy model: errors are real and are counted
        assert rates["format_error_rate"] > 0
    assert live_client.usage.prompt_tokens > 0 and live_client.usage.completion_tokens > 0
    # the same requests again come from the on-disk cache
    before = live_client.usage.http_requests
    rr.rerank(h.slice(0, 2), type(cands)(cands.users[:2], cands.items[:2], cands.scores[:2]))
    assert live_client.usage.http_requests == before and live_client.usage.cached >= 4


def test_llm_explanations_are_checked(live_client, ml100k) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    h = te.histories.slice(0, 2)
    rec = model.recommend(h, 3)
    ex = Explainer(cat, live_client, max_tokens=48)
    for r in range(2):
        hist = h.items[h.indptr[r]:h.indptr[r + 1]].tolist()
        for e in ex.explain_many(rec.items[r], hist):
            assert e.raw is not None and e.source in ("llm", "fallback")
            assert e.report.ok  # what the user sees is grounded, whatever the LLM wrote
    assert ex.stats_.llm_texts == 6


def test_multi_turn_simulated_conversation(live_client, ml100k) -> None:
    """LLM-phrased simulated user + LLM reranker inside the conversation, 3 turns."""
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    rr = LLMReranker(live_client, cat, n_candidates=10, history_len=5, title_chars=40)
    eng = ConversationalRecommender(model, cat, CritiqueParser(cat), reranker=rr, k=5,
                                    rerank_top=10)
    res = simulate(eng, te, SimulationConfig(users=4, turns=3, phrasing="llm", seed=2),
                   client=live_client, keep_transcripts=4)
    assert res["users"] == 4 and len(res["success_at"]) == 3
    assert res["llm_phrasings"] + res["llm_phrasing_fallbacks"] > 0
    assert rr.stats_.requests >= 4 and res["llm_ms_per_turn"] > 0
    # every reply obeyed the session state: no avoided attribute, no repeated item
    for conv in res["transcripts"]:
        assert len(conv["transcript"]) >= 2
    s = eng.start(te.histories.items[: te.histories.indptr[1]].tolist(), user=0)
    first = s.respond()
    r = s.respond("No Drama, please.")
    assert not set(r.items) & set(first.items) and len(r.items) == 5
    assert all(Attribute("genres", "Drama") not in cat.attributes[i] for i in r.items)


def test_no_llm_flows_pass_too(ml100k) -> None:
    """The same flows with no LLM configured: templates, exact/embedding parsing."""
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    eng = ConversationalRecommender(model, cat, k=5)
    res = simulate(eng, te, SimulationConfig(users=4, turns=3, seed=2))
    assert res["llm_phrasings"] == 0 and res["llm_ms_per_turn"] == 0
    h = te.histories.slice(0, 1)
    ex = Explainer(cat)
    assert all(e.source == "template" and e.report.ok
               for e in ex.explain_many(model.recommend(h, 3).items[0], h.items.tolist()))
    assert np.isfinite(res["success_rate"])
