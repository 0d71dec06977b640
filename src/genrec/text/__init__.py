"""Item text: feature templates, text encoders and the embedding cache."""

from genrec.text.embeddings import (
    DEFAULT_ENCODER,
    ItemTextConfig,
    embed_texts,
    embedding_cache_dir,
    item_embeddings,
    make_encoder,
)
from genrec.text.templates import TEMPLATE_VERSION, ItemTextTemplate, render_item_texts

__all__ = [
    "DEFAULT_ENCODER",
    "TEMPLATE_VERSION",
    "ItemTextConfig",
    "ItemTextTemplate",
    "embed_texts",
    "embedding_cache_dir",
    "item_embeddings",
    "make_encoder",
    "render_item_texts",
]
