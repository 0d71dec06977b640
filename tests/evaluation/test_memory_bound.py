"""The evaluator at scale: its memory is bounded by chunk x items, and the protocol's
sampled-users option (seeded, printed, idempotent) on small generated data."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from genrec.config import load_config
from genrec.data.interactions import EvalSet, Histories
from genrec.data.sources import DataConfig, load_data
from genrec.data.splits import Split, split
from genrec.data.synth import SynthConfig, dataset_config, generate
from genrec.evaluation.evaluator import evaluate, sample_users
from genrec.evaluation.protocol import Protocol
from genrec.models.base import FitContext
from genrec.models.itemknn import ItemKNN
from genrec.runs.experiment import prepare, run_experiment

N_ITEMS = 20_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Split, EvalSet, ItemKNN]:
    """40k generated rows over 20k items (1,600 users), split, and an ItemKNN on them."""
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n_interactions=40_000, n_items=N_ITEMS, seed=3)
    generate(cfg, out)
    ds = load_data(DataConfig(**dataset_config(Path(out), cfg)))
    sp = split(ds)
    return sp, sp.test_set(), ItemKNN(k=20).fit(sp.train, FitContext())


class _Spy:
    """Wraps a model; records the rows of every ``score`` call."""

    def __init__(self, model: ItemKNN) -> None:
        self.model, self.rows = model, []

    def score(self, histories: Histories, items: np.ndarray | None = None):
        self.rows.append(len(histories))
        return self.model.score(histories)


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_is_bounded_by_chunk_times_items(generated) -> None:
    _, test, model = generated
    n_items = test.histories.n_items
    protocol = Protocol(cutoffs=[10], metrics=["ndcg"])
    spy = _Spy(model)
    chunk = 64
    evaluate(spy, test, protocol, batch_size=chunk)
    assert max(spy.rows) <= chunk and sum(spy.rows) == len(test)
    # The score blocks are numpy (scipy's sparse product), so tracemalloc sees them: the peak
    # is a few (chunk, items) float32 blocks plus the result arrays, never (users, items).
    block = chunk * n_items * 4
    small = _traced_peak(lambda: evaluate(model, test, protocol, batch_size=chunk))
    whole = _traced_peak(lambda: evaluate(model, test, protocol, batch_size=len(test)))
    assert len(test) * n_items * 4 > 20 * block  # the test means something: 1.6k users
    assert small <= 4 * block + 2**20, (small, block)
    assert whole >= len(test) * n_items * 4  # the unchunked run does hold (users, items)


def test_sampled_users_are_seeded_and_reported(generated) -> None:
    _, test, model = generated
    full_p = Protocol(cutoffs=[10], metrics=["ndcg", "recall"])
    some_p = full_p.model_copy(update={"eval_users": 300})
    full, some = evaluate(model, test, full_p), evaluate(model, test, some_p)
    assert len(some.users) == 300 and len(np.unique(some.users)) == 300
    assert np.isin(some.users, test.histories.users).all()
    # Per-user metrics are those of the full evaluation for the same users.
    pos = np.searchsorted(full.users, some.users)
    for name, values in some.per_user.items():
        np.testing.assert_allclose(values, full.per_user[name][pos])
    # Seeded: same users again, other users under another seed.
    assert np.array_equal(evaluate(model, test, some_p).users, some.users)
    other = evaluate(model, test, some_p.model_copy(update={"seed": 7}))
    assert not np.array_equal(other.users, some.users)
    # Printed with the protocol; absent when off (the text of existing results is unchanged).
    assert "users=random sample of 300 (seed 42)" in some_p.describe()
    assert "sample" not in full_p.describe()
    assert some_p.model_dump()["eval_users"] == 300


def test_sampling_is_idempotent_and_keeps_small_sets(generated) -> None:
    _, test, _ = generated
    p = Protocol(eval_users=100)
    once = sample_users(test, p)
    assert len(once) == 100
    twice = sample_users(once, p)
    assert twice is once  # an already sampled set is evaluated as is
    assert sample_users(test, Protocol(eval_users=len(test) + 5)) is test
    assert sample_users(test, Protocol()) is test
    # Histories and targets stay aligned with their users.
    rows = np.searchsorted(test.histories.users, once.histories.users)
    for j in (0, 50, 99):
        r = rows[j]
        np.testing.assert_array_equal(
            once.histories.items[once.histories.indptr[j]:once.histories.indptr[j + 1]],
            test.histories.items[test.histories.indptr[r]:test.histories.indptr[r + 1]])
        np.testing.assert_array_equal(
            once.target_items[once.target_indptr[j]:once.target_indptr[j + 1]],
            test.target_items[test.target_indptr[r]:test.target_indptr[r + 1]])


def test_eval_users_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Protocol(eval_users=0)


def test_a_sampled_run_reports_and_scores_the_same_users(data_dir, tmp_path) -> None:
    """With eval_users the run's evaluation sets are the samples: the counts in results.json,
    the cold/warm split and the per-user arrays all describe the users that were scored."""
    cfg = load_config(None, [f"dataset.data_dir={data_dir}", f"output={tmp_path}",
                             "protocol.eval_users=200", "protocol.cutoffs=[10]"], models=["pop"])
    data = prepare(cfg, write=False)
    assert len(data.test_set) == 200 and len(data.valid_set) == 200
    results = run_experiment(cfg)
    assert results["dataset"]["eval_users"]["test"] == 200
    assert "200" in results["protocol_text"]
