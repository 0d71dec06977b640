"""Tokenizer classes by ``kind``, the config union that picks one, and the factory."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag

from genrec.semantic_ids._base import Tokenizer, TokenizerConfig
from genrec.semantic_ids.letter import LETTERConfig, LETTERTokenizer
from genrec.semantic_ids.rkmeans import RQKMeansConfig, RQKMeansTokenizer
from genrec.semantic_ids.rqvae import RQVAEConfig, RQVAETokenizer

__all__ = ["TOKENIZERS", "AnyTokenizerConfig", "build_tokenizer"]

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "rqkmeans": RQKMeansTokenizer,
    "rqvae": RQVAETokenizer,
    "letter": LETTERTokenizer,
}
"""Tokenizer classes by their config's ``kind``."""


def _tokenizer_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("kind", "rqkmeans")
    return getattr(value, "kind", None)


AnyTokenizerConfig = Annotated[
    Annotated[RQKMeansConfig, Tag("rqkmeans")] | Annotated[RQVAEConfig, Tag("rqvae")]
    | Annotated[LETTERConfig, Tag("letter")],
    Discriminator(_tokenizer_kind),
]
"""Tokenizer config picked by ``kind``: ``rqkmeans`` (the default when the key is left out),
``rqvae``, or ``letter`` (RQ-VAE aligned with collaborative vectors, :mod:`.letter`)."""


def build_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """An unfitted tokenizer from its config."""
    return TOKENIZERS[config.kind](config)
