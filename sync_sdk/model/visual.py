"""Visual segment encoder: Motionformer (divided space-time ViT) + spatial aggregation layer.

Per segment: 16 RGB frames of 224x224 -> 2x16x16 tubelets -> 8 x 14 x 14 tokens (j = t*196 + p,
p = h*14 + w) + CLS -> blocks of time attention, space attention and MLP (LayerNorm eps 1e-6)
-> final norm, CLS dropped -> per frame t, a CLS aggregation over its 196 tokens -> (8, dim).
"""
from __future__ import annotations

import torch
from torch import nn

from sync_sdk.geometry import CROP_SIZE, SEG_FRAMES, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.model.layers import AggregationLayer, Attention, Mlp, attention

PATCH = 16
TUBELET = SEG_FRAMES // VIDEO_TOKENS_PER_SEGMENT  # 2 frames per temporal token
T = VIDEO_TOKENS_PER_SEGMENT                              # 8
P = (CROP_SIZE // PATCH) ** 2                             # 196
EPS = 1e-6

# Per attention: tokens per group, groups, the axis of (N, T, P, ...) where the CLS key/value is
# prepended (broadcast to (T, P) sizes `cls_size`), permutations (N, T', P', 2, H, d) ->
# (2, N, G, H, keys, d) and (N, T, P, H, d) -> (N, G, H, Lg, d).
_GROUPING = {
    "time": (T, P, 1, (1, P), (3, 0, 2, 4, 1, 5), (0, 2, 3, 1, 4)),   # group = position p, its 8 frames
    "space": (P, T, 2, (T, 1), (3, 0, 1, 4, 2, 5), (0, 1, 3, 2, 4)),  # group = frame t, its 196 positions
}


class DividedAttention(Attention):
    """Motionformer attention over (N, 1 + T*P, D) tokens, time- or space-grouped (`Attention`'s weights).

    The CLS query attends over all 1 + T*P tokens. Patch queries attend within their group
    (time: the T tokens at one position; space: the P tokens of one frame) plus the CLS key.
    All groups run as one batched attention: (N*groups, H, group_len, d).
    """

    def __init__(self, dim: int, heads: int, mode: str) -> None:
        super().__init__(dim, heads)
        self.group_len, self.groups, self.cls_axis, self.cls_size, self.kv_perm, self.q_perm = _GROUPING[mode]
        self.q_perm_inv = tuple(self.q_perm.index(i) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 1 + T*P, D) -> (N, 1 + T*P, D)."""
        h, d = self.heads, self.dim // self.heads
        g, gl = self.groups, self.group_len
        qkv = self.qkv(x).reshape(-1, 1 + T * P, 3, h, d)
        q_all, k_all, v_all = qkv.permute(2, 0, 3, 1, 4).unbind(0)               # (N, H, 1+T*P, d)
        cls_out = attention(q_all[:, :, :1], k_all, v_all)                        # (N, H, 1, d)

        patches = qkv[:, 1:].reshape(-1, T, P, 3, h, d)
        cls_kv = qkv[:, :1, 1:].reshape(-1, 1, 1, 2, h, d).expand(-1, *self.cls_size, -1, -1, -1)
        kv = torch.cat((cls_kv, patches[:, :, :, 1:]), self.cls_axis)             # (N, T', P', 2, H, d)
        k, v = kv.permute(self.kv_perm).reshape(2, -1, h, gl + 1, d).unbind(0)    # (N*G, H, Lg+1, d)
        q = patches[:, :, :, 0].permute(self.q_perm).reshape(-1, h, gl, d)       # (N*G, H, Lg, d)
        out = attention(q, k, v).reshape(-1, g, h, gl, d).permute(self.q_perm_inv)  # (N, T, P, H, d)

        cls_out = cls_out.transpose(1, 2).reshape(-1, 1, self.dim)
        out = torch.cat((cls_out, out.reshape(-1, T * P, self.dim)), 1)
        return self.proj(out)


class DividedSpaceTimeBlock(nn.Module):
    """`x + TimeAttn(norm3 x)`, `+ SpaceAttn(norm1 .)`, `+ MLP(norm2 .)`; (N, 1+T*P, D) -> same."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = DividedAttention(dim, heads, "space")
        self.timeattn = DividedAttention(dim, heads, "time")
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, hidden)
        self.norm3 = nn.LayerNorm(dim, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MotionFormer(nn.Module):
    """Visual segment encoder `vfeat_extractor`: (N, 16, 3, 224, 224) -> (N, 8, D).

    `patch_embed.proj` (2-D) exists only because the official state dict holds it; it is unused.
    """

    def __init__(self, dim: int, depth: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + P, dim))
        self.temp_embed = nn.Parameter(torch.zeros(1, T, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)
        self.patch_embed_3d = nn.Module()
        self.patch_embed_3d.proj = nn.Conv3d(3, dim, (TUBELET, PATCH, PATCH), stride=(TUBELET, PATCH, PATCH))
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.spatial_attn_agg = AggregationLayer(dim, heads, hidden)

    def tokens(self, vid: torch.Tensor) -> torch.Tensor:
        """vid (N, 16, 3, 224, 224) -> normed patch tokens (N, 1568, D), row t*196 + h*14 + w."""
        x = self.patch_embed_3d.proj(vid.transpose(1, 2))                   # (N, D, 8, 14, 14)
        x = x.flatten(2).transpose(1, 2)                                    # (N, 1568, D)
        pos = (self.pos_embed[:, 1:].unsqueeze(1) + self.temp_embed.unsqueeze(2)).reshape(1, T * P, self.dim)
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat((cls.expand(x.shape[0], -1, -1), x + pos), 1)        # (N, 1569, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 1:])

    def forward(self, vid: torch.Tensor) -> torch.Tensor:
        """vid (N, 16, 3, 224, 224) -> (N, 8, D): one spatially aggregated token per temporal slot."""
        x = self.tokens(vid).reshape(-1, P, self.dim)                       # (N*8, 196, D)
        return self.spatial_attn_agg(x).reshape(-1, T, self.dim)
