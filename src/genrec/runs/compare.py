"""``genrec compare``: a run that also keeps what the holistic report needs, then the report.

For every model: the per-user test metrics and top-K lists (``holistic/<model>.npz``), the
shared context (``holistic/context.npz``: targets, popularity baseline, categories, user
groups) and, for every generative model (one that decodes items itself, such as TIGER: see
:func:`genrec.evaluation.generative.is_generative`), its generative risks under constrained
and unconstrained decoding on a seeded sample of test users (``holistic/risks.json``, and
``generative_risks`` in its results row). See :mod:`genrec.evaluation.compare` for the
format.

With ``seeds: N`` every model is fitted and evaluated once per seed exactly as ``genrec run``
does it (:func:`genrec.runs.seeds.fit_and_evaluate_seeds`): its results row has the means over
the seeds, their std and intervals, and the results the paired tests. ``holistic/<model>.npz``
then holds the per-user test metrics averaged over the seeds (as the paired tests use them)
and the top-K lists of the first seed, whose model also gives the generative risks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from genrec._io import atomic_write_text
from genrec.config import ExperimentConfig
from genrec.data.interactions import Histories
from genrec.evaluation.beyond import category_matrix
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.compare import HolisticOptions, category_column, save_npz
from genrec.evaluation.evaluator import EvalResult, evaluate
from genrec.evaluation.fairness import user_groups
from genrec.evaluation.generative import decoding_risks, is_generative, sample_users, save_risks
from genrec.evaluation.report import write_report
from genrec.models.base import ModelConfig
from genrec.models.pop import Popularity
from genrec.runs.experiment import (
    Prepared,
    fit_and_evaluate,
    prepare,
    results_document,
    write_results,
)
from genrec.runs.seeds import fit_and_evaluate_seeds, seed_significance

__all__ = ["RISK_USERS", "generative_model_risks", "run_comparison"]

_log = logging.getLogger(__name__)

RISK_USERS = 1000
"""Test users sampled (seeded) for the generative-risk measurements of each model."""


def generative_model_risks(model: Any, name: str, histories: Histories, catalogue: Catalogue,
                           run_dir: Path, *, max_users: int | None = RISK_USERS, seed: int = 0
                           ) -> dict[str, Any]:
    """Measure a generative model's decoding risks and add them to ``holistic/risks.json``.

    The model decodes the next items of a seeded sample of the users, once constrained to the
    catalogue's codes and once unconstrained; both are resolved against the catalogue and
    counted by the one definition of :mod:`genrec.evaluation.risks`. Constrained decoding
    must emit no invalid item (an error is logged otherwise).

    Args:
        model: A model with ``generate(histories, beam_size=..., constrained=...)``.
        name: Its name in the report.
        histories: The users (the test histories).
        catalogue: The catalogue.
        run_dir: The run folder.
        max_users: Users sampled at most (None: all).
        seed: Seed of the sample.

    Returns:
        ``{"users", "sampled_from", "seed", "protocol", "constrained": {...},
        "unconstrained": {...}}``.
    """
    sample = sample_users(histories, max_users, seed)
    how = (f"all {len(histories):,} test users" if len(sample) == len(histories) else
           f"{len(sample):,} of {len(histories):,} test users (seeded sample, seed {seed})")
    common = f"{how}, history = train + valid; every beam with a finite score is an entry"
    out: dict[str, Any] = {"users": len(sample), "sampled_from": len(histories), "seed": seed,
                           "protocol": common}
    for constrained in (True, False):
        decoding = "constrained" if constrained else "unconstrained"
        r = decoding_risks(model, sample, catalogue, constrained=constrained)
        search = "kept on the trie of the catalogue's codes" if constrained else \
            "over all codes"
        out[decoding] = r
        save_risks(run_dir, f"{name} ({decoding})", r,
                   protocol=f"{common}; beam search of {int(r['beam_size'])} beams {search}")
    _log.info("%s: generative risks on %s: constrained invalid items %d, unconstrained "
              "hallucination rate %.4f", name, how, out["constrained"]["invalid_items"],
              out["unconstrained"]["hallucination_rate"])
    if out["constrained"]["invalid_items"]:
        _log.error("%s: constrained decoding emitted %d invalid items", name,
                   out["constrained"]["invalid_items"])
    return out


def _fit_and_evaluate_seeds(mcfg: ModelConfig, data: Prepared, cfg: ExperimentConfig, *,
                            progress: bool) -> tuple[Any, dict[str, Any], np.ndarray,
                                                     dict[str, np.ndarray]]:
    """Fit and evaluate ``mcfg`` once per seed of ``cfg``, as ``genrec run`` does.

    Returns:
        ``(model, row, top_items, per_user)``: the first seed's model and test top-K lists,
        the results row (means over the seeds when there are several) and the per-user test
        metrics (averaged over the seeds).
    """
    if cfg.seeds == 1:
        model, row, test = fit_and_evaluate(mcfg, data, cfg, progress=progress,
                                            keep_top_items=True)
        return model, row, test.top_items, test.per_user
    first: list[tuple[Any, np.ndarray]] = []

    def fit_keeping_first(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any], EvalResult]:
        model, row, test = fit_and_evaluate(*args, keep_top_items=not first, **kwargs)
        if not first:
            first.append((model, test.top_items))
        return model, row, test

    row, per_user = fit_and_evaluate_seeds(mcfg, data, cfg, fit_keeping_first,
                                           progress=progress)
    return first[0][0], row, first[0][1], per_user


def run_comparison(cfg: ExperimentConfig, options: HolisticOptions | None = None, *,
                   progress: bool = False, report: bool = True,
                   risk_users: int | None = RISK_USERS) -> dict[str, Any]:
    """Fit and evaluate every model of ``cfg``, keep per-user data, write results and report.

    Args:
        cfg: Dataset, protocol, models and output folder.
        options: Holistic analysis settings.
        progress: Show progress bars.
        report: Also write ``report.html`` and ``report.md``.
        risk_users: Test users sampled for each generative model's risks (None: all).

    Returns:
        The ``results.json`` content.

    Raises:
        ValueError: If ``options.k`` exceeds the largest protocol cutoff or the number of
            items (checked before any model is fitted), or there are no models. A K that is
            not a cutoff is fine: the report then has no user-group tables.
    """
    options = options or HolisticOptions()
    if not cfg.models:
        raise ValueError("no models to compare")
    if options.k > max(cfg.protocol.cutoffs):
        raise ValueError(f"holistic k={options.k} exceeds the largest protocol cutoff "
                         f"{max(cfg.protocol.cutoffs)}")
    out = Path(cfg.output)
    data = prepare(cfg)
    ds, sp, test_set = data.dataset, data.split, data.test_set
    if options.k > ds.n_items:  # the saved top lists have min(max cutoff, n_items) columns
        raise ValueError(f"holistic k={options.k} exceeds the {ds.n_items} items of the "
                         "dataset")
    counts = sp.train.item_counts()
    n_train_users = int(np.count_nonzero(np.bincount(sp.train.users, minlength=sp.n_users)))
    if cfg.protocol.candidates == "sampled":
        _log.warning("sampled candidates: top-K lists only rank sampled items, so coverage, "
                     "exposure and diversity describe the sample, not the catalogue")

    hol = out / "holistic"
    col = category_column(ds, options.category_column)
    categories = category_matrix(ds.items, col, ds.n_items)[0] if col else None
    baseline = evaluate(Popularity().fit(sp.train), test_set, cfg.protocol,
                        item_popularity=counts, batch_size=cfg.eval_batch_size,
                        keep_top_items=True).top_items
    groups = user_groups(test_set.histories.users, test_set.histories.lengths, ds.users)
    cat_arrays = {} if categories is None else {
        "cat_indptr": categories.indptr, "cat_indices": categories.indices,
        "cat_shape": np.array(categories.shape)}
    save_npz(hol / "context.npz", users=test_set.histories.users,
             history_lengths=test_set.histories.lengths,
             target_indptr=test_set.target_indptr, target_items=test_set.target_items,
             item_counts=counts, n_train_users=np.array(n_train_users), baseline_top=baseline,
             **cat_arrays, **{f"group:{g}": v for g, v in groups.items()})
    atomic_write_text(hol / "options.json", json.dumps(
        options.model_dump() | {"category_column": col}, indent=2))
    (hol / "risks.json").unlink(missing_ok=True)  # risks of an earlier run in this folder

    rows, per_model = [], {}
    catalogue: Catalogue | None = None
    for mcfg in cfg.models:
        model, row, top_items, per_model[mcfg.label] = _fit_and_evaluate_seeds(
            mcfg, data, cfg, progress=progress)
        save_npz(hol / f"{mcfg.label}.npz", top_items=top_items,
                 **{f"m:{m}": v for m, v in per_model[mcfg.label].items()})
        if is_generative(model):
            catalogue = catalogue or Catalogue.from_dataset(ds)
            row["generative_risks"] = generative_model_risks(
                model, mcfg.label, test_set.histories, catalogue, out, max_users=risk_users,
                seed=options.seed)
        rows.append(row)
    extra = {"significance": seed_significance(per_model, cfg)} if cfg.seeds > 1 else {}
    results = results_document(cfg, data, rows, **extra,
                               holistic=options.model_dump() | {"category_column": col})
    write_results(out, results)
    if report:
        write_report(out, options)
    return results

