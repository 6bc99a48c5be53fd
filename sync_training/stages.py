"""The three training stages of Synchformer, on long synthetic clips encoded on the segment grid.

Data: a bank of long in-sync clips. Per clip, every visual grid segment goes once through the
visual backbone (tubelet embedding + divided space-time blocks + final norm), whose weights are a
motion-sensitive initialisation kept frozen (the CPU budget allows no backbone backward pass: the
tubelet embedding sees change inside a tubelet, `motion_init_`, and the first time attention change
between neighbouring tubelets, `boundary_init_`), and
every audio grid segment's log-mel is computed once (`ClipBank`).

Stage 1: pre-training of both encoders: the whole audio encoder and the visual encoder's spatial
  aggregation layer, on two objectives added together.
  - Event detection: a linear probe per stream reads each token (visual (8, Dv) per segment, audio
    (6, Da)) and is trained with binary cross-entropy against the token's closeness to one of the
    scene's sound-making moments (`LongClip.*_event_targets`, known from the generator).
  - Segment-level contrastive (the paper's): a batch holds B windows of S consecutive segments;
    each segment's visual and audio tokens are flattened and projected to a shared space; the
    positive of a visual segment is its own audio segment, every other segment in the batch (the
    same video's and other videos') is a negative, and so is its own audio displaced by a few
    tenths of a second (hard negatives); symmetric InfoNCE.
Stage 2: encoders frozen; grid features are cached (`GridFeatureSet`) and the head (projections +
  GlobalTransformer + off_head) learns 21-class offset classification, offsets drawn from the grid,
  on windows assembled from those tokens along fresh event trains (`token_windows.TokenWindows`;
  the bank's own windows are memorised).
  It starts from `init_head_` (a time code in the positional table, input projections fitted to the
  features) and follows `curriculum_classes` (+-2 s first, all 21 classes from 40 % of the steps).
  Without them its loss stays at log 21 even on idealised event features; with them it learns
  windows holding one event. Windows holding several events also need the lag-map loss
  (`offset_and_lag_loss`): a linear probe on every visual token's head output predicts, for each
  offset class, whether the audio holds an event sound where that token's sound would be; the loss
  counts at visual event tokens only (see the synthetic-tiny model card).
  Then, with all 21 classes and the rate on a cosine from `stage2_real_video_lr` to 0, on real
  visual windows with fresh audio tokens (`TokenWindows.sample_real_video`): the head learns to
  read events from neighbouring visual tokens together, which token-by-token windows cannot teach
  (held-out windows: Acc@1 0.44 -> 0.75 in 6,000 steps from 2e-3, 0.83 from 6e-3). These windows
  come from the bank's training clips and the recipe's extra clips: on the bank's 92 alone the head
  learns their visual windows (unseen clips 0.76 against 0.79 with 100 more; model card item 12).
Stage 3: the synchronizability model (2-class head, 13 segments) starts from the stage-2 head and
  learns "some content overlap" (same clip, any grid offset) vs none (audio of another clip of the
  same kind: across kinds the sound alone gives the answer away). Stage 2's offset and lag-map
  losses stay on the synchronizable windows, so the head keeps matching while it learns to say
  whether anything matches.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sync_sdk.config import ModelConfig
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.geometry import NUM_OFFSET_CLASSES
from sync_training.data import LongClip, in_sync_rows, lag_geometry, video_segments, window_indices

PATCHES = 196  # 14 x 14 spatial tokens per temporal slot
ENERGY_REFERENCE_BIAS = 2.0  # the tubelet embedding's last channel: a constant (see motion_init_)
HEAD_TIME_COLUMNS = 16  # columns of the head's positional table that init_head_ sets to a time code
HEAD_REFERENCE_BIAS = 3.0  # a constant output of each input projection (see projection_init_)
EVENT_POS_WEIGHT = 4.0  # event tokens are rare (~10 % visual, ~16 % audio): weight them up
STAGE1_SHIFTS = (-12, -5, 5, 12)  # hard-negative audio displacements, in 0.04-s audio-grid steps
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
    aggregation can find the moving patches (after event-supervised stage 1 the visual probe's AUC
    on held-out synthetic clips was ~0.5 without this channel and 0.84 with it)."""
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
    q, _ = torch.linalg.qr(torch.randn((cols, rows), generator=gen))
    return q.T.contiguous()


