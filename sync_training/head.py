"""Stages 2 and 3: the head (input projections + GlobalTransformer) on frozen-encoder features.

Stage 2 trains the 21-class offset head. It starts from `init_head_` (PyTorch's default layer
scales, a time code in the positional table, input projections fitted to the features) and draws
its classes by `curriculum_classes`. Beside the offset cross-entropy it trains the lag map
(`offset_and_lag_loss`): a linear probe (`LagProbe`) on every visual token's head output predicts,
for each offset class, whether the audio holds an event sound where that token's sound would be;
the loss counts at visual event tokens only.
Stage 3 trains the 2-class synchronizability head from the stage-2 head and keeps stage 2's losses
on the synchronizable windows (`syncability_and_offset_loss`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sync_sdk.config import ModelConfig
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, NUM_OFFSET_CLASSES, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.model.layers import Attention

HEAD_TIME_COLUMNS = 16  # columns of the head's positional table that init_head_ sets to a time code
HEAD_REFERENCE_BIAS = 3.0  # a constant output of each input projection (see projection_init_)


class LagProbe(nn.Linear):
    """Stage-2 auxiliary read-out: each visual token's head output (.., h_dim) -> (.., 21) logits
    of "the audio holds an event sound where this token's sound would be under offset class k"."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config.h_dim, NUM_OFFSET_CLASSES)


