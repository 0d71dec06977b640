"""Serving: model bundles, the HTTP service, batch inference and the feedback store.

Make a bundle from a ``genrec run`` folder with ``genrec export RUN_DIR --model ease --out
DIR`` (or :func:`export_run` / :func:`export_bundle`), then ``genrec serve DIR`` or
``genrec recommend --model DIR --users FILE --out recs.parquet``.
"""

from genrec.serving.app import ServeSettings, create_app
from genrec.serving.batch import BatchSummary, read_users, recommend_batch
from genrec.serving.bundle import (
    BUNDLE_FORMAT,
    Bundle,
    BundleError,
    export_bundle,
    export_run,
    load_bundle,
    verify_bundle,
)
from genrec.serving.feedback import (
    FeedbackRecord,
    FeedbackStore,
    PostgresFeedbackStore,
    SQLiteFeedbackStore,
    StoreUnavailableError,
    open_store,
)
from genrec.serving.service import ModelPool, ModelService, UnknownItemError, UnknownModelError

__all__ = [
    "BUNDLE_FORMAT",
    "BatchSummary",
    "Bundle",
    "BundleError",
    "FeedbackRecord",
    "FeedbackStore",
    "ModelPool",
    "ModelService",
    "PostgresFeedbackStore",
    "SQLiteFeedbackStore",
    "ServeSettings",
    "StoreUnavailableError",
    "UnknownItemError",
    "UnknownModelError",
    "create_app",
    "export_bundle",
    "export_run",
    "load_bundle",
    "open_store",
    "read_users",
    "recommend_batch",
    "verify_bundle",
]
