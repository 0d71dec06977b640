"""End-to-end runs of the LLM layer behind the CLI and the benchmark, on the shared glue.

``prepare`` takes the same :class:`~genrec.config.ExperimentConfig` as ``genrec run``: the
dataset is loaded, preprocessed and split by :func:`genrec.runs.experiment.prepare`, and the
candidate model (the config's first model) is fitted and evaluated by
:func:`genrec.runs.experiment.fit_and_evaluate`, with the protocol's validation callback and
early stopping, item text and seed; so ``genrec rerank`` and ``genrec run`` on one config give
the candidate model the same split, the same best epoch and the same test metrics.
``run_rerank`` and ``run_simulation`` return plain dicts ready for ``results.json``;
``llm_client`` opens a client for a URL or starts a local llama.cpp server for a GGUF file.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genrec.config import ExperimentConfig
from genrec.data.interactions import Dataset, EvalSet, Histories, Interactions
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.position import position_bias
from genrec.evaluation.stats import paired_tests
from genrec.llm.client import LLMClient, OpenAIClient
from genrec.llm.collab import CollabConfig, CollabRetriever
from genrec.llm.conversation import ConversationalRecommender
from genrec.llm.critique import CritiqueParser
from genrec.llm.local import LocalLlamaServer
from genrec.llm.models import resolve_gguf
from genrec.llm.rerank import LLMReranker, RerankConfig
from genrec.llm.simulator import SimulationConfig, simulate
from genrec.models.base import RecList, Recommender
from genrec.models.registry import load_model
from genrec.runs import experiment
from genrec.text.encoders import TextEncoder, default_encoder

__all__ = ["Prepared", "find_user", "llm_client", "prepare", "run_rerank", "run_simulation"]

_log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A dataset and a candidate model ready for the LLM layer.

    Attributes:
        dataset: The dataset.
        test: Test users (history = train + valid, target = the test item).
        catalog: Its catalogue.
        model: The fitted candidate model.
        model_name: The model's kind.
        fit_seconds: Time to fit (0 when loaded).
        candidate: The candidate model's results row (valid and test metrics under the
            protocol, training record), as ``genrec run`` writes it; None when loaded.
        protocol_text: The protocol the candidate was fitted and evaluated under.
        train: The training interactions (the only data collaborative retrieval reads).
    """

    dataset: Dataset
    test: EvalSet
    catalog: Catalogue
    model: Recommender[Any]
    model_name: str
    fit_seconds: float
    candidate: dict[str, Any] | None = None
    protocol_text: str = ""
    train: Interactions | None = None

    def retriever(self, config: CollabConfig | None = None) -> CollabRetriever:
        """A collaborative retriever fitted on the training interactions."""
        if self.train is None:
            raise ValueError("no training interactions to retrieve similar users from")
        return CollabRetriever(config).fit(self.train)


def prepare(cfg: ExperimentConfig, *, model_path: str | Path | None = None) -> Prepared:
    """Load and split the data of ``cfg``; fit and evaluate its first model (or load one).

    The output folder gets what ``genrec run`` writes for that model (config.yaml, split/,
    models/, results.json with the candidate's valid and test metrics).

    Args:
        cfg: The experiment (dataset, preprocessing, protocol, candidate model, output).
        model_path: A folder written by ``Recommender.save`` on this dataset's catalogue
            (e.g. ``RUN/models/ease`` of a ``genrec run`` of the same config); used instead
            of fitting.

    Returns:
        The prepared dataset, catalogue and candidate model.

    Raises:
        ValueError: Without a model, or if a loaded model has another catalogue size.
    """
    if model_path is None and not cfg.models:
        raise ValueError("no candidate model: pass --model KIND or list one in the config")
    data = experiment.prepare(cfg)
    ds = data.dataset
    row = None
    if model_path is not None:
        m = load_model(model_path)
        if cfg.models and cfg.models[0].kind != m.config.kind:
            raise ValueError(f"{model_path} holds a {m.config.kind} model, but the candidate "
                             f"model is {cfg.models[0].kind}: drop --model (or the config's "
                             "models), or give the matching kind")
        if m.n_items_ != ds.n_items:
            raise ValueError(f"{model_path}: model has {m.n_items_} items, {ds.name} has "
                             f"{ds.n_items}")
        fit_s, name = 0.0, m.config.label
    else:
        m, row, _ = experiment.fit_and_evaluate(cfg.models[0], data, cfg)
        fit_s, name = row["fit_seconds"], cfg.models[0].label
        # The output folder is a run folder like genrec run's: results.json of the candidate.
        experiment.write_results(Path(cfg.output), experiment.results_document(cfg, data, [row]))
    return Prepared(ds, data.test_set, Catalogue.from_dataset(ds), m, name, fit_s, row,
                    cfg.protocol.describe(), data.split.train)


