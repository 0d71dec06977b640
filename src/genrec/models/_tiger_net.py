"""TIGER's encoder-decoder network and its training examples (the model is
:mod:`genrec.models.tiger`).

Tokens: 0 is padding, 1 starts the decoder (BOS), 2 ends the encoder input (EOS, so a user
with no history still has one token to attend to), then the codes of level ``l`` occupy the
``V_l`` tokens from ``offset_l`` on. The decoder's output at level ``l`` is a softmax over
that level's tokens only (logits tied to the token embeddings).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import Interactions

__all__ = ["BOS", "EOS", "N_SPECIAL", "PAD", "TIGERNet", "training_examples"]

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3

# -- the network ------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over keys/values ``ctx``."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)
        self.n_heads = n_heads

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """``x`` ``(B, T, D)`` attends to ``ctx`` ``(B, S, D)``; ``mask`` ``(B, 1, 1, S)``."""
        b, t, d = x.shape
        h = self.n_heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)            # (B, H, T, D/H)
        k, v = (z.view(b, -1, h, d // h).transpose(1, 2)
                for z in self.kv(ctx).split(d, dim=2))                 # (B, H, S, D/H)
        # No dropout on attention weights: on CPU it doubles the step time (a Bernoulli draw
        # per weight) for no gain we could measure; outputs and embeddings keep dropout.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


def _mlp(dim: int, ff_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim),
                         nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    """Pre-LN block: self-attention over the history tokens, then a feed-forward layer."""

    def __init__(self, dim: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, ff_dim, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention to the encoder, feed-forward.

    The decoder input is ``(B, W, T, D)``: ``W`` beams (or candidate items) per user. Self-
    attention runs per beam; cross-attention folds the beams into the query axis,
    ``(B, W * T, D)``, so the ``W`` beams of a user share one copy of its encoder memory.
    """

    def __init__(self, dim: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, n_heads, dropout)
        self.ln_3 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, ff_dim, dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                mem_mask: torch.Tensor) -> torch.Tensor:
        b, w, t, d = x.shape
        h = self.ln_1(x).view(b * w, t, d)
        x = x + self.self_attn(h, h, causal=True).view(b, w, t, d)
        h = self.ln_2(x).view(b, w * t, d)
        x = x + self.cross_attn(h, memory, mem_mask).view(b, w, t, d)
        return x + self.mlp(self.ln_3(x))


