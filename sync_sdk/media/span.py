"""MediaSpan: a decoded stretch of media, the one type the pipeline reads decoded media from.

A span holds frames (T, H, W, 3) uint8 of the 25-fps slots first_frame.. and audio (N,) float32 of the
16-kHz samples first_sample.. of one media (frame t and sample 640 t are simultaneous). It is what the
window crops, the scan and the stream read from: a scan extends it chunk by chunk and drops what later
windows no longer need, a stream extends it push by push, so both keep one rolling buffer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sync_sdk.geometry import FPS, SAMPLES_PER_FRAME


@dataclass(eq=False)
class MediaSpan:
    """frames (T, H, W, 3) uint8 of slots first_frame..; audio (N,) float32 of samples first_sample..;
    name: the file's path (None for arrays); duration_sec: the whole media's length when known."""

    frames: np.ndarray
    first_frame: int
    audio: np.ndarray
    first_sample: int
    name: str | None = None
    duration_sec: float | None = None

    @property
    def end_frame(self) -> int:
        """Slot after the last frame held."""
        return self.first_frame + len(self.frames)

    @property
    def end_sample(self) -> int:
        """Sample after the last sample held."""
        return self.first_sample + len(self.audio)

    def extend(self, frames: np.ndarray | None = None, audio: np.ndarray | None = None) -> None:
        """Append frames (n, H, W, 3) and / or samples (n,) at the ends of the span."""
        if frames is not None and len(frames):
            self.frames = frames if not len(self.frames) else np.concatenate([self.frames, frames])
        if audio is not None and len(audio):
            self.audio = audio if not len(self.audio) else np.concatenate([self.audio, audio])

    def drop_before(self, frame: int, sample: int) -> None:
        """Forget the frames before slot `frame` and the samples before `sample` (media indices)."""
        cut = min(max(0, frame - self.first_frame), len(self.frames))
        self.frames, self.first_frame = self.frames[cut:], self.first_frame + cut
        cut = min(max(0, sample - self.first_sample), len(self.audio))
        self.audio, self.first_sample = self.audio[cut:], self.first_sample + cut

    @classmethod
    def empty(cls, name: str | None = None) -> "MediaSpan":
        """A span holding nothing yet, from slot 0 and sample 0 (`extend` sets the frame size)."""
        return cls(np.zeros((0, 0, 0, 3), np.uint8), 0, np.zeros(0, np.float32), 0, name)

    @classmethod
    def from_clip(cls, clip, name: str | None = None) -> "MediaSpan":
        """The span of an AVClip: its first frame is slot round(start_sec * 25), its audio starts with it."""
        first = int(round(clip.start_sec * FPS))
        return cls(clip.frames, first, clip.audio, first * SAMPLES_PER_FRAME, name,
                   clip.start_sec + clip.duration_sec)

