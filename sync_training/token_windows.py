"""Stage-2 windows assembled from real grid tokens along freshly drawn event trains.

The bank's own windows are few enough for the head to memorise them; here every window is new:
event times are drawn as the generator draws a scene's (`synthetic.event_times`, at densities from
a few events a minute up to the mixed scenes' rate), each token position's closeness to an event is
computed as the event targets are, and the position gets a random training-clip token whose own
target falls in the same closeness bin. The windows keep the real features' statistics (detector
misses and false alarms included) while their timing is unlimited, and their lag maps follow from
the drawn events. The windows of one batch share one event density.

Drawn token by token, those windows lose what neighbouring tokens say together (a flash seen as
"dark, then lit"; motion that reverses at a bar). `sample_real_video` keeps that context: the
clips' own visual windows, with fresh audio tokens drawn along the real audio event targets, so
the audio cannot be memorised.
"""
from __future__ import annotations

import numpy as np
import torch

from sync_sdk.geometry import OFFSET_GRID_SEC
from sync_sdk.synthetic import event_times
from sync_training.data import AUDIO_EVENT_SIGMA_SEC, VISUAL_EVENT_SIGMA_SEC, closeness, lag_geometry, token_centres
from sync_training.features import lag_maps

BIN_EDGES = np.array([0.05, 0.3, 0.7])  # closeness bins: away, near, close, at an event
SPAN_SEC = (-3.0, 9.0)                  # window-relative span of the drawn events


def _pools(feats: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
    """Tokens (M, T, k, D) with targets (M, T, k) -> one pool (n, D) per closeness bin; an empty bin
    borrows its nearest non-empty neighbour's pool."""
    flat, t = feats.reshape(-1, feats.shape[-1]), targets.reshape(-1).numpy()
    bins = np.digitize(t, BIN_EDGES)
    pools = [flat[torch.from_numpy(np.flatnonzero(bins == k))] for k in range(len(BIN_EDGES) + 1)]
    full = [k for k, p in enumerate(pools) if len(p)]
    if not full:
        raise ValueError("no tokens to draw windows from")
    return [p if len(p) else pools[min(full, key=lambda j: (abs(j - k), -j))] for k, p in enumerate(pools)]


class TokenWindows:
    """Windows of `n_segments` segments from the tokens of `clips` of a GridFeatureSet (with targets);
    `sample_real_video` takes its visual windows from `video_clips` (default: `clips`)."""

    def __init__(self, feats, clips: np.ndarray, n_segments: int, density: tuple[float, float] = (0.4, 1.0),
                 video_clips: np.ndarray | None = None):
        if feats.vtargets is None or feats.atargets is None:
            raise ValueError("token windows need the event targets (GridFeatureSet(..., vtargets, atargets))")
        self.feats, self.clips, self.n_segments = feats, clips, n_segments
        self.video_clips = clips if video_clips is None else video_clips
        self.vpools = _pools(feats.vfeat[clips], feats.vtargets[clips])
        self.apools = _pools(feats.afeat[clips], feats.atargets[clips])
        self.tv, self.ta = token_centres(n_segments)
        _, inside = lag_geometry(n_segments)
        self.lag_times = self.tv[:, None] - OFFSET_GRID_SEC.astype(np.float64)  # (S*8, 21) window time
        self.inside = inside.astype(np.float32)
        self.density = density

    @staticmethod
    def _events(rng: np.random.Generator, d: float) -> np.ndarray:
        """Event times (s, window-relative) at density d in [0, 1]: gaps U(3.5-3.3d, 6.0-4.9d) s, so
        d = 1 is the mixed scenes' U(0.2, 1.1)."""
        return event_times(rng, *SPAN_SEC, 3.5 - 3.3 * d, 6.0 - 4.9 * d, 0.12)

    @staticmethod
    def _fill(pools: list[torch.Tensor], close: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        bins = np.digitize(close, BIN_EDGES)
        out = torch.empty(*close.shape, pools[0].shape[-1])
        for k, pool in enumerate(pools):
            where = np.nonzero(bins == k)
            if len(where[0]):
                out[where] = pool[torch.from_numpy(rng.integers(0, len(pool), len(where[0])))]
        return out

    def sample(self, rng: np.random.Generator, batch: int, classes: np.ndarray, jitter_sec: float = 0.0):
        """-> vfeat (B, S*8, Dv), afeat (B, S*6, Da), target class (B,), vweight (B, S*8) and lag
        maps (B, S*8, 21), as `GridFeatureSet.sample_offsets_with_lags` returns them. All windows
        of a batch share one event density, drawn from `density`. jitter_sec: each window's audio
        is offset by its class's offset plus U(-jitter_sec, jitter_sec) s (0.1: anywhere in the
        class's 0.2-s bin), so that every class is seen at every phase of the 0.32-s segment step."""
        c = rng.choice(np.asarray(classes), batch)
        d = rng.uniform(*self.density)  # one per batch (see the module docstring)
        events = [self._events(rng, d) for _ in range(batch)]
        off = OFFSET_GRID_SEC.astype(np.float64)[c]
        if jitter_sec:
            off = off + rng.uniform(-jitter_sec, jitter_sec, batch)
        vclose = np.stack([closeness(self.tv, e, VISUAL_EVENT_SIGMA_SEC) for e in events])
        aclose = np.stack([closeness(self.ta + o, e, AUDIO_EVENT_SIGMA_SEC) for e, o in zip(events, off)])
        lag = np.stack([closeness(self.lag_times + o, e, AUDIO_EVENT_SIGMA_SEC) for e, o in zip(events, off)])
        return (self._fill(self.vpools, vclose, rng), self._fill(self.apools, aclose, rng), torch.from_numpy(c),
                torch.from_numpy(vclose).float(), torch.from_numpy(lag * self.inside).float())

    def sample_real_video(self, rng: np.random.Generator, batch: int, classes: np.ndarray, jitter_rows: int = 0):
        """Like `sample`, but the visual tokens, vweight and lag maps are those of a real window of
        `video_clips` (`GridFeatureSet.sample_offsets_with_targets`, its audio moved by up to
        jitter_rows audio-grid rows) and each audio token is drawn from the pool of its real target's
        closeness bin."""
        v, _, c, vweight, atarget = self.feats.sample_offsets_with_targets(rng, batch, self.n_segments,
                                                                           self.video_clips, classes, jitter_rows)
        return v, self._fill(self.apools, atarget.numpy(), rng), c, vweight, lag_maps(atarget, self.n_segments)
