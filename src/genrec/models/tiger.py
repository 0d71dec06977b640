"""TIGER: generative retrieval over semantic IDs (Rajput et al., NeurIPS 2023).

Every item gets a short code, its semantic ID: ``L`` codes from a tokenizer over the item's
text embedding (RQ-KMeans or RQ-VAE, :mod:`genrec.semantic_ids`) plus one dedup code that
separates items whose ``L`` codes collide. An encoder-decoder transformer reads the user's
history as the flat sequence of its items' code tokens and generates the next item's code,
one level at a time, trained with teacher forcing.

The network and its token layout live in :mod:`genrec.models._tiger_net`.

Scoring (``decoding``):

- ``beam`` (default): beam search constrained by the prefix trie of the catalogue's codes
  (:func:`genrec.semantic_ids.beam_search`), so every beam is a real item. ``score`` returns
  the dense ``(B, n_items)`` block every genrec model returns: the beam items hold their
  log-probability ``log P(code | history)``, every other item ``-inf``. Only the
  ``beam_size`` best items per user are ranked, so ask for ``k <= beam_size``.
- ``exact``: the log-probability of every item's full code (teacher-forced; costs one
  decoder pass per item and user). For parity tests: beam scores equal exact scores on the
  items the beam returns.
- ``unconstrained``: plain beam search over all codes; codes that are no item are dropped
  (their share is the hallucination rate, measured by
  :func:`genrec.evaluation.generative.beam_risks`; ``genrec compare`` reports it).

Second-generation options (each one config switch, off by default):

- ``multi_id``: MTGRec pre-training on several identifiers per item with an influence-driven
  data curriculum, then fine-tuning on the plain identifier (:mod:`genrec.models.mtgrec`).
- ``tokenizer: {kind: letter}``: LETTER-style semantic IDs aligned with collaborative item
  vectors (an SVD of the training interactions, ``collaborative_dim`` wide) as well as text,
  with a code-balance term (:mod:`genrec.semantic_ids.letter`).
- ``cold_items: prefix``: items never seen in training are generated from their text-code
  prefix (:mod:`genrec.semantic_ids.cold`); every returned item is still a catalogue item.

Item text comes from ``Dataset.items``: ``genrec run`` passes it through
``FitContext.items`` at ``fit``. Without it (or with ``item_vectors:
collaborative``) the item vectors are an SVD of the interactions. The semantic-ID stage is
a :class:`~genrec.semantic_ids.SemanticIDs` object (``semantic_ids_``): fitted here from
the item vectors, or read from a folder (``semantic_ids: DIR``, written by ``genrec
tokenize``). The saved model holds that stage (codes, tokenizer, settings) and the network,
so ``load`` needs no dataset and no folder.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import polars as pl
import torch
from pydantic import Field, model_validator

from genrec.data.interactions import Histories, Interactions
from genrec.models._tiger_net import TIGERNet, training_examples
from genrec.models.base import FitContext, ModelConfig, NotFittedError, RecList, Recommender
from genrec.models.mtgrec import MultiIDConfig, MultiIDTask, probe_examples
from genrec.semantic_ids import (
    AnyTokenizerConfig,
    BeamResult,
    CodebookHealth,
    ColdPrefixes,
    PrefixTrie,
    RQKMeansConfig,
    SemanticIDs,
    SemanticIDsConfig,
    Tokenizer,
    beam_search,
    collaborative_item_vectors,
    fuse_cold,
    identifier_groups,
    stack_codes,
)
from genrec.text import ItemTextConfig, item_embeddings, text_coverage
from genrec.training.loop import TrainConfig

__all__ = ["TIGER", "TIGERConfig", "TIGERNet", "training_examples"]

_log = logging.getLogger(__name__)

class TIGERConfig(ModelConfig):
    """TIGER hyperparameters: item vectors, tokenizer, transformer, decoding, training."""

    kind: Literal["tiger"] = "tiger"
    item_vectors: Literal["auto", "text", "collaborative"] = "auto"
    """What the tokenizer quantises. ``text``: embeddings of each item's text (needs item
    features in ``FitContext.items``); ``collaborative``: an SVD of the
    training interactions; ``auto``: text when item features with text are given, else
    collaborative."""
    text: ItemTextConfig = Field(default_factory=ItemTextConfig)
    """Item text template, encoder and embedding cache."""
    collaborative_dim: int = Field(64, ge=1)
    """Width of collaborative item vectors."""
    tokenizer: AnyTokenizerConfig = Field(default_factory=RQKMeansConfig)
    """Semantic-ID tokenizer (``kind: rqkmeans`` or ``rqvae``); one dedup level is added."""
    semantic_ids: str | None = None
    """Folder written by :meth:`TIGER.save_semantic_ids` or ``genrec tokenize``
    (:meth:`genrec.semantic_ids.SemanticIDs.save`) whose codes and tokenizer are reused
    instead of fitting new ones. The folder's settings win: ``item_vectors``, ``text``,
    ``collaborative_dim`` and ``tokenizer`` are then unused (this config is not changed; the
    fitted ``semantic_ids_`` holds the folder's settings and ``origin_``). Its catalogue
    must be this dataset's."""
    max_len: int = Field(20, ge=1)
    """Most recent history items the encoder reads (TIGER: 20)."""
    dim: int = Field(128, ge=1)
    """Width of token embeddings and of every block."""
    n_layers: int = Field(2, ge=1)
    """Blocks in the encoder, and again in the decoder."""
    n_heads: int = Field(4, ge=1)
    """Attention heads; must divide ``dim``."""
    ff_dim: int = Field(512, ge=1)
    """Hidden width of the feed-forward layers."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on embeddings and block outputs."""
    decoding: Literal["beam", "exact", "unconstrained"] = "beam"
    """How ``score`` ranks items (see the module docstring)."""
    beam_size: int = Field(20, ge=1)
    """Beams per user; only this many items per user get a finite score, so keep it at
    least the largest cutoff evaluated."""
    exclude_history: bool = False
    """Beam decoding never generates items already in the user's history (masked at the
    last level), so the beams go to new items; those items then score ``-inf``. Turn on
    under protocols that exclude seen items anyway (the recipes do). ``exact`` ignores it."""
    score_batch_size: int = Field(256, ge=1)
    """Users per decoding chunk (bounds memory)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Optimisation, early stopping, checkpoints and device."""
    multi_id: MultiIDConfig | None = None
    """MTGRec: pre-train on several identifiers per item with a data curriculum, then
    fine-tune on group 0 for ``train.epochs`` (:mod:`genrec.models.mtgrec`). None: plain
    TIGER."""
    cold_items: Literal["off", "prefix"] = "off"
    """``prefix``: items with no training interaction (cold) are generated from the prefix
    of their text codes, TIGER's cold-start scheme (:mod:`genrec.semantic_ids.cold`);
    needs ``decoding: beam`` and item vectors from text. ``off``: only what beam search
    reaches."""
    cold_weight: float = Field(0.1, gt=0, le=1)
    """Share of a generated prefix's probability given to its cold items (``cold_items:
    prefix``): higher ranks cold items higher, at the cost of warm ones."""
    cold_prefix_levels: int | None = Field(None, ge=1)
    """Codes in the prefix a cold item is generated from (``cold_items: prefix``); None:
    all tokenizer levels ``L`` (TIGER's choice). Shorter prefixes are shared with warm
    items, so the model gives them mass."""

    @model_validator(mode="after")
    def _heads(self) -> TIGERConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide dim ({self.dim})")
        if self.multi_id is not None and self.semantic_ids:
            raise ValueError("multi_id fits its own identifier groups; it cannot reuse one "
                             "semantic_ids folder (drop one of the two)")
        if self.cold_items == "prefix" and self.decoding != "beam":
            raise ValueError("cold_items: prefix works with decoding: beam")
        return self


# -- the recommender ---------------------------------------------------------------------------
class TIGER(Recommender[TIGERConfig]):
    """Generative retrieval over semantic IDs (see the module docstring).

    ``fit`` fits the semantic-ID stage (or, with ``semantic_ids: DIR``, loads it), then
    trains the network; it never changes ``config``. A loaded stage keeps its own tokenizer
    and item-vector settings in ``semantic_ids_`` (the folder wins over the config's
    ``item_vectors``, ``text``, ``collaborative_dim`` and ``tokenizer``, which are then
    unused; a difference is logged as a warning) and ``semantic_ids_.origin_`` records the
    folder. ``save`` stores the stage with the network, so ``load`` needs neither the folder
    nor the dataset.

    Attributes:
        semantic_ids_: The fitted :class:`~genrec.semantic_ids.SemanticIDs` stage.
        net_: The trained :class:`TIGERNet`.
        train_result_: Training history (after ``fit`` only).
        codes_, health_, tokenizer_, trie_: Shortcuts to the stage's attributes: every item's
            code ``(n_items, L + 1)`` (last: dedup code), the codebook health of the ``L``
            tokenizer codes, the fitted tokenizer, the prefix trie of ``codes_``.
    """

    config_cls = TIGERConfig

    # -- the semantic-ID stage --------------------------------------------------------------
    @property
    def codes_(self) -> np.ndarray:
        return self.semantic_ids_.codes_

    @property
    def health_(self) -> CodebookHealth:
        return self.semantic_ids_.health_

    @property
    def tokenizer_(self) -> Tokenizer:
        return self.semantic_ids_.tokenizer_

    @property
    def trie_(self) -> PrefixTrie:
        return self.semantic_ids_.trie_

    def _item_vectors(self, train: Interactions, features: pl.DataFrame | None
                      ) -> tuple[np.ndarray, dict[str, Any]]:
        """The item vectors the tokenizer quantises, and how they were made (the stage's
        ``source``)."""
        c = self.config
        source = c.item_vectors
        if source == "auto":
            cov = text_coverage(features if features is not None else pl.DataFrame(),
                                train.n_items, c.text.template)
            source = ("text" if cov.with_text and cov.share >= c.text.min_coverage
                      else "collaborative")
            if source == "collaborative" and cov.with_text:
                _log.warning("tiger (item_vectors=auto): %s, below text.min_coverage=%s: "
                             "item vectors from interactions instead", cov.describe(),
                             c.text.min_coverage)
        if source == "text":
            if features is None:
                raise ValueError("item_vectors='text' needs item features: "
                                 "fit(train, FitContext(items=dataset.items))")
            _log.info("tiger: item vectors from text (%s)", c.text.encoder)
            return (item_embeddings(features, train.n_items, c.text,
                                    who="tiger (item_vectors=text)"),
                    {"item_vectors": "text", "text": c.text.model_dump(mode="json")})
        _log.info("tiger: item vectors from interactions (SVD, %d dims)", c.collaborative_dim)
        return (collaborative_item_vectors(train, c.collaborative_dim),
                {"item_vectors": "collaborative", "collaborative_dim": c.collaborative_dim})

    def _semantic_id_stage(self, train: Interactions, ctx: FitContext) -> SemanticIDs:
        """Fit the stage, or read it from ``config.semantic_ids``."""
        c = self.config
        if c.semantic_ids:
            return self._read_semantic_ids(c.semantic_ids, train.n_items)
        vectors, source = self._item_vectors(train, ctx.items)
        stage = SemanticIDs(SemanticIDsConfig(tokenizer=c.tokenizer)).fit(
            vectors, source=source, collaborative=self._collaborative(train))
        _log.info("tiger: semantic IDs of %d items, codebook health:\n%s", stage.n_items_,
                  stage.health_.format())
        return stage

    def _collaborative(self, train: Interactions) -> np.ndarray | None:
        """Collaborative vectors for a tokenizer that aligns codes with them (``letter``)."""
        if self.config.tokenizer.kind != "letter":
            return None
        return collaborative_item_vectors(train, self.config.collaborative_dim)

    def _read_semantic_ids(self, path: str | Path, n_items: int) -> SemanticIDs:
        stage = SemanticIDs.load(path)
        if stage.n_items_ != n_items:
            raise ValueError(f"semantic_ids {path}: made for {stage.n_items_} items, this "
                             f"dataset has {n_items}")
        c = self.config
        ignored = []
        if stage.config.tokenizer != c.tokenizer:
            ignored.append(f"tokenizer (folder: {stage.config.tokenizer!r})")
        folder_vectors = stage.source_.get("item_vectors")
        if c.item_vectors != "auto" and folder_vectors not in (None, c.item_vectors):
            ignored.append(f"item_vectors={c.item_vectors!r} (folder: {folder_vectors!r})")
        if ignored:
            _log.warning("tiger: semantic IDs read from %s, made with its own settings; the "
                         "config's %s do not apply", path, "; ".join(ignored))
        _log.info("tiger: semantic IDs of %d items read from %s:\n%s", n_items, path,
                  stage.health_.format())
        return stage

    def fit_semantic_ids(self, train: Interactions, ctx: FitContext | None = None) -> Self:
        """Only the first stage of ``fit``: item vectors -> tokenizer -> deduplicated codes,
        or the folder of ``config.semantic_ids`` (sets ``semantic_ids_``).

        The model is not fitted afterwards: ``score``, ``recommend`` and ``save`` raise
        :class:`~genrec.models.base.NotFittedError` until ``fit`` (what an earlier ``fit``
        learned is dropped, since its network belongs to other codes).
        """
        if ctx is not None and not isinstance(ctx, FitContext):
            raise TypeError(f"ctx must be a FitContext, got {type(ctx).__name__}")
        for stale in ("net_", "train_result_", "n_users_", "n_items_"):
            self.__dict__.pop(stale, None)
        self.semantic_ids_ = self._semantic_id_stage(train, ctx or FitContext())
        return self

    def save_semantic_ids(self, path: str | Path) -> None:
        """Write the semantic-ID stage to ``path`` (``semantic_ids.safetensors`` +
        ``semantic_ids.json``) for ``semantic_ids:``; see :meth:`SemanticIDs.save`."""
        if not hasattr(self, "semantic_ids_"):
            raise NotFittedError(type(self).__name__)
        self.semantic_ids_.save(path)

    def _build_net(self) -> TIGERNet:
        c, stage = self.config, self.semantic_ids_
        # MTGRec: the vocabulary covers every identifier group (their dedup levels differ).
        return TIGERNet(torch.from_numpy(stage.codes_), self.net_vocab_, c.max_len, c.dim,
                        c.n_layers, c.n_heads, c.ff_dim, c.dropout)

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        c = self.config
        groups = None
        if c.multi_id is not None:
            vectors, source = self._item_vectors(train, ctx.items)
            stages = identifier_groups(vectors, SemanticIDsConfig(tokenizer=c.tokenizer),
                                       c.multi_id.groups, source=source,
                                       collaborative=self._collaborative(train))
            groups, self.net_vocab_ = stack_codes(stages)
            self.semantic_ids_ = stages[0]
        else:
            self.semantic_ids_ = self._semantic_id_stage(train, ctx)
            self.net_vocab_ = list(self.semantic_ids_.vocab_sizes_)
        self.cold_ = train.item_counts() == 0                          # (n_items,) bool
        self.__dict__.pop("_cold_table", None)
        torch.manual_seed(ctx.seed)  # initialisation
        self.net_ = self._build_net()
        seq, target = training_examples(train, c.max_len)
        _log.info("tiger: %d training examples, %d parameters", len(target),
                  sum(p.numel() for p in self.net_.parameters()))
        if groups is not None and c.multi_id is not None:
            task = MultiIDTask(self.net_, torch.from_numpy(groups), c.multi_id,
                               probe_examples(train, c.max_len, c.multi_id.probe_size))
            pre = c.train.model_copy(update={"epochs": c.multi_id.pretrain_epochs})
            pre_ctx = replace(ctx, checkpoint_dir=(Path(ctx.checkpoint_dir) / "pretrain"
                                                   if ctx.checkpoint_dir else None))
            _log.info("tiger (multi_id): pre-training on %d identifier groups, curriculum %s",
                      c.multi_id.groups, c.multi_id.curriculum)
            self.pretrain_result_ = self._train_net(task, (seq, target), train, pre_ctx, pre)
            self.curriculum_ = task.record
            _log.info("tiger (multi_id): final group weights %s; fine-tuning on group 0",
                      [round(w, 3) for w in task.weights.tolist()])
        self.train_result_ = self._train_net(self.net_, (seq, target), train, ctx, c.train)

    def _check_fitted(self) -> None:
        """``fit_semantic_ids`` alone leaves no network: not fitted."""
        if not hasattr(self, "net_") or not hasattr(self, "n_items_"):
            raise NotFittedError(type(self).__name__)

    # -- inference --------------------------------------------------------------------------
    def _chunks(self, histories: Histories):
        """``(histories, memory, mask)`` per chunk of users, the net in eval mode."""
        net = self.net_.eval()
        device = next(net.parameters()).device
        step = self.config.score_batch_size
        for lo in range(0, len(histories), step):
            part = histories.slice(lo, min(lo + step, len(histories)))
            memory, mask = net.encode(part.padded(self.config.max_len).to(device))
            yield part, memory, mask

    def generate(self, histories: Histories, *, beam_size: int | None = None,
                 constrained: bool = True) -> BeamResult:
        """Beam search for each user's next items.

        Args:
            histories: The users.
            beam_size: Beams per user; default ``config.beam_size``.
            constrained: Keep beams on the trie of real items. Without constraints some
                codes may be no item (``items == -1``); their share, the hallucination rate,
                is measured by :func:`genrec.evaluation.generative.beam_risks`.

        Returns:
            Codes, log-probabilities and items ``(B, W)``, best first, on the CPU.
        """
        self._check_fitted()
        beam = beam_size or self.config.beam_size
        net = self.net_
        parts = []
        with torch.no_grad():
            for part, memory, mask in self._chunks(histories):
                banned = None
                if self.config.exclude_history and constrained:
                    banned = torch.zeros(len(part), self.n_items_, dtype=torch.bool)
                    rows = np.repeat(np.arange(len(part)), part.lengths)
                    banned[torch.from_numpy(rows), torch.from_numpy(part.items.copy())] = True
                step = partial(net.next_code_log_probs, memory=memory, mem_mask=mask)
                res = beam_search(step, self.trie_, len(part), beam, constrained=constrained,
                                  banned=banned, device=memory.device)
                parts.append(res)
        if not parts:
            n = self.codes_.shape[1]
            return BeamResult(torch.zeros(0, beam, n, dtype=torch.long), torch.zeros(0, beam),
                              torch.zeros(0, beam, dtype=torch.long))
        return BeamResult(*(torch.cat([getattr(p, f).cpu() for p in parts])
                            for f in ("codes", "scores", "items")))

    def exact_scores(self, histories: Histories, item_chunk: int = 65536) -> torch.Tensor:
        """``log P(code of item | history)`` of every item, ``(B, n_items)`` (no beam)."""
        self._check_fitted()
        out = torch.empty(len(histories), self.n_items_)
        with torch.no_grad():
            lo_user = 0
            for part, memory, mask in self._chunks(histories):
                rows = slice(lo_user, lo_user + len(part))
                lo_user += len(part)
                per = max(1, item_chunk // max(1, len(memory)))
                for lo in range(0, self.n_items_, per):
                    items = torch.arange(lo, min(lo + per, self.n_items_), device=memory.device)
                    out[rows, lo : lo + len(items)] = self.net_.code_log_probs(
                        memory, mask, items).cpu()
        return out

    def _score(self, histories: Histories) -> torch.Tensor:
        mode = self.config.decoding
        if mode == "exact":
            return self.exact_scores(histories)
        res = self.generate(histories, constrained=mode == "beam")
        # Dense block: beam items get their log-probability, all others -inf. Invalid codes
        # (item -1) land in an extra column that is dropped.
        out = torch.full((len(histories), self.n_items_ + 1), float("-inf"))
        cols = torch.where(res.items >= 0, res.items, self.n_items_)
        out.scatter_(1, cols, torch.where(res.items >= 0, res.scores, float("-inf")))
        out = out[:, :-1]
        if self.config.cold_items == "prefix" and mode == "beam":
            cold = self._cold_prefixes()
            if cold is not None:
                out = fuse_cold(out, self.generate_cold_prefixes(histories, cold), cold,
                                self.config.cold_weight)
                if self.config.exclude_history:  # the cold search does not ban history items
                    histories.mask_seen(out)
        return out

    def _cold_prefixes(self) -> ColdPrefixes | None:
        """The cold items' prefix table (built once per fitted model)."""
        if "_cold_table" not in self.__dict__:
            self._cold_table = ColdPrefixes.build(self.codes_, self.cold_,
                                                  self.semantic_ids_.vocab_sizes_,
                                                  self.config.cold_prefix_levels)
        return self._cold_table

    def generate_cold_prefixes(self, histories: Histories, cold: ColdPrefixes,
                               beam_size: int | None = None) -> BeamResult:
        """Constrained beam search over the cold items' code prefixes (no dedup level):
        ``items`` are prefix ids of ``cold`` (see :func:`genrec.semantic_ids.
        fuse_cold`)."""
        self._check_fitted()
        beam = beam_size or self.config.beam_size
        parts = []
        with torch.no_grad():
            for part, memory, mask in self._chunks(histories):
                step = partial(self.net_.next_code_log_probs, memory=memory, mem_mask=mask)
                parts.append(beam_search(step, cold.trie, len(part), beam,
                                         device=memory.device))
        return BeamResult(*(torch.cat([getattr(p, f).cpu() for p in parts])
                            for f in ("codes", "scores", "items")))

    def recommend(self, histories: Histories, k: int = 10, *, exclude_seen: bool = True,
                  block: torch.Tensor | np.ndarray | None = None,
                  allow: torch.Tensor | np.ndarray | None = None) -> RecList:
        """Top-``k`` items; with beam decoding at most ``beam_size`` items get scores."""
        if self.config.decoding != "exact" and k > self.config.beam_size:
            _log.warning("tiger: k=%d exceeds beam_size=%d: lists are padded with -1", k,
                         self.config.beam_size)
        return super().recommend(histories, k, exclude_seen=exclude_seen, block=block,
                                 allow=allow)

    # -- persistence -------------------------------------------------------------------------
    def _save_files(self, path: Path) -> None:
        """Write the model (see :meth:`Recommender.save`); ``state.safetensors`` holds the
        semantic-ID stage (``semantic_ids.*``, its settings as JSON bytes) and the network
        (``net.*``)."""
        self._check_fitted()
        super()._save_files(path)

    def _state(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {**{f"semantic_ids.{k}": v for k, v in self.semantic_ids_.state().items()},
                **{f"net.{k}": v for k, v in self.net_.state_dict().items()},
                "net_vocab": torch.tensor(self.net_vocab_, dtype=torch.int64),
                "cold": torch.from_numpy(self.cold_.astype(np.uint8))}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        if "semantic_ids.meta" in state:
            self.semantic_ids_ = SemanticIDs.from_state(
                {k.removeprefix("semantic_ids."): v for k, v in state.items()
                 if k.startswith("semantic_ids.")})
        else:  # saved before the stage was an object: codes and tokenizer at the top level,
            # the folder's settings already merged into the saved config
            c = self.config
            self.semantic_ids_ = SemanticIDs.from_state(
                {k: v for k, v in state.items() if k == "codes" or k.startswith("tokenizer.")},
                meta={"tokenizer": c.tokenizer.model_dump(mode="json"),
                      "item_vectors": c.item_vectors, "origin": c.semantic_ids})
        # Models saved before MTGRec and cold fusion: group 0's vocabulary, no cold items.
        self.net_vocab_ = (state["net_vocab"].tolist() if "net_vocab" in state
                           else list(self.semantic_ids_.vocab_sizes_))
        self.cold_ = (state["cold"].numpy().astype(bool) if "cold" in state
                      else np.zeros(self.semantic_ids_.n_items_, dtype=bool))
        self.__dict__.pop("_cold_table", None)
        self.net_ = self._build_net()
        self.net_.load_state_dict({k.removeprefix("net."): v for k, v in state.items()
                                   if k.startswith("net.")})
