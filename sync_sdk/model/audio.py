"""Audio segment encoder: AST (HF transformers layout) + frequency aggregation layer.

Per segment: log-mel (1, 128 freq, 66 time) -> 16x16 patches at stride 10 -> 12 x 6 grid
(frequency-major, p = f*6 + t) -> [CLS, DIST, 72 patches] -> pre-LN layers (eps 1e-12) ->
per time column, a CLS aggregation over its 12 frequency tokens -> (6, dim).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sync_sdk.geometry import N_MELS, SPEC_FRAMES
from sync_sdk.model.layers import AggregationLayer, attention, merge_heads, split_heads

PATCH = 16
STRIDE = 10
F_PATCHES = (N_MELS - PATCH) // STRIDE + 1       # 12
T_PATCHES = (SPEC_FRAMES - PATCH) // STRIDE + 1  # 6
TOKENS = 2 + F_PATCHES * T_PATCHES               # 74
EPS = 1e-12


class _Dense(nn.Module):
    """A module holding one Linear named `dense` (HF naming)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _SelfAttention(nn.Module):
    """Separate `query`, `key`, `value` projections; (N, L, D) -> (N, L, D) before the output dense."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.heads
        q, k, v = (split_heads(m(x), h) for m in (self.query, self.key, self.value))
        return merge_heads(attention(q, k, v))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = _SelfAttention(dim, heads)
        self.output = _Dense(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class ASTLayer(nn.Module):
    """`x + Attn(LN(x))`, then `+ dense(GELU(dense(LN(.))))`; (N, L, D) -> (N, L, D)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attention = _Attention(dim, heads)
        self.intermediate = _Dense(dim, hidden)
        self.output = _Dense(hidden, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=EPS)
        self.layernorm_after = nn.LayerNorm(dim, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class ASTEmbeddings(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, TOKENS, dim))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(1, dim, PATCH, stride=STRIDE)

    def forward(self, aud: torch.Tensor) -> torch.Tensor:
        """aud (N, 1, 128, 66) -> (N, 74, D): [CLS, DIST, patches f-major] + position embeddings."""
        p = self.patch_embeddings.projection(aud).flatten(2).transpose(1, 2)
        n = p.shape[0]
        x = torch.cat((self.cls_token.expand(n, -1, -1), self.distillation_token.expand(n, -1, -1), p), 1)
        return x + self.position_embeddings


class _Encoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ASTLayer(dim, heads, hidden) for _ in range(depth))


class ASTModel(nn.Module):
    """The AST backbone: (N, 1, 128, 66) -> last hidden state (N, 74, D) after the final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.embeddings = ASTEmbeddings(dim)
        self.encoder = _Encoder(dim, depth, heads, hidden)
        self.layernorm = nn.LayerNorm(dim, eps=EPS)

    def forward(self, aud: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(aud)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class AST(nn.Module):
    """Audio segment encoder `afeat_extractor`: (N, 1, 128, 66) log-mel -> (N, 6, D)."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.ast = ASTModel(dim, depth, heads, hidden)
        self.freq_attn_agg = AggregationLayer(dim, heads, hidden)

    def hidden_state(self, aud: torch.Tensor) -> torch.Tensor:
        """aud (N, 1, 128, 66) -> AST last hidden state (N, 74, D): rows CLS, DIST, 2 + f*6 + t."""
        return self.ast(aud)

    def forward(self, aud: torch.Tensor) -> torch.Tensor:
        """aud (N, 1, 128, 66) -> (N, 6, D): one frequency-aggregated token per time column."""
        x = self.hidden_state(aud)[:, 2:]                                  # (N, 72, D), p = f*6 + t
        x = x.reshape(-1, F_PATCHES, T_PATCHES, self.dim).transpose(1, 2)  # (N, 6, 12, D)
        x = self.freq_attn_agg(x.reshape(-1, F_PATCHES, self.dim))         # (N*6, D)
        return x.reshape(-1, T_PATCHES, self.dim)
