"""Initialisation of the model before stage 1, in particular of the frozen visual backbone.

The visual backbone (tubelet embedding + divided space-time blocks + final norm) is never trained:
the CPU budget allows no backward pass through it. `init_weights` gives every layer ViT-style draws,
then makes the backbone's tokens motion-sensitive: `motion_init_` turns most tubelet-embedding
channels into frame-difference filters and adds a constant "energy reference" channel that, after
the backbone's LayerNorm, reads how much a patch changes inside a tubelet (frames 2t, 2t+1);
`boundary_init_` lets the first block's time attention carry the change between neighbouring
tubelets into the same channels.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

ENERGY_REFERENCE_BIAS = 2.0  # the tubelet embedding's last channel: a constant (see motion_init_)
DIFF_FRACTION = 0.625  # tubelet-embedding channels that are frame-difference filters (motion_init_)
BOUNDARY_CHANNELS = 12  # of those, the last ones carry the change across tubelets (boundary_init_)


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """ViT-style initialisation (truncated normal, std 0.02, for weights, tokens and positional
    tables; zero biases; LayerNorm 1/0), then a motion-sensitive tubelet embedding."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, nn.LayerNorm):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.copy_((torch.randn(p.shape, generator=gen) * 0.02).clamp_(-0.04, 0.04))
        motion_init_(model.vfeat_extractor.patch_embed_3d.proj, gen)
        boundary_init_(model.vfeat_extractor, gen)
    return model


def motion_init_(conv: nn.Conv3d, gen: torch.Generator, diff_fraction: float = DIFF_FRACTION,
                 appearance_gain: float = 0.1) -> None:
    """Tubelet embedding (D, 3, 2, 16, 16) as frame-difference filters (the first diff_fraction of
    the channels: unit-norm spatial patterns applied to frame 2t+1 minus frame 2t; the first three
    measure each colour's mean change), weak appearance filters (the rest, on both frames) and, in
    the last channel, a constant (zero weights, bias ENERGY_REFERENCE_BIAS). After the backbone's
    LayerNorm that constant reads large for a still patch and small for a changing one: how much a
    patch changes, whatever the sign of the change, becomes linear in the token, so the spatial
    aggregation can find the moving patches."""
    d = conv.weight.shape[0]
    n_diff = int(d * diff_fraction)
    p = torch.randn((d, 3, *conv.weight.shape[3:]), generator=gen)
    p[:3] = 0
    for c in range(3):
        p[c, c] = 1.0
    p /= p.flatten(1).norm(dim=1)[:, None, None, None]
    w = torch.empty_like(conv.weight)
    w[:n_diff, :, 0], w[:n_diff, :, 1] = -p[:n_diff], p[:n_diff]
    w[n_diff:, :, 0] = w[n_diff:, :, 1] = appearance_gain * p[n_diff:]
    w[-1] = 0
    conv.weight.copy_(w)
    conv.bias.zero_()
    conv.bias[-1] = ENERGY_REFERENCE_BIAS


def _orthonormal_rows(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, cols) with orthonormal rows (rows <= cols), drawn from gen."""
    q, _ = torch.linalg.qr(torch.randn((cols, rows), generator=gen))
    return q.T.contiguous()


def boundary_init_(vfe: nn.Module, gen: torch.Generator, n_cross: int = BOUNDARY_CHANNELS,
                   theta: float = np.pi / 5, amp: float = 2.0, qk_gain: float = 2.45,
                   out_gain: float = 10.0) -> None:
    """Let the first block's time attention see the change between neighbouring tubelets.

    A tubelet sees frames 2t and 2t+1 only, so a flash that starts on an even frame changes
    nothing inside any tubelet: the frame-difference filters of `motion_init_` miss it. Here:
    - four appearance channels become a time code: zero tubelet weights, `temp_embed[t]` =
      amp (cos, sin, -cos, -sin)(theta t) (theta = 36 deg, so token 0 has no wrapped-around match;
      the negated pair keeps the channel mean, hence the LayerNorm, the same at every t);
    - time-attention head 0 attends to its own token, head 1 to the token before (query = the code
      rotated by -theta; token 0 to itself), both reading the same `hd` projections of the
      appearance channels; heads 2.. are zero;
    - the output projection writes out_gain (head 0 - head 1) into the last n_cross frame-difference
      channels, whose tubelet weights are zero: a change between tubelets t-1 and t reads there like
      a change inside tubelet t, and the energy reference channel (after the final LayerNorm) sees it.
    qk_gain makes a still token's attention 0.99 on the token it should read. out_gain trades
    flashes against motion: a higher gain makes changes between tubelets read larger beside the
    changes inside one (bounces, hits).
    """
    conv, attn = vfe.patch_embed_3d.proj, vfe.blocks[0].timeattn
    d = conv.weight.shape[0]
    hd = d // attn.heads
    n_diff = int(d * DIFF_FRACTION)
    cross, code, app = slice(n_diff - n_cross, n_diff), slice(d - 5, d - 1), slice(n_diff, d - 5)
    conv.weight[cross] = 0
    conv.weight[code] = 0
    t = torch.arange(vfe.temp_embed.shape[1], dtype=torch.float32)
    cos_sin = torch.stack([torch.cos(theta * t), torch.sin(theta * t)], 1)
    vfe.temp_embed[0, :, code] = amp * torch.cat([cos_sin, -cos_sin], 1)
    vfe.pos_embed[0, :, code] = 0
    vfe.cls_token[0, 0, code] = 0
    c, s = float(np.cos(theta)), float(np.sin(theta))
    w = torch.zeros(3 * d, d)
    pair = slice(code.start, code.start + 2)  # (cos, sin)
    w[0:2, pair] = w[d:d + 2, pair] = w[d + hd:d + hd + 2, pair] = qk_gain * torch.eye(2)
    w[hd:hd + 2, pair] = qk_gain * torch.tensor([[c, s], [-s, c]])    # R(-theta): the token before
    p = _orthonormal_rows(hd, app.stop - app.start, gen)
    w[2 * d:2 * d + hd, app] = w[2 * d + hd:2 * d + 2 * hd, app] = p
    attn.qkv.weight.copy_(w)
    attn.qkv.bias.zero_()
    q = _orthonormal_rows(n_cross, hd, gen)
    o = torch.zeros(d, d)
    o[cross, :hd], o[cross, hd:2 * hd] = out_gain * q, -out_gain * q
    attn.proj.weight.copy_(o)
    attn.proj.bias.zero_()
