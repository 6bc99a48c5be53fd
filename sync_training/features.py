"""Frozen-encoder features of every grid segment of many long clips, drawn as head-training windows.

After stage 1 the encoders are frozen, so each clip's visual grid segments (G, 8, Dv) and audio grid
segments (J, 6, Da) are encoded once (`grid_features`, `clip_features`). `GridFeatureSet` draws the
windows of stages 2 and 3 from them: S consecutive visual segments with the audio segments an
offset class (or another clip, for no-overlap windows) puts beside them, and the event targets and
lag maps of their tokens.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sync_sdk.geometry import NUM_OFFSET_CLASSES
from sync_training.data import lag_geometry, window_indices
from sync_training.stage1 import ClipBank, aggregate


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
        `clips` holds one (so that the kind of sound alone cannot tell a negative), else any other
        clip."""
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
