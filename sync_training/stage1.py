"""Stage 1: the audio encoder and the visual spatial aggregation layer learn on a bank of long clips.

Per clip, every visual grid segment goes once through the frozen visual backbone (`visual_tokens`:
(G, 1568, Dv) float16, 8 temporal slots x 196 patches) and every audio grid segment's log-mel
(1, 128, 66) is computed once (`ClipBank`). Stage 1 trains on two objectives added together:
- event detection: a linear probe per stream (`EventProbes`) reads each token, visual (8, Dv) and
  audio (6, Da) per segment, trained with binary cross-entropy against the token's closeness to one
  of the scene's sound-making moments (`data.LongClip.*_event_targets`);
- segment-level contrastive learning: B windows of S consecutive segments; each segment's visual and
  audio tokens are flattened and projected to a shared space (`SegmentProjector`); the positive of a
  visual segment is its own audio segment, every other segment in the batch is a negative, and so is
  its own audio displaced by STAGE1_SHIFTS audio-grid steps (hard negatives); symmetric InfoNCE
  (`losses.info_nce`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sync_sdk.config import ModelConfig
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_training.data import LongClip, in_sync_rows, video_segments
from sync_training.metrics import roc_auc

PATCHES = 196  # 14 x 14 spatial tokens per temporal slot
EVENT_POS_WEIGHT = 4.0  # event tokens are rare (~10 % visual, ~16 % audio): weight them up
STAGE1_SHIFTS = (-12, -5, 5, 12)  # hard-negative audio displacements, in 0.04-s audio-grid steps


@torch.no_grad()
def visual_tokens(model: nn.Module, clip: LongClip, chunk: int = 8) -> torch.Tensor:
    """Backbone tokens of every visual grid segment: (G, 1568, Dv) float16."""
    firsts = clip.video_firsts()
    return torch.cat([model.vfeat_extractor.tokens(torch.from_numpy(video_segments(clip.frames, firsts[i:i + chunk])))
                      .half() for i in range(0, len(firsts), chunk)])


def aggregate(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Backbone tokens (N, 1568, Dv) -> visual features (N, 8, Dv) (the spatial aggregation layer),
    what `encode_video` returns for the same segments."""
    dim = tokens.shape[-1]
    x = model.vfeat_extractor.spatial_attn_agg(tokens.float().reshape(-1, PATCHES, dim))
    return x.reshape(-1, VIDEO_TOKENS_PER_SEGMENT, dim)