@contextlib.contextmanager
def llm_client(url: str | None = None, model: str | None = None, *, gguf: str | Path | None = None,
               cache_dir: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
               timeout_s: float = 60.0) -> Iterator[LLMClient | None]:
    """A client for ``url``, or for a local llama.cpp server on ``gguf``; None for neither.

    ``gguf`` is a file or a short name of :data:`genrec.llm.models.KNOWN_GGUF` (``smollm2``).

    Yields:
        The client (closed on exit; a local server is stopped).
    """
    if gguf is None and url is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        scope = None
        if gguf is not None:
            path = resolve_gguf(gguf).resolve()
            server = stack.enter_context(LocalLlamaServer(path, n_ctx=4096, threads=1))
            url, model = server.base_url, model or server.alias
            # The local server listens on a free port that changes from run to run: its cached
            # answers are keyed by the model file (path, size, mtime) instead of the URL.
            st = path.stat()
            scope = f"gguf:{path}:{st.st_size}:{st.st_mtime_ns}"
        client = stack.enter_context(OpenAIClient(base_url=url, model=model or "default",
                                                  cache_dir=cache_dir, api_key_env=api_key_env,
                                                  timeout_s=timeout_s, cache_scope=scope))
        yield client


def find_user(p: Prepared, raw_user: str | None) -> int:
    """Row of ``raw_user`` in the test set (the first test user when None).

    Raises:
        KeyError: If the user is unknown or has no test item.
    """
    if raw_user is None:
        return 0
    dense = int(p.dataset.user_map.to_index([raw_user])[0])
    rows = np.flatnonzero(p.test.histories.users == dense)
    if dense < 0 or not len(rows):
        raise KeyError(f"user {raw_user!r} is not a test user of {p.dataset.name}")
    return int(rows[0])


def history_of(p: Prepared, row: int) -> list[int]:
    """Test history (dense ids, oldest first) of test row ``row``."""
    h = p.test.histories
    return h.items[h.indptr[row]: h.indptr[row + 1]].tolist()


def run_rerank(p: Prepared, client: LLMClient, *, users: int = 50, config: RerankConfig | None = None,
               encoder: TextEncoder | None = None, seed: int = 0,
               collab: CollabConfig | None = None) -> dict[str, Any]:
    """Rerank the model's top-N for a sample of test users and report quality and rates.

    Args:
        p: The prepared dataset and candidate model.
        client: The chat model.
        users: Test users reranked (seeded sample).
        config: Rerank settings.
        encoder: Text encoder of the embedding-match stage.
        seed: Seed of the user sample.
        collab: Add the items of similar users (training data only) to every prompt.

    Returns:
        ``before`` and ``after`` hit rates of the test item, the raw LLM error rates, token
        usage, timing and a few example lists (raw ids).
    """
    cfg = config or RerankConfig()
    rng = np.random.default_rng(seed)
    n = len(p.test)
    rows = np.sort(rng.choice(n, min(users, n), replace=False))
    ev = EvalSet(p.test.histories, p.test.target_indptr, p.test.target_items)
    h = _rows(ev, rows)
    cands = p.model.recommend(h.histories, cfg.n_candidates)
    rr = LLMReranker(client, p.catalog, cfg, encoder=encoder,
                     retriever=p.retriever(collab) if collab is not None else None)
    t0 = time.perf_counter()
    out = rr.rerank(h.histories, cands)
    secs = time.perf_counter() - t0
    targets = h.target_items[h.target_indptr[:-1]]
    k = rr.k

    def per_user(lists: RecList) -> tuple[np.ndarray, np.ndarray]:
        """Hit@k and NDCG@k of the single test item, per user."""
        top = lists.items[:, :k]
        found = top == targets[:, None]
        rank = found.argmax(axis=1)
        hits = found.any(axis=1)
        return hits.astype(float), np.where(hits, 1.0 / np.log2(rank + 2.0), 0.0)

    def hit(lists: RecList) -> float:
        return float(per_user(lists)[0].mean())

    (h0, n0), (h1, n1) = per_user(cands), per_user(out)
    emitted = [[m.item for m in res.matches[0] if m.item >= 0 and m.offered]
               if res.matches else [] for res in rr.results_]

    usage = getattr(client, "usage", None)
    return {
        "dataset": p.dataset.name, "protocol_text": p.protocol_text, "model": p.model_name,
        "candidate": p.candidate, "users": len(rows),
        "n_candidates": cfg.n_candidates, "k": k, "permutations": cfg.permutations,
        "structured": cfg.structured, "prompt_version": rr.prompt_version,
        "collab": collab.model_dump() if collab is not None else None,
        f"hit@{k}_before": hit(RecList(cands.users, cands.items[:, :k], cands.scores[:, :k])),
        f"hit@{k}_after": hit(out),
        f"ndcg@{k}_before": float(n0.mean()), f"ndcg@{k}_after": float(n1.mean()),
        "paired_tests": {f"hit@{k}": paired_tests(h1, h0), f"ndcg@{k}": paired_tests(n1, n0)},
        "position_bias": position_bias(emitted, [res.candidates for res in rr.results_]),
        "seconds_per_request": secs / max(rr.stats_.requests, 1),
        "per_user": {f"hit@{k}_before": h0.tolist(), f"hit@{k}_after": h1.tolist(),
                     f"ndcg@{k}_before": n0.tolist(), f"ndcg@{k}_after": n1.tolist()},
        "llm": rr.stats_.to_dict(), "overhead_ms_per_request": rr.stats_.overhead_ms(),
        "usage": usage.to_dict() if usage is not None else None, "seconds": secs,
        "examples": [{"user": p.dataset.user_map.to_raw([int(h.histories.users[r])])[0],
                      "before": p.catalog.raw_ids and [p.catalog.raw_ids[i] for i in
                                                       cands.items[r][:k] if i >= 0],
                      "after": [p.catalog.raw_ids[i] for i in out.items[r] if i >= 0],
                      "raw_output": rr.results_[r].raw_outputs[:1],
                      "context": [p.catalog.raw_ids[i] for i in rr.results_[r].context]}
                     for r in range(min(3, len(rows)))],
    }


