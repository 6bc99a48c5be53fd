"""Shared building blocks: attention, MLP, pre-norm transformer block, CLS aggregation layer.

Written for export (ONNX / TensorRT): no einsum, no einops, no in-place ops on activations,
reshapes use static sizes (batch as -1). Attention is `softmax(q k^T / sqrt(d)) v` through
`F.scaled_dot_product_attention` (no mask, no dropout). GELU is the erf form everywhere.
Module names are ours; `sync_sdk.weights.state_dict_rules` maps them to the official names.
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


class Attention(nn.Module):
    """Multi-head self-attention: `qkv` (dim -> 3*dim, rows q | k | v), output projection `proj`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D): every token attends over all L tokens."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, -1))
        return self.proj(merge_heads(attention(q, k, v)))

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, 1, D): token 0 alone attends over all L tokens (no other query is computed)."""
        d, w, b = self.dim, self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, :1], w[:d], b[:d])
        k, v = F.linear(x, w[d:], b[d:]).chunk(2, -1)
        h = self.heads
        return self.proj(merge_heads(attention(split_heads(q, h), split_heads(k, h), split_heads(v, h))))


class Block(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1 x)`, then `+ mlp(norm2 .)`; (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AggregationLayer(nn.Module):
    """CLS + one norm_first `nn.TransformerEncoderLayer` (GELU, eps 1e-6), returning the CLS output.

    Only token 0 is kept after the layer, so only its query, residual and MLP are computed
    (keys/values use all tokens): identical output at a fraction of the cost.
    """

    def __init__(self, dim: int, heads: int, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, hidden)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (G, L, D) -> (G, D): the aggregated CLS of each group."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat((cls, tokens), dim=1)
        h = cls + self.attn.forward_cls(self.norm1(x))
        h = h + self.mlp(self.norm2(h))
        return h[:, 0]
