"""Semantic IDs: tokenizers that turn item vectors into short code sequences, the
catalogue's collision-free IDs and their health, and prefix-constrained decoding.

Tokenizers follow the sklearn transformer shape: ``fit(item_emb) -> self``,
``transform(item_emb) -> codes`` with ``codebooks_`` as the learned state.
"""

from typing import Annotated, Any

from pydantic import Discriminator, Tag

from genrec.semantic_ids._base import NotFittedError, Tokenizer, TokenizerConfig, residual_quantize
from genrec.semantic_ids.collaborative import collaborative_item_vectors
from genrec.semantic_ids.decoding import BeamResult, PrefixTrie, beam_search
from genrec.semantic_ids.ids import CodebookHealth, codebook_health, deduplicate
from genrec.semantic_ids.rkmeans import RQKMeansConfig, RQKMeansTokenizer
from genrec.semantic_ids.rqvae import RQVAEConfig, RQVAENet, RQVAETokenizer

__all__ = [
    "TOKENIZERS",
    "AnyTokenizerConfig",
    "BeamResult",
    "CodebookHealth",
    "NotFittedError",
    "PrefixTrie",
    "RQKMeansConfig",
    "RQKMeansTokenizer",
    "RQVAEConfig",
    "RQVAENet",
    "RQVAETokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "beam_search",
    "build_tokenizer",
    "codebook_health",
    "collaborative_item_vectors",
    "deduplicate",
    "residual_quantize",
]

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "rqkmeans": RQKMeansTokenizer,
    "rqvae": RQVAETokenizer,
}
"""Tokenizer classes by their config's ``kind``."""



def _tokenizer_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("kind", "rqkmeans")
    return getattr(value, "kind", None)


AnyTokenizerConfig = Annotated[
    Annotated[RQKMeansConfig, Tag("rqkmeans")] | Annotated[RQVAEConfig, Tag("rqvae")],
    Discriminator(_tokenizer_kind),
]
"""Tokenizer config picked by ``kind`` (``rqkmeans`` when the key is left out)."""


def build_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """An unfitted tokenizer from its config."""
    return TOKENIZERS[config.kind](config)