class ClipBank:
    """Per long clip: backbone tokens (G, 1568, Dv) float16, log-mels of every audio grid segment
    (J, 1, 128, 66) float32 and event targets of their tokens, visual (G, 8) and audio (J, 6) (the
    same G, J for every clip)."""

    def __init__(self, tokens: list[torch.Tensor], mels: list[np.ndarray], vtargets: list[np.ndarray],
                 atargets: list[np.ndarray]) -> None:
        self.tokens, self.mels, self.vtargets, self.atargets = tokens, mels, vtargets, atargets

    def __len__(self) -> int:
        return len(self.tokens)

    def event_batch(self, rng: np.random.Generator, clips: np.ndarray, n_clips: int = 4, n_video: int = 4,
                    n_audio: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random grid segments of n_clips clips (from `clips`): backbone tokens (n_clips*n_video,
        1568, Dv), their targets (n_clips*n_video, 8), log-mels (n_clips*n_audio, 1, 128, 66) and
        targets (n_clips*n_audio, 6)."""
        m = rng.choice(clips, n_clips)
        g = [rng.integers(0, len(self.tokens[k]), n_video) for k in m]
        j = [rng.integers(0, len(self.mels[k]), n_audio) for k in m]
        return (torch.cat([self.tokens[k][gi] for k, gi in zip(m, g)]),
                torch.from_numpy(np.concatenate([self.vtargets[k][gi] for k, gi in zip(m, g)])),
                torch.from_numpy(np.concatenate([self.mels[k][ji] for k, ji in zip(m, j)])),
                torch.from_numpy(np.concatenate([self.atargets[k][ji] for k, ji in zip(m, j)])))

    def stage1_batch(self, rng: np.random.Generator, batch: int, n_segments: int, clips: np.ndarray,
                     shifts=STAGE1_SHIFTS) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """B random in-sync windows of S segments: backbone tokens [B x (S, 1568, Dv)],
        aud (B, S, 1, 128, 66) and each segment's audio displaced by `shifts` (B, S, K, 1, 128, 66)."""
        m = rng.choice(clips, batch)
        w = rng.integers(0, self.tokens[0].shape[0] - n_segments + 1, batch)
        g = w[:, None] + np.arange(n_segments)
        rows = in_sync_rows(g, np.array((0,) + tuple(shifts)))            # (B, S, 1 + K)
        mel = torch.from_numpy(np.stack([self.mels[mi][r] for mi, r in zip(m, rows)]))
        return [self.tokens[mi][wi:wi + n_segments] for mi, wi in zip(m, w)], mel[:, :, 0], mel[:, :, 1:]


class SegmentProjector(nn.Module):
    """Stage-1 heads: segment tokens -> unit vectors in a shared space of `dim` dimensions.

    Tokens are flattened (their temporal order stays in the embedding) and centred per video (minus
    the mean over that video's segments: what is constant in a clip - its background - says nothing
    about timing), standardised over the batch (BatchNorm without affine) and projected linearly.
    """

    def __init__(self, config: ModelConfig, dim: int = 128) -> None:
        super().__init__()
        v_in, a_in = VIDEO_TOKENS_PER_SEGMENT * config.v_dim, AUDIO_TOKENS_PER_SEGMENT * config.a_dim
        self.v = nn.Sequential(nn.BatchNorm1d(v_in, affine=False), nn.Linear(v_in, dim))
        self.a = nn.Sequential(nn.BatchNorm1d(a_in, affine=False), nn.Linear(a_in, dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def forward(self, vfeat: torch.Tensor, afeat: torch.Tensor, a_extra: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """vfeat (B, S, 8, Dv), afeat (B, S, 6, Da), a_extra (B, S, K, 6, Da) ->
        v (B*S, dim), a (B*S, dim), a_extra (B*S, K, dim)."""
        b, s, k = a_extra.shape[:3]
        v = vfeat.flatten(2)
        a_mean = afeat.flatten(2).mean(1, keepdim=True)
        v = (v - v.mean(1, keepdim=True)).flatten(0, 1)
        a = (afeat.flatten(2) - a_mean).flatten(0, 1)
        ax = (a_extra.flatten(3) - a_mean[:, :, None]).flatten(0, 2)
        a = self.a(torch.cat([a, ax]))
        unit = nn.functional.normalize
        return (unit(self.v(v), dim=-1), unit(a[: b * s], dim=-1),
                unit(a[b * s:], dim=-1).reshape(b * s, k, -1))


class EventProbes(nn.Module):
    """Stage-1 event heads: a linear read-out per token, visual (.., Dv) -> (..), audio (.., Da) -> (..)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.v = nn.Linear(config.v_dim, 1)
        self.a = nn.Linear(config.a_dim, 1)


def event_loss(model: nn.Module, probes: EventProbes, tokens: torch.Tensor, vtarget: torch.Tensor,
               mels: torch.Tensor, atarget: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the probes on visual tokens (from backbone tokens (N, 1568, Dv),
    targets (N, 8)) plus on audio tokens (log-mels (M, 1, 128, 66), targets (M, 6))."""
    bce = nn.functional.binary_cross_entropy_with_logits
    w = torch.tensor(EVENT_POS_WEIGHT)
    lv = bce(probes.v(aggregate(model, tokens)).squeeze(-1), vtarget, pos_weight=w)
    la = bce(probes.a(model.encode_audio(mels)).squeeze(-1), atarget, pos_weight=w)
    return lv + la


@torch.no_grad()
def event_auc(model: nn.Module, probes: EventProbes, bank: ClipBank, clips: np.ndarray,
              audio_stride: int = 4) -> dict[str, float]:
    """ROC AUC of the probes' scores for event tokens (target > 0.5) against tokens away from any
    event (target < 0.1), over every visual token and every `audio_stride`-th audio segment of `clips`."""
    out = {}
    for name, score, target in (
            ("visual", lambda k: probes.v(aggregate(model, bank.tokens[k])).squeeze(-1), bank.vtargets),
            ("audio", lambda k: probes.a(model.encode_audio(torch.from_numpy(bank.mels[k][::audio_stride]))).squeeze(-1),
             [t[::audio_stride] for t in bank.atargets])):
        s = np.concatenate([score(k).numpy().ravel() for k in clips])
        t = np.concatenate([target[k].ravel() for k in clips])
        keep = (t > 0.5) | (t < 0.1)
        out[f"{name}_event_auc"] = roc_auc(s[keep], t[keep] > 0.5)
    return out


def stage1_embed(model: nn.Module, proj: SegmentProjector, tokens: list[torch.Tensor], aud: torch.Tensor,
                 shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode a stage-1 batch and embed it: v (B*S, D), a (B*S, D), a_extra (B*S, K, D)."""
    b, s, k = shifted.shape[:3]
    vfeat = aggregate(model, torch.cat(tokens)).reshape(b, s, VIDEO_TOKENS_PER_SEGMENT, -1)
    afeat = model.encode_audio(torch.cat([aud.flatten(0, 1), shifted.flatten(0, 2)]))
    return proj(vfeat, afeat[: b * s].reshape(b, s, AUDIO_TOKENS_PER_SEGMENT, -1),
                afeat[b * s:].reshape(b, s, k, AUDIO_TOKENS_PER_SEGMENT, -1))


def stage1_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What stage 1 trains: the audio encoder and the visual spatial aggregation layer."""
    return (list(model.afeat_extractor.parameters())
            + list(model.vfeat_extractor.spatial_attn_agg.parameters()))
