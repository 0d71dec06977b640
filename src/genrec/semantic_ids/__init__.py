"""Semantic IDs: tokenizers that turn item vectors into short code sequences, the
catalogue's collision-free IDs and their health, and prefix-constrained decoding; several identifiers per item (:mod:`.multi`, MTGRec), a
collaborative-aware tokenizer (:mod:`.letter`, LETTER) and cold-item fusion (:mod:`.cold`).

Tokenizers follow the sklearn transformer shape: ``fit(item_emb) -> self``,
``transform(item_emb) -> codes`` with ``codebooks_`` as the learned state.
:class:`SemanticIDs` is the whole stage a generative model needs, fitted once and reusable:
item vectors -> tokenizer -> deduplicated codes, their health report and prefix trie, saved
as ``semantic_ids.safetensors`` + ``semantic_ids.json``. Item vectors are the caller's
(text embeddings from :mod:`genrec.text`, or :func:`collaborative_item_vectors`).
"""

from genrec.semantic_ids._base import NotFittedError, Tokenizer, TokenizerConfig, residual_quantize
from genrec.semantic_ids.cold import ColdPrefixes, fuse_cold
from genrec.semantic_ids.collaborative import collaborative_item_vectors
from genrec.semantic_ids.decoding import DENSE_MAX_ENTRIES, BeamResult, PrefixTrie, beam_search
from genrec.semantic_ids.ids import CodebookHealth, codebook_health, deduplicate
from genrec.semantic_ids.letter import LETTERConfig, LETTERTokenizer, balance_loss
from genrec.semantic_ids.multi import identifier_groups, stack_codes
from genrec.semantic_ids.rkmeans import RQKMeansConfig, RQKMeansTokenizer
from genrec.semantic_ids.rqvae import RQVAEConfig, RQVAENet, RQVAETokenizer
from genrec.semantic_ids.stage import SemanticIDs, SemanticIDsConfig
from genrec.semantic_ids.tokenizers import TOKENIZERS, AnyTokenizerConfig, build_tokenizer

__all__ = [
    "DENSE_MAX_ENTRIES",
    "TOKENIZERS",
    "AnyTokenizerConfig",
    "BeamResult",
    "CodebookHealth",
    "ColdPrefixes",
    "LETTERConfig",
    "LETTERTokenizer",
    "NotFittedError",
    "PrefixTrie",
    "RQKMeansConfig",
    "RQKMeansTokenizer",
    "RQVAEConfig",
    "RQVAENet",
    "RQVAETokenizer",
    "SemanticIDs",
    "SemanticIDsConfig",
    "Tokenizer",
    "TokenizerConfig",
    "balance_loss",
    "beam_search",
    "build_tokenizer",
    "codebook_health",
    "collaborative_item_vectors",
    "deduplicate",
    "fuse_cold",
    "identifier_groups",
    "residual_quantize",
    "stack_codes",
]
