"""Shared building blocks: attention, MLP, and the CLS aggregation layer.

Written for export (ONNX / TensorRT): no einsum, no einops, no in-place ops on activations,
reshapes use static sizes (batch as -1). Attention is `softmax(q k^T / sqrt(d)) v` through
`F.scaled_dot_product_attention` (no mask, no dropout). GELU is the erf form everywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., Lq, d), (..., Lk, d), (..., Lk, d) -> (..., Lq, d), scale 1/sqrt(d)."""
    return F.scaled_dot_product_attention(q, k, v)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H*d) -> (B, H, L, d)."""
    b, l, c = x.shape
    return x.reshape(b, l, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H*d)."""
    b, h, l, d = x.shape
    return x.transpose(1, 2).reshape(b, l, h * d)


class Mlp(nn.Module):
    """`fc2(GELU(fc1(x)))`: (..., dim) -> (..., dim) with a `hidden`-wide middle."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PackedSelfAttention(nn.Module):
    """The parameters of `nn.MultiheadAttention` (packed q|k|v `in_proj`, `out_proj`), CLS query only."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (G, L, D) -> (G, 1, D): token 0 attends over all L tokens."""
        d = self.dim
        q = F.linear(x[:, :1], self.in_proj_weight[:d], self.in_proj_bias[:d])
        k = F.linear(x, self.in_proj_weight[d:2 * d], self.in_proj_bias[d:2 * d])
        v = F.linear(x, self.in_proj_weight[2 * d:], self.in_proj_bias[2 * d:])
        h = self.heads
        out = attention(split_heads(q, h), split_heads(k, h), split_heads(v, h))
        return self.out_proj(merge_heads(out))


class AggregationLayer(nn.Module):
    """CLS + one norm_first `nn.TransformerEncoderLayer` (GELU, eps 1e-6), returning the CLS output.

    Same state-dict names as the official layer (`cls_token`, `self_attn.in_proj_*`,
    `self_attn.out_proj.*`, `linear1`, `linear2`, `norm1`, `norm2`). Only token 0 is kept
    after the layer, so only its query, residual and MLP are computed (keys/values use all
    tokens): identical output at a fraction of the cost.
    """

    def __init__(self, dim: int, heads: int, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.self_attn = PackedSelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (G, L, D) -> (G, D): the aggregated CLS of each group."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat((cls, tokens), dim=1)
        h = cls + self.self_attn(self.norm1(x))
        h = h + self.linear2(F.gelu(self.linear1(self.norm2(h))))
        return h[:, 0]