def boundary_init_(vfe: nn.Module, gen: torch.Generator, n_cross: int = BOUNDARY_CHANNELS,
                   theta: float = np.pi / 5, amp: float = 2.0, qk_gain: float = 2.45,
                   out_gain: float = 10.0) -> None:
    """Let the first block's time attention see the change between neighbouring tubelets.

    A tubelet sees frames 2t and 2t+1 only, so a flash that starts on an even frame changes
    nothing inside any tubelet: the frame-difference filters of `motion_init_` miss it (after stage
    1, such flashes were detected with AUC 0.55-0.65 against 0.97 for odd starts; model card item
    14). Here:
    - four appearance channels become a time code: zero tubelet weights, `temp_embed[t]` =
      amp (cos, sin, -cos, -sin)(theta t) (theta = 36 deg, so token 0 has no wrapped-around match;
      the negated pair keeps the channel mean, hence the LayerNorm, the same at every t);
    - time-attention head 0 attends to its own token, head 1 to the token before (query = the code
      rotated by -theta; token 0 to itself), both reading the same `hd` projections of the
      appearance channels; heads 2.. are zero;
    - the output projection writes out_gain (head 0 - head 1) into the last n_cross frame-difference
      channels, whose tubelet weights are zero: a change between tubelets t-1 and t reads there like
      a change inside tubelet t, and the energy reference channel (after the final LayerNorm) sees it.
    qk_gain makes a still token's attention 0.99 on the token it should read. out_gain 10 lies
    between gains 8 and 12 that an untrained detector (the lowest reference values of a slot) was
    measured at on synthetic clips: higher gains find more flashes but fewer bounces and hits.
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
    from sync_training.metrics import roc_auc
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


@torch.no_grad()
def clip_features(model: nn.Module, tokens: torch.Tensor, mels: np.ndarray, chunk: int = 256
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip's frozen-encoder features: backbone tokens (G, 1568, Dv) -> visual (G, 8, Dv);
    log-mels (J, 1, 128, 66) -> audio (J, 6, Da)."""
    model.eval()
    v = torch.cat([aggregate(model, tokens[i:i + 16]) for i in range(0, len(tokens), 16)])
    a = torch.cat([model.encode_audio(torch.from_numpy(mels[i:i + chunk])) for i in range(0, len(mels), chunk)])
    return v, a


def grid_features(model: nn.Module, bank: ClipBank, groups=None) -> "GridFeatureSet":
    """Frozen-encoder features of every grid segment of every bank clip (groups: see GridFeatureSet)."""
    vf, af = zip(*(clip_features(model, t, m) for t, m in zip(bank.tokens, bank.mels)))
    return GridFeatureSet(torch.stack(vf), torch.stack(af), np.stack(bank.vtargets), np.stack(bank.atargets), groups)