def offset_and_lag_loss(model: nn.Module, probe: LagProbe, v: torch.Tensor, a: torch.Tensor,
                        vweight: torch.Tensor, lag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One head pass: offset logits (B, 21) from the OFF token, and the lag-map loss: binary
    cross-entropy of `probe` on the visual tokens' outputs against lag (B, S*8, 21), averaged over
    the 21 classes, weighted by vweight (B, S*8) (tokens at a visual event count)."""
    tokens, logits = _head_pass(model, v, a)
    return logits, _lag_loss(probe, tokens[:, 1:1 + v.shape[1]], vweight, lag)


def _head_pass(model: nn.Module, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's output tokens (B, 2 + S*8 + S*6, D) and its logits (B, num_classes) from the OFF token."""
    tokens = model.transformer.tokens(model.vproj(v), model.aproj(a))
    return tokens, getattr(model.transformer, model.transformer.head_name)(tokens[:, 0])


def _lag_loss(probe: LagProbe, visual_out: torch.Tensor, vweight: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """The probe's binary cross-entropy on visual outputs (B, S*8, D) against lag (B, S*8, 21), mean
    over the classes, then averaged over the tokens with weights vweight (B, S*8)."""
    per_token = nn.functional.binary_cross_entropy_with_logits(probe(visual_out), lag, reduction="none").mean(-1)
    return (per_token * vweight).sum() / vweight.sum().clamp_min(1e-6)


def syncability_and_offset_loss(model: nn.Module, offset_probe: nn.Linear, lag_probe: LagProbe, v: torch.Tensor,
                                a: torch.Tensor, target: torch.Tensor, c: torch.Tensor, vweight: torch.Tensor,
                                lag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 3's pass over `sample_syncability_with_lags` windows: synchronizability logits (B, 2),
    and the stage-2 losses kept on the synchronizable windows (target 1): the offset cross-entropy
    of `offset_probe` (the stage-2 off_head) on the OFF token and the lag-map loss."""
    tokens, logits = _head_pass(model, v, a)
    pos = target == 1
    offset_ce = (nn.functional.cross_entropy(offset_probe(tokens[pos, 0]), c[pos]) if bool(pos.any())
                 else tokens.new_zeros(()))
    return logits, offset_ce, _lag_loss(lag_probe, tokens[:, 1:1 + v.shape[1]], vweight, lag)


def head_token_times(n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre times (s, from the window's first frame) of the head's visual tokens (S*8,) - token t
    of segment s holds frames 8s+2t, 8s+2t+1 - and audio tokens (S*6,) - token u spans spectrogram
    frames 10u..10u+15 of segment s, at 100 per second."""
    seg = 0.32 * np.arange(n_segments)[:, None]
    return (seg + 0.08 * np.arange(VIDEO_TOKENS_PER_SEGMENT) + 0.04).ravel(), \
        (seg + 0.1 * np.arange(AUDIO_TOKENS_PER_SEGMENT) + 0.075).ravel()


def time_code(times: np.ndarray, columns: int = HEAD_TIME_COLUMNS) -> torch.Tensor:
    """(N,) seconds -> (N, columns): sin and cos at columns/2 periods log-spaced over 0.3-12 s."""
    omega = 2 * np.pi / np.logspace(np.log10(0.3), np.log10(12.0), columns // 2)
    arg = np.asarray(times, np.float64)[:, None] * omega
    return torch.from_numpy(np.concatenate([np.sin(arg), np.cos(arg)], 1)).float()


@torch.no_grad()
def projection_init_(linear: nn.Linear, feats: torch.Tensor) -> None:
    """Fit a head input projection (vproj / aproj) to grid features (M, T, k, D) of M clips.

    Rows: the directions where a feature varies most over time inside a clip relative to how it
    varies between clips (generalised eigenvectors), scaled to unit within-clip variance and then by
    that ratio squared, so clip-constant directions (a background) fade out. The last row is a
    constant HEAD_REFERENCE_BIAS so the LayerNorm after the projection keeps magnitudes (a quiet
    token stays small instead of being blown up to unit variance).
    """
    x = feats.reshape(feats.shape[0], -1, feats.shape[-1]).double()
    clip_mean = x.mean(1, keepdim=True)
    d = x - clip_mean
    within = torch.einsum("mtd,mte->de", d, d) / (d.shape[0] * d.shape[1])
    c = clip_mean[:, 0] - clip_mean[:, 0].mean(0)
    total = within + c.t() @ c / len(c) + 1e-8 * torch.eye(len(within), dtype=torch.float64)
    ev, evec = torch.linalg.eigh(total)
    t_isqrt = evec @ torch.diag(ev.clamp_min(1e-12).rsqrt()) @ evec.t()
    ratio, u = torch.linalg.eigh(t_isqrt @ within @ t_isqrt)         # within v = ratio total v
    n_out = linear.weight.shape[0]
    n_fit = min(n_out - 1, len(within))                              # the last row is the constant
    rows = torch.zeros(n_out, len(within), dtype=torch.float64)
    rows[:n_fit] = (t_isqrt @ u).t().flip(0)[:n_fit]
    rows[:n_fit] /= (rows[:n_fit] @ within @ rows[:n_fit].t()).diag().clamp_min(1e-12).sqrt()[:, None]
    rows[:n_fit] *= ratio.flip(0)[:n_fit, None].clamp(0, 1) ** 2
    bias = -(rows @ x.reshape(-1, x.shape[-1]).mean(0))
    bias[-1] = HEAD_REFERENCE_BIAS
    linear.weight.copy_(rows.float())
    linear.bias.copy_(bias.float())


@torch.no_grad()
def init_head_(model: nn.Module, vfeat: torch.Tensor, afeat: torch.Tensor) -> None:
    """Stage-2 start: the GlobalTransformer's layers get PyTorch's default initialisation (tokens and
    positional table zero); the first HEAD_TIME_COLUMNS columns of the positional table get the time
    code of each token's moment - the same code for the visual and audio tokens of one moment - and
    vproj / aproj are fitted to training grid features vfeat (M, G, 8, Dv), afeat (M, J, 6, Da)."""
    qkv = [m.qkv for m in model.transformer.modules() if isinstance(m, Attention)]
    for module in model.transformer.modules():  # PyTorch's default scales, larger than ViT's 0.02,
        if any(module is q for q in qkv):  # so the attention does not start uniform; the packed q | k | v
            d = module.in_features  # is drawn as three Linears in the official order: key, query, value
            for k in (1, 0, 2):
                layer = nn.Linear(d, d)
                module.weight[k * d:(k + 1) * d], module.bias[k * d:(k + 1) * d] = layer.weight, layer.bias
        elif isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.reset_parameters()
    for p in (model.transformer.OFF_tok, model.transformer.MOD_tok, model.transformer.pos_emb_cfg.pos_emb):
        p.zero_()
    tv, ta = head_token_times(model.config.n_segments)
    pos = model.transformer.pos_emb_cfg.pos_emb
    pos[0, 1:1 + len(tv), :HEAD_TIME_COLUMNS] = time_code(tv)
    pos[0, 2 + len(tv):2 + len(tv) + len(ta), :HEAD_TIME_COLUMNS] = time_code(ta)
    projection_init_(model.vproj, vfeat)
    projection_init_(model.aproj, afeat)


CURRICULUM = ((0.1, (0, 20)), (0.2, (0, 10, 20)), (0.3, (0, 5, 10, 15, 20)), (0.4, tuple(range(0, 21, 2))))


def curriculum_classes(step: int, steps: int) -> np.ndarray:
    """Offset classes stage 2 draws at `step` of `steps` (CURRICULUM: up to each fraction of the
    steps): +-2 s, then every 2 s, 1 s, 0.4 s; all 21 from 40 % of the steps on."""
    frac = step / max(1, steps)
    return np.array(next((p for edge, p in CURRICULUM if frac < edge), tuple(range(NUM_OFFSET_CLASSES))))


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What stages 2 and 3 train: projections and the GlobalTransformer (encoders frozen)."""
    return [p for n, p in model.named_parameters() if n.split(".")[0] in ("vproj", "aproj", "transformer")]


def freeze_encoders(model: nn.Module) -> nn.Module:
    """Set requires_grad False on both encoders' parameters (in place); returns the model."""
    for n, p in model.named_parameters():
        if n.split(".")[0] in ("vfeat_extractor", "afeat_extractor"):
            p.requires_grad_(False)
    return model
