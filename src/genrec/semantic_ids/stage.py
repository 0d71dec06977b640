"""The semantic-ID stage of a catalogue as one fitted object: item vectors -> tokenizer ->
collision-free codes, their health report and prefix trie.

:class:`SemanticIDs` follows the sklearn shape: the constructor stores a validated
:class:`SemanticIDsConfig`, ``fit(item_vectors)`` learns the attributes ending in ``_``,
``save``/``load`` use safetensors + JSON (never pickle). It never computes item vectors:
the caller does (text embeddings from :mod:`genrec.text`, or
:func:`~genrec.semantic_ids.collaborative_item_vectors`) and may describe how in
``fit(..., source=...)``, a JSON-ready dict recorded with the codes.

A saved stage is a folder (what ``genrec tokenize`` writes)::

    semantic_ids.safetensors  codes (n_items, L + 1) int64; tokenizer.<name> tensors
    semantic_ids.json         {"format_version", "n_items", "tokenizer": {...},
                               "health": {...}, **source}

TIGER's ``source`` is ``{"item_vectors": "text", "text": {...}}`` or
``{"item_vectors": "collaborative", "collaborative_dim": D}``. Folders written before
``format_version`` existed (same keys, none more) read unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load, save_file

from genrec._io import atomic_write, atomic_write_text
from genrec.semantic_ids._base import NotFittedError, Tokenizer
from genrec.semantic_ids.decoding import PrefixTrie
from genrec.semantic_ids.ids import CodebookHealth, codebook_health, deduplicate
from genrec.semantic_ids.letter import LETTERTokenizer
from genrec.semantic_ids.rkmeans import RQKMeansConfig
from genrec.semantic_ids.tokenizers import TOKENIZERS, AnyTokenizerConfig, build_tokenizer

__all__ = ["FORMAT_VERSION", "JSON_NAME", "SAFETENSORS_NAME", "SemanticIDs",
           "SemanticIDsConfig"]

FORMAT_VERSION = 1
"""Version of the saved layout (absent in folders of the first layout, which read the same)."""
SAFETENSORS_NAME = "semantic_ids.safetensors"
JSON_NAME = "semantic_ids.json"
_RESERVED = frozenset({"format_version", "n_items", "tokenizer", "health", "origin"})
"""Keys of the JSON that are not the ``source`` description."""


class SemanticIDsConfig(BaseModel):
    """How the codes are made from item vectors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tokenizer: AnyTokenizerConfig = Field(default_factory=RQKMeansConfig)
    """Semantic-ID tokenizer (``kind: rqkmeans`` or ``rqvae``); one dedup level is added."""


