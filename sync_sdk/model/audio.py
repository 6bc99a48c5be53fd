"""Audio segment encoder: AST + frequency aggregation layer.

Per segment: log-mel (1, 128 freq, 66 time) -> 16x16 patches at stride 10 -> 12 x 6 grid
(frequency-major, p = f*6 + t) -> [CLS, DIST, 72 patches] -> pre-norm blocks (eps 1e-12) ->
per time column, a CLS aggregation over its 12 frequency tokens -> (6, dim).
"""
from __future__ import annotations

import torch
from torch import nn

from sync_sdk.geometry import N_MELS, SPEC_FRAMES
from sync_sdk.model.layers import AggregationLayer, Block

PATCH = 16
STRIDE = 10
F_PATCHES = (N_MELS - PATCH) // STRIDE + 1       # 12
T_PATCHES = (SPEC_FRAMES - PATCH) // STRIDE + 1  # 6
TOKENS = 2 + F_PATCHES * T_PATCHES               # 74
EPS = 1e-12


class AST(nn.Module):
    """Audio segment encoder `afeat_extractor`: (N, 1, 128, 66) log-mel -> (N, 6, D)."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, TOKENS, dim))
        self.patch_embed = nn.Conv2d(1, dim, PATCH, stride=STRIDE)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, EPS) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.freq_attn_agg = AggregationLayer(dim, heads, hidden)

    def hidden_state(self, aud: torch.Tensor) -> torch.Tensor:
        """aud (N, 1, 128, 66) -> AST last hidden state (N, 74, D): rows CLS, DIST, 2 + f*6 + t."""
        p = self.patch_embed(aud).flatten(2).transpose(1, 2)
        n = p.shape[0]
        x = torch.cat((self.cls_token.expand(n, -1, -1), self.dist_token.expand(n, -1, -1), p), 1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, aud: torch.Tensor) -> torch.Tensor:
        """aud (N, 1, 128, 66) -> (N, 6, D): one frequency-aggregated token per time column."""
        x = self.hidden_state(aud)[:, 2:]                                  # (N, 72, D), p = f*6 + t
        x = x.reshape(-1, F_PATCHES, T_PATCHES, self.dim).transpose(1, 2)  # (N, 6, 12, D)
        x = self.freq_attn_agg(x.reshape(-1, F_PATCHES, self.dim))         # (N*6, D)
        return x.reshape(-1, T_PATCHES, self.dim)
