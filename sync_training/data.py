"""Training inputs from the synthetic generator, computed by the runtime's own feature functions.

Clips are rendered in memory (no mp4 round trip) directly as their centre 224x224 crop, which is
what `features.video_input` would cut from the 256-px frames. Segments follow the official grid:
segment g of a clip = frames [2+8g, 18+8g), audio samples [1280+5120g+off, 11520+5120g+off).

Long clips for the frozen-encoder stages are encoded once on a grid: visual segment g as above;
audio segment j starts at world sample AUDIO_ORIGIN + 640 j. Window w (grid segments w..w+S-1)
with offset class c (offset -2 + 0.2 c s) then uses audio segments j = 8 (w + s) + 5 c, exactly the
audio the runtime would cut from a file whose audio leads its video by that offset.

Event targets (stage 1): per grid token, how close it is to one of the scene's sound-making visual
moments (a Gaussian of the distance, 1 for a token at an event): visual token t of segment g is
centred on frame FIRST_FRAME + 8 g + 2 t + 0.5 (its two frames), sigma 1 frame; audio token u of
audio segment j on world time (AUDIO_ORIGIN + 640 j + 1600 u + 1280) / 16000 s (its 16 spectrogram
frames at a 10-ms hop), sigma 0.06 s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sync_sdk import synthetic
from sync_sdk.geometry import (
    CROP_SIZE,
    FIRST_FRAME,
    FIRST_SAMPLE,
    FPS,
    NUM_OFFSET_CLASSES,
    OFFSET_GRID_SEC,
    OFFSET_STEP_SEC,
    SAMPLES_PER_FRAME,
    SEG_FRAMES,
    SEG_SAMPLES,
    STEP_FRAMES,
    STEP_SAMPLES,
    offset_samples,
)
from sync_sdk.inputs.cpu import log_mel, video_input

AUDIO_GRID = SAMPLES_PER_FRAME                    # 640: divides both the 5120 step and 3200 per 0.2 s
MIN_OFFSET_SAMPLES = offset_samples(float(OFFSET_GRID_SEC[0]))  # -32000
AUDIO_ORIGIN = FIRST_SAMPLE + MIN_OFFSET_SAMPLES  # world sample of cached audio segment 0
SEG_PER_STEP = STEP_SAMPLES // AUDIO_GRID         # 8 audio-grid steps per segment step
GRID_PER_CLASS = offset_samples(OFFSET_STEP_SEC) // AUDIO_GRID  # 5 audio-grid steps per offset class (0.2 s)
IN_SYNC_ROW = GRID_PER_CLASS * (NUM_OFFSET_CLASSES - 1) // 2  # audio row of visual segment 0 at offset 0
VISUAL_EVENT_SIGMA_SEC = 1.0 / FPS
AUDIO_EVENT_SIGMA_SEC = 0.06


def video_segments(frames: np.ndarray, first_frames) -> np.ndarray:
    """frames (T, H, W, 3) uint8 -> (n, 16, 3, 224, 224) float32 segments starting at first_frames."""
    x = video_input(frames)
    idx = np.asarray(first_frames)[:, None] + np.arange(SEG_FRAMES)
    return x[idx]


def audio_segments(audio: np.ndarray, first_samples) -> np.ndarray:
    """audio (N,) float32 -> (n, 1, 128, 66) log-mel segments of 10240 samples from first_samples."""
    idx = np.asarray(first_samples)[:, None] + np.arange(SEG_SAMPLES)
    return log_mel(np.ascontiguousarray(audio[idx], dtype=np.float32))


@dataclass
class LongClip:
    """A long synthetic clip for grid encoding.

    frames (F, 224, 224, 3) uint8 (world frames 0..F-1); audio float32 starting at world sample
    AUDIO_ORIGIN; n_video: visual grid segments; n_audio: audio grid segments; event_times: the
    scene's sound-making visual moments (world seconds).
    """

    frames: np.ndarray
    audio: np.ndarray
    n_video: int
    n_audio: int
    event_times: np.ndarray

    def video_firsts(self) -> np.ndarray:
        return FIRST_FRAME + STEP_FRAMES * np.arange(self.n_video)

    def audio_firsts(self) -> np.ndarray:
        return AUDIO_GRID * np.arange(self.n_audio)

    def log_mels(self, chunk: int = 256) -> np.ndarray:
        """(n_audio, 1, 128, 66) float32: log-mel of every audio grid segment."""
        firsts = self.audio_firsts()
        return np.concatenate([audio_segments(self.audio, firsts[i:i + chunk])
                               for i in range(0, len(firsts), chunk)])

    def visual_event_targets(self) -> np.ndarray:
        """(n_video, 8) float32 in [0, 1]: closeness of each visual grid token to an event."""
        centre = (FIRST_FRAME + STEP_FRAMES * np.arange(self.n_video)[:, None] + 2 * np.arange(8) + 0.5) / FPS
        return closeness(centre, self.event_times, VISUAL_EVENT_SIGMA_SEC)

    def audio_event_targets(self) -> np.ndarray:
        """(n_audio, 6) float32 in [0, 1]: closeness of each audio grid token to an event's sound."""
        centre = (AUDIO_ORIGIN + AUDIO_GRID * np.arange(self.n_audio)[:, None] + 1600 * np.arange(6) + 1280) / 16000
        return closeness(centre, self.event_times, AUDIO_EVENT_SIGMA_SEC)


