"""Synthetic clips: a 25-fps video window and a 16-kHz audio window on one scene, the audio offset.

Video frame k of a clip shows world time k / 25 s; audio sample n carries world time
n / 16000 + offset_sec. So with a positive offset (audio leads video) the sound of an event seen at
video time t sits at audio time t - offset_sec. `write_clip` stores a clip as an mp4.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sync_sdk.geometry import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from sync_sdk.synthetic.scene import Event, make_scene

_OTHER_SCENE = 0x5EED  # spawn key of the scene whose audio a no-overlap clip borrows


@dataclass
class SyntheticClip:
    """A rendered clip. frames (T, H, W, 3) uint8 at 25 fps; audio (N,) float32 at 16 kHz.

    `events`: the sound-making visual moments, in video time (seconds). With `no_overlap` the audio
    comes from another scene and `offset_sec` is meaningless (0.0), `synchronizable` is False.
    """

    frames: np.ndarray
    audio: np.ndarray
    offset_sec: float
    events: list[Event]
    kind: str
    seed: int
    no_overlap: bool = False
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def synchronizable(self) -> bool:
        """True when the audio comes from the clip's own scene (some content overlap)."""
        return not self.no_overlap

    @property
    def event_times_sec(self) -> np.ndarray:
        """Video times (s) of the sound-making visual moments."""
        return np.array([e.time_sec for e in self.events], dtype=np.float64)


def other_seed(seed: int) -> int:
    """Seed of the scene whose audio a no-overlap clip of `seed` uses (never equal to seed)."""
    s = int(np.random.SeedSequence([seed, _OTHER_SCENE]).generate_state(1, np.uint64)[0] >> 1)
    return s if s != seed else s + 1


def generate_clip(seed: int, offset_sec: float = 0.0, duration_sec: float = 5.2,
                  kind: str | None = None, no_overlap: bool = False,
                  size: tuple[int, int] | None = None, crop: int | None = None) -> SyntheticClip:
    """Render a clip of `duration_sec` with `offset_sec` applied (positive: audio leads video).

    no_overlap: the audio comes from another scene (`other_seed(seed)`), sharing no content.
    crop: render only the centre crop x crop of each frame (a training shortcut).
    """
    n_frames = int(round(duration_sec * FPS))
    n_samples = n_frames * SAMPLES_PER_FRAME
    off = 0.0 if no_overlap else float(offset_sec)
    pad = max(2.5, abs(off) + 0.5)  # the same world for every offset on the +-2 s grid
    lo, hi = -pad, duration_sec + pad
    scene = make_scene(seed, lo, hi, kind, size)
    frames = scene.frames(0, n_frames, crop)
    if no_overlap:
        other = make_scene(other_seed(seed), lo, hi, scene.kind, (scene.height, scene.width))
        audio = other.audio(0, n_samples)
    else:
        audio = scene.audio(int(round(off * SAMPLE_RATE)), n_samples)
    events = [e for e in scene.events if 0 <= e.time_sec < n_frames / FPS]
    return SyntheticClip(frames=frames, audio=audio, offset_sec=off, events=events, kind=scene.kind,
                         seed=seed, no_overlap=no_overlap)


def write_clip(clip: SyntheticClip, path: str | Path, crf: int = 18) -> Path:
    """Write clip as an mp4 (H.264 yuv420p at 25 fps + AAC mono 16 kHz) through PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = clip.frames.shape
    with av.open(str(path), "w") as box:
        vs = box.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "ultrafast"}
        aus = box.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        aus.bit_rate = 96000
        for k in range(t):
            frame = av.VideoFrame.from_ndarray(clip.frames[k], format="rgb24")
            frame.pts = k
            box.mux(vs.encode(frame))
        for s in range(0, len(clip.audio), 1024):
            chunk = np.ascontiguousarray(clip.audio[None, s:s + 1024], dtype=np.float32)
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate, af.pts = SAMPLE_RATE, s
            box.mux(aus.encode(af))
        box.mux(vs.encode(None))
        box.mux(aus.encode(None))
    return path