class GridFeatureSet:
    """Cached grid features of many long clips, sampled as head-training windows.

    vfeat (M, G, 8, Dv), afeat (M, J, 6, Da): the same G, J for every clip. vtargets (M, G, 8) and
    atargets (M, J, 6): the tokens' event targets (needed for the samplers with targets or lags).
    groups (M,): which clips are alike (the scene kind); a no-overlap window takes its audio from
    another clip of its own group (`draw_syncability`).
    """

    def __init__(self, vfeat: torch.Tensor, afeat: torch.Tensor, vtargets=None, atargets=None, groups=None) -> None:
        self.vfeat, self.afeat = torch.as_tensor(vfeat), torch.as_tensor(afeat)
        self.vtargets = None if vtargets is None else torch.as_tensor(vtargets)
        self.atargets = None if atargets is None else torch.as_tensor(atargets)
        self.groups = np.zeros(len(self.vfeat), np.int64) if groups is None else np.asarray(groups)
        if len(self.groups) != len(self.vfeat):
            raise ValueError(f"groups: one per clip ({len(self.vfeat)}), got {len(self.groups)}")

    def __len__(self) -> int:
        return len(self.vfeat)

    def extended(self, other: "GridFeatureSet") -> "GridFeatureSet":
        """This set's clips followed by other's (same G, J; both with targets or both without)."""
        cat = lambda x, y: None if x is None else torch.cat((x, y))  # noqa: E731
        return GridFeatureSet(cat(self.vfeat, other.vfeat), cat(self.afeat, other.afeat),
                              cat(self.vtargets, other.vtargets), cat(self.atargets, other.atargets),
                              np.concatenate((self.groups, other.groups)))

    def windows(self, m: np.ndarray, w: np.ndarray, c: np.ndarray, n_segments: int,
                audio_clip: np.ndarray | None = None, u: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Head inputs of windows (clip m, start w, offset class c, audio jitter u rows): vfeat
        (B, S*8, Dv), afeat (B, S*6, Da). audio_clip: take the audio of these clips instead (no
        content overlap)."""
        g, j = window_indices(w, c, n_segments, u)
        am = m if audio_clip is None else audio_clip
        v = self.vfeat[torch.from_numpy(m)[:, None], torch.from_numpy(g)]
        a = self.afeat[torch.from_numpy(am)[:, None], torch.from_numpy(j)]
        return v.flatten(1, 2), a.flatten(1, 2)

    def draw(self, rng: np.random.Generator, batch: int, n_segments: int, clips: np.ndarray,
             classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random windows: clips m (B,) from `clips`, starts w (B,), offset classes c (B,) from
        `classes` (None: all 21)."""
        m = rng.choice(clips, batch)
        w = rng.integers(0, self.vfeat.shape[1] - n_segments + 1, batch)
        c = rng.choice(np.arange(NUM_OFFSET_CLASSES) if classes is None else np.asarray(classes), batch)
        return m, w, c

    def jitter(self, rng: np.random.Generator, w: np.ndarray, c: np.ndarray, n_segments: int, rows: int
               ) -> np.ndarray | None:
        """Audio jitter u (B,) of windows (w, c): U{-rows..rows} audio-grid rows (0.04 s each), kept
        within the cached audio; None (and no draw from rng) for rows = 0."""
        if rows <= 0:
            return None
        _, j = window_indices(w, c, n_segments)
        return np.clip(rng.integers(-rows, rows + 1, len(w)), -j[:, 0], self.afeat.shape[1] - 1 - j[:, -1])

    def sample_offsets(self, rng: np.random.Generator, batch: int, n_segments: int, clips: np.ndarray,
                       classes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage-2 batch: random clips (from `clips`), window starts and offset classes (from
        `classes`, default all 21) -> (vfeat, afeat, target class (B,))."""
        m, w, c = self.draw(rng, batch, n_segments, clips, classes)
        v, a = self.windows(m, w, c, n_segments)
        return v, a, torch.from_numpy(c)

    def sample_offsets_with_targets(self, rng: np.random.Generator, batch: int, n_segments: int,
                                    clips: np.ndarray, classes: np.ndarray | None = None, jitter_rows: int = 0):
        """`sample_offsets` plus the event targets of the window's tokens: visual vweight (B, S*8)
        and audio (B, S*6). jitter_rows: each window's audio moved by up to this many audio-grid rows
        (`jitter`); the target class stays c."""
        m, w, c = self.draw(rng, batch, n_segments, clips, classes)
        u = self.jitter(rng, w, c, n_segments, jitter_rows)
        v, a = self.windows(m, w, c, n_segments, u=u)
        return (v, a, torch.from_numpy(c), *self.window_targets(m, w, c, n_segments, u))

    def window_targets(self, m: np.ndarray, w: np.ndarray, c: np.ndarray, n_segments: int,
                       u: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Event targets of the tokens of windows (clip m, start w, offset class c, audio jitter u),
        each in its own clip's audio: visual (B, S*8) and audio (B, S*6)."""
        if self.vtargets is None or self.atargets is None:
            raise ValueError("windows with token targets need the event targets "
                             "(GridFeatureSet(..., vtargets, atargets))")
        g, j = window_indices(w, c, n_segments, u)
        mi = torch.from_numpy(m)[:, None]
        return (self.vtargets[mi, torch.from_numpy(g)].flatten(1).float(),
                self.atargets[mi, torch.from_numpy(j)].flatten(1).float())

    def sample_offsets_with_lags(self, rng: np.random.Generator, batch: int, n_segments: int,
                                 clips: np.ndarray, classes: np.ndarray | None = None):
        """`sample_offsets` plus, per visual token, its event target vweight (B, S*8) and its lag
        map (B, S*8, 21) (`lag_maps`)."""
        v, a, c, vweight, atarget = self.sample_offsets_with_targets(rng, batch, n_segments, clips, classes)
        return v, a, c, vweight, lag_maps(atarget, n_segments)

    def draw_syncability(self, rng: np.random.Generator, batch: int, n_segments: int, clips: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stage-3 windows: clips m, starts w, offset classes c (B,) as `draw` gives them, target (B,)
        (1: the clip's own audio at class c, half of them; 0: no content overlap) and audio_clip (B,),
        the clip whose audio each window takes: for a negative another clip of the same group when
        `clips` holds one (negatives of another kind are told apart by the kind alone: held-out AUC
        0.90 against 0.65 for same-kind ones, model card item 8), else any other clip."""
        if len(np.unique(clips)) < 2:
            raise ValueError("synchronizability batches need at least two clips")
        m, w, c = self.draw(rng, batch, n_segments, clips, None)
        target = (rng.random(batch) < 0.5).astype(np.int64)
        other = rng.choice(clips, batch)
        group = self.groups
        partner = np.array([np.any((group[clips] == group[k]) & (clips != k)) for k in m])
        while np.any(clash := (target == 0) & ((other == m) | (partner & (group[other] != group[m])))):
            other[clash] = rng.choice(clips, int(clash.sum()))
        return m, w, c, target, np.where(target == 1, m, other)

    def sample_syncability(self, rng: np.random.Generator, batch: int, n_segments: int,
                           clips: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage-3 batch (`draw_syncability`): vfeat (B, S*8, Dv), afeat (B, S*6, Da), target (B,)."""
        m, w, c, target, audio_clip = self.draw_syncability(rng, batch, n_segments, clips)
        v, a = self.windows(m, w, c, n_segments, audio_clip=audio_clip)
        return v, a, torch.from_numpy(target)

    def sample_syncability_with_lags(self, rng: np.random.Generator, batch: int, n_segments: int,
                                     clips: np.ndarray, jitter_rows: int = 0):
        """`sample_syncability` plus the stage-2 targets of the synchronizable windows: offset class c
        (B,), vweight (B, S*8) (zero for the no-overlap windows) and lag maps (B, S*8, 21).
        jitter_rows: every window's audio moved by up to this many audio-grid rows (`jitter`)."""
        m, w, c, target, audio_clip = self.draw_syncability(rng, batch, n_segments, clips)
        u = self.jitter(rng, w, c, n_segments, jitter_rows)
        v, a = self.windows(m, w, c, n_segments, audio_clip=audio_clip, u=u)
        vtarget, atarget = self.window_targets(m, w, c, n_segments, u)
        target = torch.from_numpy(target)
        return v, a, target, torch.from_numpy(c), vtarget * target[:, None], lag_maps(atarget, n_segments)


def lag_maps(atarget: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Audio token targets (B, S*6) -> lag maps (B, S*8, 21): under offset class k, how close the
    window's audio at the place of visual token i's sound (`lag_geometry`) is to an event sound
    (0 outside the window's audio)."""
    audio_token, inside = lag_geometry(n_segments)
    return atarget[:, torch.from_numpy(audio_token)] * torch.from_numpy(inside).float()


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
    token stays small instead of being blown up to unit variance). Without this a fresh head does
    not learn even where a single event sits in the window.
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
    for module in model.transformer.modules():  # PyTorch's default scales: with ViT's 0.02 the
        if isinstance(module, (nn.Linear, nn.LayerNorm)):  # attention starts uniform and stage 2 stalls
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
    """Offset classes stage 2 draws at `step` of `steps`: +-2 s, then every 2 s, 1 s, 0.4 s; all 21
    from 40 % of the steps on (from 65 %, held-out Acc@1 was 0.34 instead of 0.42: model card)."""
    frac = step / max(1, steps)
    return np.array(next((p for edge, p in CURRICULUM if frac < edge), tuple(range(NUM_OFFSET_CLASSES))))


def stage1_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What stage 1 trains: the audio encoder and the visual spatial aggregation layer."""
    return (list(model.afeat_extractor.parameters())
            + list(model.vfeat_extractor.spatial_attn_agg.parameters()))


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What stages 2 and 3 train: projections and the GlobalTransformer (encoders frozen)."""
    return [p for n, p in model.named_parameters() if n.split(".")[0] in ("vproj", "aproj", "transformer")]


def freeze_encoders(model: nn.Module) -> nn.Module:
    for n, p in model.named_parameters():
        if n.split(".")[0] in ("vfeat_extractor", "afeat_extractor"):
            p.requires_grad_(False)
    return model