def closeness(centre: np.ndarray, events: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian closeness (sigma s) of times `centre` (...) to the nearest of `events` (s); 0 without events."""
    if len(events) == 0:
        return np.zeros(centre.shape, np.float32)
    d = np.min(np.abs(centre[..., None] - np.asarray(events)), axis=-1)
    return np.exp(-0.5 * (d / sigma) ** 2).astype(np.float32)


def long_clip(seed: int, n_video: int) -> LongClip:
    """Render the clip holding `n_video` visual grid segments and every audio segment any window of
    them needs at any of the 21 offsets."""
    n_frames = FIRST_FRAME + STEP_FRAMES * (n_video - 1) + SEG_FRAMES
    n_audio = SEG_PER_STEP * (n_video - 1) + GRID_PER_CLASS * (NUM_OFFSET_CLASSES - 1) + 1
    n_samples = AUDIO_GRID * (n_audio - 1) + SEG_SAMPLES
    span_end = (AUDIO_ORIGIN + n_samples) / 16000 + 0.5
    scene = synthetic.make_scene(seed, AUDIO_ORIGIN / 16000 - 0.5, span_end)
    return LongClip(frames=scene.frames(0, n_frames, crop=CROP_SIZE),
                    audio=scene.audio(AUDIO_ORIGIN, n_samples), n_video=n_video, n_audio=n_audio,
                    event_times=np.array([e.time_sec for e in scene.events], dtype=np.float64))


def in_sync_rows(g: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Audio grid rows of visual grid segments g (...) at offset 0, displaced by `shifts` audio-grid
    steps (K,) -> (..., K)."""
    return SEG_PER_STEP * np.asarray(g)[..., None] + IN_SYNC_ROW + np.asarray(shifts)


def token_centres(n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (s, from the window's first frame) of a window's tokens, as the event targets place
    them: visual token t of segment s at (8 s + 2 t + 0.5) / 25 (S*8,), audio token u at
    (5120 s + 1600 u + 1280) / 16000 (S*6,). Audio at window time x holds world time x + offset."""
    seg = np.arange(n_segments)[:, None]
    return (((8 * seg + 2 * np.arange(8) + 0.5) / FPS).ravel(),
            ((5120 * seg + 1600 * np.arange(6) + 1280) / 16000).ravel())


def lag_geometry(n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Where, in a window's audio, each visual token's sound would be under each offset class:
    under class k the sound of visual token i sits at window time x = t_i - offset_k. Returns
    audio_token (S*8, 21): the audio token nearest x, and inside (S*8, 21) bool: whether one lies
    within 0.05 s of it (x inside the window's audio)."""
    tv, ta = token_centres(n_segments)
    x = tv[:, None] - OFFSET_GRID_SEC.astype(np.float64)[None, :]
    dist = np.abs(ta[None, None, :] - x[..., None])
    audio_token = dist.argmin(-1)
    return audio_token, np.take_along_axis(dist, audio_token[..., None], -1)[..., 0] <= 0.05


def window_indices(w: np.ndarray, c: np.ndarray, n_segments: int, u: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Grid rows of windows starting at visual grid segment w (B,) with offset classes c (B,):
    visual (B, S) = w + s, audio (B, S) = 8 (w + s) + 5 c + u; u (B,): audio rows (0.04 s each) off
    the class's grid offset (jitter; default 0)."""
    g = np.asarray(w)[:, None] + np.arange(n_segments)
    j = SEG_PER_STEP * g + GRID_PER_CLASS * np.asarray(c)[:, None]
    return g, j if u is None else j + np.asarray(u)[:, None]