class SemanticIDs:
    """A catalogue's semantic IDs: ``L`` tokenizer codes plus one dedup code per item.

    Args:
        config: Validated settings; defaults to ``SemanticIDsConfig()``.
        **overrides: Fields that replace those of ``config``.

    Attributes:
        tokenizer_: The fitted tokenizer (codes new item vectors).
        codes_: Every item's semantic ID, ``(n_items, L + 1)`` int64 (last: dedup code).
        health_: Codebook health of the ``L`` tokenizer codes (before dedup).
        vocab_sizes_: Codes per level, ``[K] * L`` and the dedup level's size.
        trie_: Prefix trie of ``codes_`` for constrained decoding.
        n_items_: Items coded.
        source_: How the item vectors were made, as given to ``fit`` (JSON-ready; ``{}``
            when not told).
        origin_: The folder this stage was read from (``None``: fitted, not loaded).
    """

    def __init__(self, config: SemanticIDsConfig | None = None, **overrides: Any) -> None:
        merged = (config or SemanticIDsConfig()).model_dump() | overrides
        self.config = SemanticIDsConfig.model_validate(merged)

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, item_vectors: np.ndarray | torch.Tensor, *,
            source: Mapping[str, Any] | None = None,
            collaborative: np.ndarray | None = None) -> Self:
        """Fit the tokenizer on ``item_vectors`` ``(n_items, D)`` (row ``i`` is item ``i``),
        code every item and deduplicate.

        Args:
            item_vectors: One vector per item.
            source: JSON-ready description of the vectors, saved with the codes (its keys
                must not be ``format_version``, ``n_items``, ``tokenizer``, ``health`` or
                ``origin``).
            collaborative: Collaborative item vectors ``(n_items, D_cf)`` for tokenizers
                that align codes with them (``kind: letter``); others ignore them.

        Returns:
            ``self``.
        """
        vectors = np.asarray(item_vectors, dtype=np.float32)
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(f"item_vectors must be a non-empty (n_items, D) array, got shape "
                             f"{vectors.shape}")
        tokenizer = build_tokenizer(self.config.tokenizer)
        if isinstance(tokenizer, LETTERTokenizer):
            tokenizer.fit(vectors, collaborative=collaborative)
        else:
            tokenizer.fit(vectors)
        self._set(tokenizer, deduplicate(tokenizer.transform(vectors)), source, origin=None)
        return self

    def _set(self, tokenizer: Tokenizer, codes: np.ndarray, source: Mapping[str, Any] | None,
             origin: str | None) -> None:
        source = json.loads(json.dumps(dict(source or {})))           # JSON-ready, a copy
        if reserved := sorted(_RESERVED & set(source)):
            raise ValueError(f"source may not use the keys {reserved}")
        k = self.config.tokenizer.codebook_size
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        self.tokenizer_ = tokenizer
        self.codes_ = codes
        self.health_: CodebookHealth = codebook_health(codes[:, :-1], k)
        self.vocab_sizes_ = [k] * (codes.shape[1] - 1) + [int(codes[:, -1].max(initial=0)) + 1]
        self.trie_ = PrefixTrie.from_codes(codes, self.vocab_sizes_)
        self.n_items_ = len(codes)
        self.source_: dict[str, Any] = source
        self.origin_ = origin

    def _check_fitted(self) -> None:
        if not hasattr(self, "codes_"):
            raise NotFittedError("SemanticIDs is not fitted: call fit() or load() first")

    @property
    def raw_codes_(self) -> np.ndarray:
        """The tokenizer's ``L`` codes of every item, ``(n_items, L)`` (before dedup)."""
        self._check_fitted()
        return self.codes_[:, :-1]

    # -- persistence ------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "n_items": self.n_items_, **self.source_,
                "tokenizer": self.config.tokenizer.model_dump(mode="json"),
                "health": self.health_.to_dict()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"codes": torch.from_numpy(self.codes_),
                **{f"tokenizer.{k}": v.detach().cpu().contiguous()
                   for k, v in self.tokenizer_.state().items()}}

    def save(self, path: str | Path) -> None:
        """Write ``semantic_ids.safetensors`` and ``semantic_ids.json`` into ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = self._tensors()
        atomic_write(path / SAFETENSORS_NAME, lambda p: save_file(tensors, str(p)))
        atomic_write_text(path / JSON_NAME, json.dumps(self._meta(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a folder written by :meth:`save` (or by ``genrec tokenize``); ``origin_`` is
        set to ``path``."""
        path = Path(path)
        if not (path / JSON_NAME).is_file():
            raise FileNotFoundError(f"{path}: no {JSON_NAME} (write one with `genrec "
                                    "tokenize` or SemanticIDs.save)")
        meta = json.loads((path / JSON_NAME).read_text())
        tensors = load((path / SAFETENSORS_NAME).read_bytes())
        return cls._restore(meta, tensors, origin=str(path))

    def state(self) -> dict[str, torch.Tensor]:
        """Everything :meth:`save` writes as one flat dict of tensors, for embedding in
        another safetensors file (a model's): the JSON part is the UTF-8 bytes of ``meta``
        (uint8), with ``origin_`` added."""
        self._check_fitted()
        meta = json.dumps(self._meta() | {"origin": self.origin_}).encode()
        return self._tensors() | {"meta": torch.frombuffer(bytearray(meta), dtype=torch.uint8)}

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor],
                   meta: Mapping[str, Any] | None = None) -> Self:
        """A fitted stage from what :meth:`state` returned; or from ``codes`` and
        ``tokenizer.*`` tensors with ``meta`` given (at least ``{"tokenizer": {...}}``)."""
        if meta is None:
            meta = json.loads(state["meta"].numpy().tobytes().decode())
        return cls._restore(meta, state, origin=meta.get("origin"))

    @classmethod
    def _restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                 origin: str | None) -> Self:
        version = meta.get("format_version", 1)
        if version > FORMAT_VERSION:
            raise ValueError(f"semantic IDs of format {version}; this genrec reads up to "
                             f"{FORMAT_VERSION}")
        stage = cls(SemanticIDsConfig(tokenizer=meta["tokenizer"]))
        codes = tensors["codes"].numpy().astype(np.int64)
        if "n_items" in meta and meta["n_items"] != len(codes):
            raise ValueError(f"semantic IDs: {meta['n_items']} items in the JSON, "
                             f"{len(codes)} codes in the tensors")
        tok_cfg = stage.config.tokenizer
        tokenizer = TOKENIZERS[tok_cfg.kind].from_state(tok_cfg, {
            k.removeprefix("tokenizer."): v for k, v in tensors.items()
            if k.startswith("tokenizer.")})
        stage._set(tokenizer, codes, {k: v for k, v in meta.items() if k not in _RESERVED},
                   origin=origin)
        return stage

    def __repr__(self) -> str:
        return f"SemanticIDs(tokenizer={self.config.tokenizer!r})"
