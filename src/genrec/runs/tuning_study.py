"""The stored Optuna study behind ``genrec tune``: storage, identity, sampler, pruner, workers.

A study lives in one journal file (Optuna's ``JournalFileBackend``, which serialises the
writes of several processes on one machine through a lock file), so that

* ``tune.workers`` processes run trials of the same study at once, each asking the shared
  sampler for its next point;
* rerunning the same command continues the study: finished trials are kept and only the rest
  of the trial and time budget is run;
* a rerun under another search space, model, data or protocol is refused: the study records
  an identity (:func:`study_identity`) in its user attributes when it is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from genrec.config import CategoricalParam, ExperimentConfig, TuneSection

__all__ = ["STUDY_NAME", "finished_count", "mark_interrupted", "open_study", "pruner",
           "sampler", "spawn_workers", "storage_path", "study_identity", "study_lock",
           "worker_share"]

_log = logging.getLogger(__name__)

STUDY_NAME = "genrec-tune"
"""One study per storage file."""

_UNCOMPARED_MODEL_KEYS = ("train.progress", "train.device", "train.num_workers",
                          "score_batch_size", "score_batch")
"""Model settings a resumed study may change: where and how visibly trials run, not what
they learn."""


def storage_path(cfg: ExperimentConfig) -> Path:
    """The study's journal file: ``tune.storage``, else ``<output>/study.journal``."""
    assert cfg.tune is not None
    return Path(cfg.tune.storage) if cfg.tune.storage else Path(cfg.output) / "study.journal"


def study_identity(cfg: ExperimentConfig, data_identity: dict[str, Any]) -> dict[str, Any]:
    """What a study must keep across runs: the search space, the model's untuned settings,
    the data and split fingerprints and the protocol (as JSON values)."""
    assert cfg.tune is not None
    model = cfg.models[0].model_dump(mode="json")
    for key in _UNCOMPARED_MODEL_KEYS:
        head, _, tail = key.partition(".")
        node = model.get(head) if tail else model
        if isinstance(node, dict):
            node.pop(tail or head, None)
    return json.loads(json.dumps({
        "space": {k: s.model_dump(mode="json") for k, s in cfg.tune.space.items()},
        "model": model, "protocol": cfg.protocol.model_dump(mode="json"),
        "data": data_identity}))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _identity_diff(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    a, b = _flat(stored), _flat(now)
    return [f"{k}: {a.get(k, '<absent>')!r} in the study, {b.get(k, '<absent>')!r} now"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


@contextlib.contextmanager
def study_lock(path: Path) -> Iterator[None]:
    """Hold ``<storage>.owner`` (an advisory lock, released when the process ends) while a
    ``genrec tune`` runs the study: a second command on the same storage would otherwise
    take the first one's running trials for interrupted ones.

    Raises:
        RuntimeError: If another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".owner"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another genrec tune is running the study in {path}; wait for "
                               "it, or give this one its own tune.storage / output") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _storage(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def open_study(path: Path, identity: dict[str, Any] | None, *,
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner
               ) -> optuna.Study:
    """Create the study in ``path`` or load the one stored there.

    Args:
        path: The journal file.
        identity: :func:`study_identity` of this run, stored in a new study and compared with
            a stored one; None only loads (worker processes, after the parent checked it).
        sampler: This process's sampler.
        pruner: The pruner.

    Raises:
        ValueError: If the stored study was made for another identity, or the file is not a
            readable journal.
    """
    def unreadable(why: str) -> ValueError:
        return ValueError(f"{path}: not a readable Optuna journal ({why}); move it aside to "
                          "start a new study")

    try:
        storage = _storage(path)
        names = [s.study_name for s in storage.get_all_studies()]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            AssertionError) as e:
        raise unreadable(f"{type(e).__name__}: {e}") from None
    if not names and path.stat().st_size:  # e.g. one line cut off mid-write: Optuna skips it
        raise unreadable("it holds no study")
    if identity is None or STUDY_NAME in names:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                  pruner=pruner)
        if identity is not None:
            stored = study.user_attrs.get("identity")
            diff = _identity_diff(stored or {}, identity)
            if diff:
                raise ValueError(
                    f"{path} holds a study of another search: " + "; ".join(diff[:6])
                    + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
                    + ". Rerun with the original settings to continue it, or give this search "
                    "its own output (or tune.storage).")
        return study
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                pruner=pruner, direction="maximize")
    study.set_user_attr("identity", identity)
    return study


def mark_interrupted(study: optuna.Study) -> int:
    """Mark the trials a killed run left running as failed (user attr ``interrupted``); they
    do not count against the budget. Returns how many there were."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    storage = study._storage  # the public Study API cannot finish another process's trial
    for t in stale:
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if stale:
        _log.warning("%d trial(s) of an interrupted run marked failed: %s", len(stale),
                     [t.number for t in stale])
    return len(stale)


def finished_count(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, pruned, or failed (not interrupted)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                   TrialState.FAIL))
    return sum(not t.user_attrs.get("interrupted", False) for t in done)


def sampler(section: TuneSection, *, n_before: int, worker: int, workers: int
            ) -> optuna.samplers.BaseSampler:
    """The sampler of one worker: seeded from ``tune.seed``, the trials already in the study
    (a resumed run does not redraw the first run's random points) and the worker (workers do
    not draw the same ones); TPE uses the constant liar with several workers, so that running
    trials repel the next point."""
    seed = (section.seed if n_before == 0 and worker == 0 else
            int(np.random.SeedSequence([section.seed, n_before, worker]).generate_state(1)[0]))
    match section.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=workers > 1)
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "grid":
            grid = {k: s.choices for k, s in section.space.items()
                    if isinstance(s, CategoricalParam)}
            return optuna.samplers.GridSampler(grid, seed=seed)


def pruner(section: TuneSection) -> optuna.pruners.BasePruner:
    """The pruner of ``tune.pruner``; steps are validation rounds, counted from 1."""
    match section.pruner:
        case "none":
            return optuna.pruners.NopPruner()
        case "median":
            return optuna.pruners.MedianPruner(n_startup_trials=section.prune_startup_trials,
                                               n_warmup_steps=section.prune_from_round)
        case "halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=section.prune_from_round, reduction_factor=section.halving_rate)


def worker_share(remaining: int, workers: int) -> list[int]:
    """Trials per worker: ``remaining`` split as evenly as possible (the study's budget is
    exact: no worker starts a trial beyond it)."""
    return [remaining // workers + (i < remaining % workers) for i in range(workers)]


def spawn_workers(jobs: list[dict[str, Any]]) -> list[int]:
    """Run one worker process (``python -m genrec.runs.tuning_worker``) per job, the job
    handed over as JSON on its stdin; wait for all of them.

    Fresh interpreters rather than forks: the parent has loaded data with polars and set up
    torch's and BLAS's thread pools, neither of which survives a fork safely; and unlike
    multiprocessing's spawn, a worker started by module name never re-imports the caller's
    ``__main__`` (a script calling :func:`genrec.runs.tuning.tune` needs no main guard).

    Returns:
        Each process's exit code.
    """
    procs = []
    try:
        for job in jobs:
            proc = subprocess.Popen([sys.executable, "-m", "genrec.runs.tuning_worker"],
                                    stdin=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
        return [proc.wait() for proc in procs]
    except BaseException:  # Ctrl-C or a failed start: stop the workers too
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait()
        raise