class TIGERNet(nn.Module):
    """Encoder-decoder transformer over semantic-ID tokens.

    Args:
        codes: Every item's code, ``(I, C)`` (``C = L + 1`` levels with the dedup level).
        vocab_sizes: Codes per level ``V_0..V_{C-1}``.
        max_len: History items ``M`` read by the encoder.
        dim: Model width ``D``.
        n_layers: Encoder blocks, and decoder blocks.
        n_heads: Attention heads.
        ff_dim: Feed-forward width.
        dropout: Dropout rate.
    """

    offsets: torch.Tensor
    item_codes: torch.Tensor
    item_tokens: torch.Tensor
    level_valid: torch.Tensor
    level_tokens: torch.Tensor

    def __init__(self, codes: torch.Tensor, vocab_sizes: list[int], max_len: int, dim: int,
                 n_layers: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        n_levels, v_max = len(vocab_sizes), max(vocab_sizes)
        offsets = N_SPECIAL + torch.cumsum(torch.tensor([0, *vocab_sizes[:-1]]), 0)
        self.register_buffer("offsets", offsets, persistent=False)     # (C,)
        self.register_buffer("item_codes", codes.long(), persistent=False)  # (I, C)
        # Row 0 is the padding item: shifted item ids index it directly.
        item_tokens = torch.cat([torch.zeros(1, n_levels, dtype=torch.long), codes + offsets])
        self.register_buffer("item_tokens", item_tokens, persistent=False)  # (I + 1, C)
        ar = torch.arange(v_max)
        self.register_buffer("level_valid", ar[None] < torch.tensor(vocab_sizes)[:, None],
                             persistent=False)                         # (C, V)
        self.register_buffer("level_tokens", torch.where(self.level_valid, offsets[:, None] + ar,
                                                         0), persistent=False)  # (C, V)
        self.max_len = max_len
        self.vocab_sizes = list(vocab_sizes)
        self.tok_emb = nn.Embedding(N_SPECIAL + sum(vocab_sizes), dim, padding_idx=PAD)
        self.item_pos = nn.Embedding(max_len + 1, dim)                # + the EOS slot
        self.level_emb = nn.Embedding(n_levels + 1, dim)              # + the EOS level
        self.dec_pos = nn.Embedding(n_levels, dim)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(EncoderBlock(dim, n_heads, ff_dim, dropout)
                                     for _ in range(n_layers))
        self.decoder = nn.ModuleList(DecoderBlock(dim, n_heads, ff_dim, dropout)
                                     for _ in range(n_layers))
        self.ln_enc = nn.LayerNorm(dim)
        self.ln_dec = nn.LayerNorm(dim)
        for m in self.modules():  # nanoGPT initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.tok_emb.weight[PAD].zero_()

    @property
    def n_levels(self) -> int:
        """Code levels ``C`` (with the dedup level)."""
        return self.item_codes.shape[1]

    def encode(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode left-padded histories ``seq`` ``(B, M)`` (item ids + 1, 0 = padding).

        Returns:
            ``(memory (B, S, D), key mask (B, 1, 1, S))`` with ``S = M * C + 1``.
        """
        return self.encode_tokens(self.item_tokens[seq])

    def encode_tokens(self, item_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` from the histories' code tokens ``(B, M, C)`` (0 = padding), e.g.
        tokenized with another identifier group (MTGRec)."""
        b, m, c = item_tokens.shape
        tokens = item_tokens.flatten(1)                                # (B, M * C)
        tokens = torch.cat([tokens, tokens.new_full((b, 1), EOS)], 1)  # (B, S)
        dev = item_tokens.device
        # Item slots count back from the most recent item, as in SASRec.
        slot = torch.cat([torch.arange(self.max_len - m, self.max_len, device=dev)
                          .repeat_interleave(c), torch.tensor([self.max_len], device=dev)])
        level = torch.cat([torch.arange(c, device=dev).repeat(m), torch.tensor([c], device=dev)])
        x = self.drop(self.tok_emb(tokens) + self.item_pos(slot) + self.level_emb(level))
        mask = (tokens != PAD)[:, None, None, :]                       # (B, 1, 1, S)
        for block in self.encoder:
            x = block(x, mask)
        return self.ln_enc(x), mask

    def decode(self, prefix: torch.Tensor, memory: torch.Tensor,
               mem_mask: torch.Tensor) -> torch.Tensor:
        """Decoder states after BOS and each code of ``prefix`` ``(B, W, t)`` (level codes).

        Returns:
            ``(B, W, t + 1, D)``: position ``j`` predicts the level-``j`` code.
        """
        b, w, t = prefix.shape
        tokens = torch.cat([prefix.new_full((b, w, 1), BOS), prefix + self.offsets[:t]], 2)
        x = self.drop(self.tok_emb(tokens) + self.dec_pos.weight[: t + 1])  # (B, W, t+1, D)
        for block in self.decoder:
            x = block(x, memory, mem_mask)
        return self.ln_dec(x)

    def level_logits(self, hidden: torch.Tensor, first_level: int = 0) -> torch.Tensor:
        """Logits of each position's level, ``(..., T, V_max)``; ``-inf`` past ``V_level``.

        ``hidden`` is ``(..., T, D)`` with position ``j`` at level ``first_level + j``.
        """
        t = hidden.shape[-2]
        rows = slice(first_level, first_level + t)
        out_emb = self.tok_emb.weight[self.level_tokens[rows]]        # (T, V, D) tied
        logits = torch.einsum("...td,tvd->...tv", hidden, out_emb)
        return logits.masked_fill(~self.level_valid[rows], float("-inf"))

    def forward(self, seq: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits of the next item's code and their cross-entropy.

        Args:
            seq: Histories ``(B, M)``, item ids + 1, left-padded.
            target: The next item of each row, ``(B,)`` (0-based).

        Returns:
            ``(logits (B, C, V_max), scalar loss)``.
        """
        return self.loss_on(self.item_tokens[seq], self.item_codes[target])

    def loss_on(self, item_tokens: torch.Tensor,
                codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from history tokens ``(B, M, C)`` and target codes ``(B, C)``."""
        memory, mask = self.encode_tokens(item_tokens)
        hidden = self.decode(codes[:, None, :-1], memory, mask)[:, 0]  # (B, C, D)
        logits = self.level_logits(hidden)                            # (B, C, V)
        return logits, F.cross_entropy(logits.flatten(0, 1), codes.flatten())

    def next_code_log_probs(self, prefix: torch.Tensor, memory: torch.Tensor,
                            mem_mask: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the level-``t`` code after ``prefix`` ``(B, W, t)``."""
        t = prefix.shape[2]
        hidden = self.decode(prefix, memory, mem_mask)[:, :, t:]       # (B, W, 1, D)
        logits = self.level_logits(hidden, first_level=t)[:, :, 0]    # (B, W, V_max)
        return F.log_softmax(logits, -1)[..., : self.vocab_sizes[t]]

    def code_log_probs(self, memory: torch.Tensor, mem_mask: torch.Tensor,
                       items: torch.Tensor) -> torch.Tensor:
        """Exact ``log P(code of item | history)`` for ``items`` ``(N,)``: ``(B, N)``."""
        codes = self.item_codes[items]                                # (N, C)
        prefix = codes[None, :, :-1].expand(len(memory), -1, -1)      # (B, N, C - 1)
        lp = F.log_softmax(self.level_logits(self.decode(prefix, memory, mem_mask)), -1)
        return lp.gather(-1, codes[None, :, :, None].expand(len(memory), -1, -1, 1)
                         ).squeeze(-1).sum(-1)                        # (B, N)


# -- data ---------------------------------------------------------------------------------------
def training_examples(train: Interactions, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One example per interaction after a user's first: the (at most ``max_len``) items
    before it, left-padded and shifted by 1, and the item itself.

    Returns:
        ``(histories (N, max_len) long, targets (N,) long)``.
    """
    hist = train.histories()
    items, lengths = hist.items, hist.lengths
    start = np.repeat(hist.indptr[:-1], lengths)                      # (n,) user's first row
    rows = np.flatnonzero(np.arange(len(items)) > start)              # not a user's first
    window = rows[:, None] - np.arange(max_len, 0, -1)[None]          # (N, M), oldest first
    keep = window >= start[rows][:, None]
    seq = np.where(keep, items[np.clip(window, 0, None)] + 1, 0)
    return torch.from_numpy(seq.astype(np.int64)), torch.from_numpy(items[rows].astype(np.int64))
