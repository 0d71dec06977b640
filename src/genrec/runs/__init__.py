"""The glue layer: load -> preprocess -> split -> fit -> evaluate -> report, written once.

Every command (``run``, ``compare``, ``tune``, ``tokenize``, ``export``, ``recommend`` and the
LLM commands) starts from an :class:`~genrec.config.ExperimentConfig` and goes through
:func:`prepare` and :func:`fit_model`, so the same config gives the same split, the same item
features, the same early stopping and the same test numbers whichever command runs it.
"""

from genrec.runs.compare import run_comparison
from genrec.runs.experiment import (
    Prepared,
    SavedRun,
    cold_warm,
    fit_and_evaluate,
    fit_context,
    fit_model,
    load_data,
    make_split,
    open_run,
    open_saved_model,
    prepare,
    results_document,
    run_experiment,
    training_record,
    validation_callback,
    write_results,
)
from genrec.runs.tuning import tune

__all__ = [
    "Prepared",
    "SavedRun",
    "cold_warm",
    "fit_and_evaluate",
    "fit_context",
    "fit_model",
    "load_data",
    "make_split",
    "open_run",
    "open_saved_model",
    "prepare",
    "results_document",
    "run_comparison",
    "run_experiment",
    "training_record",
    "tune",
    "validation_callback",
    "write_results",
]
