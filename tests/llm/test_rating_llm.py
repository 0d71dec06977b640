"""The LLM rating predictor: parsing and clipping, failures counted (never filled), the
comparison on the same sampled ratings, and the tiny real models end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.config import LLMRatingSection, RatingExperimentConfig
from genrec.data.interactions import Dataset, Interactions
from genrec.data.ratings import RatingSplit
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.rating import rmse
from genrec.llm import OpenAIClient
from genrec.llm.client import LLMError
from genrec.llm.prompts import rating_messages, rating_schema
from genrec.llm.rating import LLMRatingPredictor, llm_rating_hook, parse_rating
from genrec.llm.scripted import ScriptedClient
from genrec.models.base import FitContext
from genrec.models.rating.baseline import Biases

from .conftest import GGUF


def test_valid_answers_are_parsed_and_clipped() -> None:
    assert parse_rating('{"rating": 4}').rating == 4.0
    assert parse_rating(' 3.5 ').rating == 3.5
    assert parse_rating('Sure! {"rating": 2} is my guess').rating == 2.0
    high = parse_rating('{"rating": 9}')
    assert (high.rating, high.clipped, high.error) == (5.0, True, None)
    assert parse_rating('{"rating": -2}', (1.0, 5.0)).rating == 1.0


@pytest.mark.parametrize("text", ["", "four stars", '{"score": 4}', '{"rating": "good"}',
                                  '{"rating": true}', '{"rating": NaN}', "[4]",
                                  '{"rating": 1' + "0" * 400 + "}", "1" + "0" * 400,
                                  '{"rating": 1e400}'])
def test_unparseable_answers_are_failures_not_values(text: str) -> None:
    a = parse_rating(text)
    assert a.rating is None and a.error


def test_schema_bounds_the_number() -> None:
    s = rating_schema((1.0, 5.0))
    assert s["properties"]["rating"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert s["required"] == ["rating"] and s["additionalProperties"] is False


def _rated_dataset() -> Dataset:
    items = pl.DataFrame({"item": [f"m{j}" for j in range(6)],
                          "title": [f"Movie {j}" for j in range(6)]})
    rows = [(u, j, float(1 + (u + j) % 5), t) for u in range(8) for t, j in enumerate(range(6))]
    inter = pl.DataFrame({"user": [f"u{u}" for u, *_ in rows],
                          "item": [f"m{j}" for _, j, *_ in rows],
                          "rating": [r for *_, r, _ in rows],
                          "timestamp": [t for *_, t in rows]})
    return Dataset.from_raw("rated", inter, items)


def test_few_shot_prompt_shows_worked_examples() -> None:
    cat = Catalogue.from_dataset(_rated_dataset())
    zero = rating_messages(cat, [(0, 4.0), (1, 2.0)], 2)
    few = rating_messages(cat, [(0, 4.0)], 2, examples=[([(3, 5.0)], 4, 1.0)])
    assert [m["role"] for m in zero] == ["system", "user"]
    assert "Movie 0" in zero[1]["content"] and ": 4" in zero[1]["content"]
    assert [m["role"] for m in few] == ["system", "user", "assistant", "user"]
    assert json.loads(few[2]["content"]) == {"rating": 1}


def test_hook_counts_failures_and_scores_only_parsed_ratings() -> None:
    ds = _rated_dataset()
    frame = ds.interactions.frame
    test_mask = frame["timestamp"] == 5
    split = RatingSplit("s", Interactions(frame.filter(~test_mask), ds.n_users, ds.n_items),
                        Interactions(frame.filter(test_mask), ds.n_users, ds.n_items))
    model = Biases().fit(split.train, FitContext())
    # Answers cycle: a 4, garbage, a failed request, a 4.
    script = ['{"rating": 4}', "no idea", LLMError("boom"), '{"rating": 4}']
    cfg = RatingExperimentConfig(llm=LLMRatingSection(n_ratings=8, shots=[0]))
    sink: list[dict] = []
    llm_rating_hook(ScriptedClient(script), Catalogue.from_dataset(ds), cfg, sink)(
        split, {"biases": model})
    rows = {r["predictor"]: r for r in sink[0]["rows"]}
    llm = rows["llm zero-shot"]
    # 2 answers did not parse; 2 requests failed, which is not a parse failure.
    assert (llm["asked"], llm["parsed"], llm["parse_failures"], llm["request_failures"]) == (
        8, 4, 2, 2)
    assert llm["parse_failure_rate"] == 0.25
    # The RMSE is over the 4 parsed answers only (no default filled in for the others).
    true = split.test.frame["rating"].to_numpy()
    ok = np.array([True, False, False, True] * 2)
    assert llm["rmse"] == pytest.approx(rmse(np.full(4, 4.0), true[ok]))
    assert rows["biases"]["asked"] == rows["biases"]["parsed"] == 8
    assert set(llm["cf_on_parsed"]) == {"biases"}
    assert {e["error"][:14] for e in sink[0]["failure_examples"]["llm zero-shot"]} == {
        "no JSON object", "request failed"}


@pytest.mark.parametrize("name", list(GGUF))
def test_tiny_models_answer_or_fail_visibly(name: str, llama_servers: dict[str, str],
                                            tmp_path: Path) -> None:
    ds = _rated_dataset()
    cat = Catalogue.from_dataset(ds)
    with OpenAIClient(base_url=llama_servers[name], model=name, timeout_s=30,
                      cache_dir=str(tmp_path / "cache"), max_retries=1) as client:
        pred = LLMRatingPredictor(client, cat, LLMRatingSection(max_tokens=12))
        answers = pred.ask([pred.messages([(0, 4.0), (1, 2.0)], j, []) for j in (2, 3, 4)])
    assert len(answers) == 3
    for a in answers:
        # Either a rating on the scale, or a counted failure with its reason and raw text.
        assert (a.rating is not None and 1.0 <= a.rating <= 5.0 and a.error is None) or \
            (a.rating is None and a.error)


def test_a_completion_that_reads_like_a_failure_is_a_parse_failure() -> None:
    # Only a request that raised is a request failure, whatever the model wrote.
    answer = parse_rating("request failed: the model says so")
    assert answer.rating is None and not answer.request_failed
