"""LLMReranker with adversarial scripted outputs: nothing ungrounded reaches the final list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec.data.interactions import Histories
from genrec.llm import LLMError, LLMReranker, OpenAIClient
from genrec.llm.local import free_port
from genrec.llm.rerank import RerankStats
from genrec.llm.scripted import ScriptedClient
from genrec.models.base import RecList


def assert_grounded(out: RecList, cands: RecList) -> None:
    for row in range(len(out.users)):
        got = [int(i) for i in out.items[row] if i >= 0]
        offered = {int(i) for i in cands.items[row] if i >= 0}
        assert len(got) == len(set(got)), "duplicate in final list"
        assert set(got) <= offered, "item outside the candidates in final list"


def batch(n_items: int = 8) -> tuple[Histories, RecList]:
    h = Histories.from_lists([[0, 1], [3], [7, 6, 5]], n_items)
    items = np.array([[2, 3, 4, 5, 6], [0, 1, 2, 4, -1], [0, 1, 2, 3, 4]])
    return h, RecList(h.users, items, np.zeros(items.shape, dtype=np.float32))


ADVERSARIAL = [
    '{"ranking": ["i4", "i4", "i9999", "i0", "Neutrogena Face Wash", "i2"]}',  # dup, fake, seen
    "Once upon a time there was a shiny lipstick",                              # prose
    '{"ranking": ["i6", "i5"',                                                  # truncated
    "1. Olay Night Cream\n2. Maybelline Mascara Black\n3. Essie Nail Polish Pink",
    '{"ranking": []}',
    LLMError("server down"),
    '["i3", "i3", "i3", "i3"]',
]


def test_adversarial_outputs_never_leak(tiny_catalog) -> None:
    h, cands = batch()
    client = ScriptedClient(ADVERSARIAL)
    rr = LLMReranker(client, tiny_catalog, n_candidates=5, k=4)
    for _ in range(len(ADVERSARIAL)):
        out = rr.rerank(h, cands)
        assert out.items.shape == (3, 4)
        assert_grounded(out, cands)
    s = rr.stats_
    assert s.requests == 3 * len(ADVERSARIAL)
    assert s.hallucinated > 0 and s.duplicates > 0 and s.out_of_candidate > 0
    # The statuses partition the entries (the one definition of genrec.evaluation.risks).
    assert s.entries == s.hallucinated + s.out_of_candidate + s.duplicates + sum(
        s.matched.values())
    assert s.format_errors > 0 and s.failed_requests > 0
    rates = s.rates()
    assert 0 < rates["hallucination_rate"] < 1 and 0 < rates["format_error_rate"] < 1


def test_valid_output_is_followed_and_filled(tiny_catalog) -> None:
    h, cands = batch()
    rr = LLMReranker(ScriptedClient(['{"ranking": ["i6", "i4"]}']), tiny_catalog,
                     n_candidates=5, k=5)
    out = rr.rerank(h.slice(0, 1), RecList(cands.users[:1], cands.items[:1], cands.scores[:1]))
    assert out.items[0].tolist() == [6, 4, 2, 3, 5]  # LLM order, then the model order
    assert out.scores[0].tolist() == [5, 4, 3, 2, 1]
    assert rr.stats_.filled == 3 and rr.stats_.matched["id"] == 2


@pytest.mark.parametrize("text", [
    'Of the [5] candidates, my ranking: {"ranking": ["i6", "i9999", "i0", "i4"]}',
    '<think>Option [2] is best.</think>\n{"ranking": ["i6", "i9999", "i0", "i4"]}',
])
def test_ranking_after_bracketed_prose_is_followed(tiny_catalog, text: str) -> None:
    h, cands = batch()
    one = RecList(cands.users[:1], cands.items[:1], cands.scores[:1])
    rr = LLMReranker(ScriptedClient([text]), tiny_catalog, n_candidates=5, k=5)
    out = rr.rerank(h.slice(0, 1), one)
    assert_grounded(out, one)                       # i9999 invented, i0 not offered
    assert out.items[0].tolist() == [6, 4, 2, 3, 5]
    assert rr.stats_.filled == 3


def test_prompt_and_schema_are_bounded(tiny_catalog) -> None:
    client = ScriptedClient(['{"ranking": ["i2"]}'])
    rr = LLMReranker(client, tiny_catalog, n_candidates=3, k=2, history_len=1)
    rr.rerank_one([0, 1], [2, 3, 4, 5])
    call = client.calls[0]
    ranking = call["schema"]["properties"]["ranking"]
    assert ranking["items"]["enum"] == ["i2", "i3", "i4"] and ranking["maxItems"] == 2
    prompt = call["messages"][1]["content"]
    assert "OPI Nail Lacquer Blue" in prompt and "OPI Nail Lacquer Red" not in prompt  # history_len
    assert "[i4] Olay Night Cream" in prompt and "[i5]" not in prompt


def test_permutation_averaging(tiny_catalog) -> None:
    # A position-biased "LLM": always picks whatever is listed first.
    def first_listed(messages, schema):
        line = next(ln for ln in messages[1]["content"].splitlines() if ln.startswith("["))
        return json.dumps({"ranking": [line[1:line.index("]")]]})

    client = ScriptedClient(first_listed)
    rr = LLMReranker(client, tiny_catalog, n_candidates=5, k=5, permutations=4, seed=1)
    res = rr.rerank_one([0], [2, 3, 4, 5, 6])
    assert len(client.calls) == 4 and res.stats.requests == 4
    assert sorted(res.items) == [2, 3, 4, 5, 6]
    firsts = {json.loads(first_listed(c["messages"], None))["ranking"][0] for c in client.calls}
    assert len(firsts) > 1  # the shuffles put different items first


def test_no_llm_server_keeps_model_order(tiny_catalog) -> None:
    """With no LLM reachable, reranking degrades to the candidate model's order."""
    client = OpenAIClient(base_url=f"http://127.0.0.1:{free_port()}", max_retries=0,
                          connect_timeout_s=0.5)
    h, cands = batch()
    rr = LLMReranker(client, tiny_catalog, n_candidates=5, k=3)
    out = rr.rerank(h, cands)
    assert out.items.tolist() == [[2, 3, 4], [0, 1, 2], [0, 1, 2]]
    assert rr.stats_.failed_requests == 3 and rr.stats_.rates()["request_failure_rate"] == 1.0


def test_concurrent_rerank_matches_serial(tiny_catalog) -> None:
    h, cands = batch()
    script = ['{"ranking": ["i4", "i2"]}']
    a = LLMReranker(ScriptedClient(script), tiny_catalog, k=3).rerank(h, cands)
    b = LLMReranker(ScriptedClient(script), tiny_catalog, k=3, concurrency=3).rerank(h, cands)
    assert a.items.tolist() == b.items.tolist()


def test_stats_add_and_rates() -> None:
    a, b = RerankStats(requests=2, entries=4, hallucinated=1), RerankStats(requests=1)
    a.add(b)
    assert a.requests == 3 and a.rates()["hallucination_rate"] == 0.25
    assert RerankStats().rates()["format_error_rate"] == 0.0


def test_mismatched_batch_raises(tiny_catalog) -> None:
    h, cands = batch()
    with pytest.raises(ValueError):
        LLMReranker(ScriptedClient(["x"]), tiny_catalog).rerank(h.slice(0, 1), cands)
