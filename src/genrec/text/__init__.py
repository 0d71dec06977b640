"""Item text: feature templates, text encoders, coverage checks and the embedding cache."""

from genrec.text.embeddings import (
    DEFAULT_ENCODER,
    ItemTextConfig,
    TextCoverageError,
    check_text_coverage,
    embed_texts,
    embedding_cache_dir,
    item_embeddings,
    make_encoder,
)
from genrec.text.templates import (
    TEMPLATE_VERSION,
    ItemTextTemplate,
    TextCoverage,
    render_item_texts,
    resolve_fields,
    text_coverage,
)

__all__ = [
    "DEFAULT_ENCODER",
    "TEMPLATE_VERSION",
    "ItemTextConfig",
    "ItemTextTemplate",
    "TextCoverage",
    "TextCoverageError",
    "check_text_coverage",
    "embed_texts",
    "embedding_cache_dir",
    "item_embeddings",
    "make_encoder",
    "render_item_texts",
    "resolve_fields",
    "text_coverage",
]