def _rows(ev: EvalSet, rows: np.ndarray) -> EvalSet:
    """The test rows ``rows`` as an EvalSet (any order)."""
    hs = [ev.histories.items[ev.histories.indptr[r]: ev.histories.indptr[r + 1]].tolist()
          for r in rows]
    ts = [ev.target_items[ev.target_indptr[r]: ev.target_indptr[r + 1]].tolist() for r in rows]
    hist = Histories.from_lists(hs, ev.histories.n_items, users=ev.histories.users[rows].tolist())
    tptr = np.concatenate([[0], np.cumsum([len(t) for t in ts])])
    return EvalSet(hist, tptr, np.fromiter((i for t in ts for i in t), dtype=np.int64,
                                           count=int(tptr[-1])))


def run_simulation(p: Prepared, *, turns: int = 5, users: int | None = 500, k: int = 10,
                   critique: bool = True, baseline: bool = True, seed: int = 0,
                   client: LLMClient | None = None, phrasing: str = "template",
                   rerank: bool = False, encoder: TextEncoder | None = None) -> dict[str, Any]:
    """Simulated conversations with and (optionally) without critiques.

    Args:
        p: The prepared dataset and model.
        turns: Turns per conversation.
        users: Test users simulated (seeded sample; None = all).
        k: Items per reply.
        critique: Run the critique-driven conversation.
        baseline: Also run the no-critique baseline (the model's ranking, paged).
        seed: Seed of the user sample and phrasing.
        client: Chat model for LLM phrasing and/or reranking.
        phrasing: ``template`` or ``llm``.
        rerank: Rerank each reply's candidates with the LLM (needs ``client``).
        encoder: Text encoder of the critique parser (default: MiniLM when installed).

    Returns:
        ``{"with_critiques": {...}, "without_critiques": {...}, ...}``.
    """
    cfg = SimulationConfig(turns=turns, users=users, seed=seed,
                           phrasing="llm" if phrasing == "llm" and client else "template")
    parser = CritiqueParser(p.catalog, encoder if encoder is not None else default_encoder())
    parser.warmup()
    reranker = LLMReranker(client, p.catalog, n_candidates=20, k=k) \
        if rerank and client is not None else None
    out: dict[str, Any] = {"dataset": p.dataset.name, "protocol_text": p.protocol_text,
                           "model": p.model_name, "candidate": p.candidate,
                           "fit_seconds": p.fit_seconds, "turns": turns, "k": k}
    runs = ([("with_critiques", True)] if critique else []) + \
        ([("without_critiques", False)] if baseline else [])
    for key, use in runs:
        eng = ConversationalRecommender(p.model, p.catalog, parser, k=k, use_critiques=use,
                                        reranker=reranker)
        out[key] = simulate(eng, p.test, cfg, client=client)
    if reranker is not None:
        out["rerank_llm"] = reranker.stats_.to_dict()
    return out
