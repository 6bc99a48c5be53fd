"""GlobalTransformer: the sync head over [OFF, visual tokens, MOD, audio tokens].

minGPT blocks (pre-norm `Block`, LayerNorm eps 1e-5, erf GELU MLP of width 4*dim),
a learned positional table of 2 + 14*S rows, `ln_f`, and a linear head on token 0:
`off_head` (21 offset classes) or, for the synchronizability variant, `sync_head` (2 classes).
"""
from __future__ import annotations

import torch
from torch import nn

from sync_sdk.model.layers import Block

EPS = 1e-5


class PositionalTable(nn.Module):
    """Learned table `pos_emb` (1, rows, D) added position-wise (official RandInitPositionalEncoding)."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, rows, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos_emb


class GlobalTransformer(nn.Module):
    """`transformer`: projected visual (B, S*8, D) and audio (B, S*6, D) -> logits (B, num_classes)."""

    def __init__(self, dim: int, depth: int, heads: int, rows: int, num_classes: int, head_name: str) -> None:
        super().__init__()
        self.head_name = head_name
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.vis_in_lnorm = nn.LayerNorm(dim)
        self.aud_in_lnorm = nn.LayerNorm(dim)
        self.pos_emb_cfg = PositionalTable(rows, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads, 4 * dim, EPS) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(dim)
        setattr(self, head_name, nn.Linear(dim, num_classes))

    def tokens(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """v (B, S*8, D), a (B, S*6, D) -> tokens after `ln_f` (B, 2 + S*14, D): [OFF, v, MOD, a]."""
        b = v.shape[0]
        x = torch.cat((self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(v),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(a)), 1)
        return self.ln_f(self.blocks(self.pos_emb_cfg(x)))

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """v (B, S*8, D), a (B, S*6, D) -> logits (B, num_classes) from token 0 (OFF)."""
        return getattr(self, self.head_name)(self.tokens(v, a)[:, 0])
