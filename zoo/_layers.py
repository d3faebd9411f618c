"""Transformer building blocks shared by the zoo models (written out op by op, no fused kernels)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

#: Additive attention-mask value for positions that must not be attended to (finite, so a fully
#: masked row gives a uniform softmax rather than NaN).
MASK_VALUE = -1e9


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scaled dot-product attention.

    Takes q [B, H, Tq, Dh], k and v [B, H, Tk, Dh] and an optional additive mask broadcastable to
    [B, H, Tq, Tk]; returns [B, H, Tq, Dh]. Spelled as matmul -> softmax -> matmul so that an
    attention-fusion pass has the canonical pattern to match.
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def padding_mask(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Takes token ids [B, T]; returns an additive attention mask [B, 1, 1, T] (MASK_VALUE at padding)."""
    return (ids == pad_id).to(torch.float32).mul(MASK_VALUE)[:, None, None, :]


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """Returns the fixed sinusoidal position-encoding table [length, dim] (dim even)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections.

    ``forward(x, context=None, mask=None)`` takes x [B, Tq, D] and optional context [B, Tk, D]
    (self-attention when omitted) and returns [B, Tq, D]. :meth:`split` and :meth:`merge` are public
    so that a decoder can keep per-head key/value caches.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        assert d_model % num_heads == 0, "d_model must be divisible by num_heads"
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """Takes [B, T, D]; returns the per-head view [B, H, T, D/H]."""
        b, t, d = x.shape
        return x.reshape(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """Takes [B, H, T, Dh]; returns [B, T, H*Dh]."""
        b, h, t, dh = x.shape
        return x.transpose(1, 2).reshape(b, t, h * dh)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attends from x [B, Tq, D] over context (default x) [B, Tk, D]; returns [B, Tq, D]."""
        context = x if context is None else context
        q = self.split(self.q_proj(x))
        k = self.split(self.k_proj(context))
        v = self.split(self.v_proj(context))
        return self.out_proj(self.merge(attend(q, k, v, mask)))


class FeedForward(nn.Module):
    """Position-wise MLP ``Linear -> activation -> Linear``; takes and returns [..., d_model]."""

    def __init__(self, d_model: int, hidden: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = activation()
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Takes [..., d_model]; returns [..., d_model]."""
        return self.fc2(self.act(self.fc1(x)))


class TransformerEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer encoder layer (self-attention + GELU MLP, both residual).

    ``forward(x, mask=None)`` takes x [B, T, D] and an optional additive mask [B, 1, 1, T]; returns [B, T, D].
    """

    def __init__(self, d_model: int, num_heads: int, ff_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Takes x [B, T, D] and an optional additive mask; returns [B, T, D]."""
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.ffn(self.norm2(x))
