"""A synthetic scene: a seeded world on a time axis in seconds, rendered as frames and samples.

Frame k (k >= 0) shows world time k / 25 s; world sample n is world time n / 16000 s. A scene holds a
background, its visual sources (`visuals`), the sounds of its events placed at their world times
(`sounds`), background audio over its whole span and per-frame noise and flicker. Every draw comes
from one generator seeded with the scene's seed, in a fixed order, so a scene is a function of
(seed, span, kind, size).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sync_sdk.geometry import FPS, SAMPLE_RATE
from sync_sdk.synthetic.sounds import Voice, background_audio
from sync_sdk.synthetic.visuals import Bouncer, Clapper, Drifter, Flasher, make_background

KINDS = ("mixed", "beep_flash")
TEST_PATTERN_RATE = 0.2  # share of beep/flash scenes when make_scene draws the kind
FRAME_SIZES = ((256, 256), (256, 320), (256, 340), (320, 256))  # (H, W), shortest side 256
_NOISE_BANK = 8  # frames of pixel noise, cycled by world frame index


@dataclass(frozen=True)
class Event:
    """A sound-making visual moment: world time (on the frame grid), source kind and index."""

    time_sec: float
    kind: str
    source: int


def event_times(rng: np.random.Generator, t0: float, t1: float, lo: float, hi: float,
                 p_pause: float) -> np.ndarray:
    """Irregular event times on the frame grid in [t0, t1]; gaps U(lo, hi), sometimes a silent
    stretch of 1.2-2.6 s; at least 5 frames apart."""
    times, t = [], t0 - rng.uniform(0, hi)
    while True:
        t += rng.uniform(1.2, 2.6) if rng.random() < p_pause else rng.uniform(lo, hi)
        if t > t1:
            break
        if t >= t0:
            k = int(round(t * FPS))
            if not times or k - times[-1] >= 5:
                times.append(k)
    return np.array(times, dtype=np.float64) / FPS


def _pad(times: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Virtual contacts outside [t0, t1] so arcs are defined everywhere and none is silent inside."""
    first = times[0] if len(times) else t1
    last = times[-1] if len(times) else t0
    return np.concatenate([[min(first, t0) - 0.7, min(first, t0) - 0.3], times,
                           [max(last, t1) + 0.3, max(last, t1) + 0.7]])


@dataclass
class Scene:
    """A synthetic world over [t_start, t_end] seconds; frame k shows time k/25 (k >= 0)."""

    seed: int
    kind: str
    height: int
    width: int
    t_start: float
    t_end: float
    background: np.ndarray
    sources: list
    events: list[Event]
    sounds: list[tuple[float, np.ndarray]]
    bg_audio: np.ndarray
    noise_sigma: float
    flicker: float
    _noise_bank: np.ndarray = field(repr=False, default=None)

    def frames(self, start_frame: int, n_frames: int, crop: int | None = None) -> np.ndarray:
        """(n_frames, H, W, 3) uint8 for world frames [start_frame, start_frame + n_frames).

        crop: render only the centre crop x crop (as inputs.cpu.video_input would cut it)."""
        h, w = self.height, self.width
        oy, ox = (round((h - crop) / 2), round((w - crop) / 2)) if crop else (0, 0)
        vh, vw = (crop, crop) if crop else (h, w)
        bg = self.background[oy:oy + vh, ox:ox + vw]
        noise = self._noise_bank[:, oy:oy + vh, ox:ox + vw] if self.noise_sigma > 0 else None
        out = np.empty((n_frames, vh, vw, 3), np.uint8)
        for i in range(n_frames):
            k = start_frame + i
            t = k / FPS
            canvas = bg.copy()
            for src in self.sources:
                src.draw(canvas, (oy, ox), t)
            # deterministic per world frame (independent of the window asked for)
            jitter = np.sin(k * 12.9898 + self.seed % 1000) * 43758.5453
            jitter = jitter - np.floor(jitter)
            canvas *= 1 + self.flicker * (2 * jitter - 1)
            if noise is not None:
                canvas += noise[k % _NOISE_BANK]
            np.clip(canvas, 0, 255, out=canvas)
            out[i] = (canvas + 0.5).astype(np.uint8)
        return out

    def audio(self, start_sample: int, n_samples: int) -> np.ndarray:
        """(n_samples,) float32 for world samples [start_sample, start_sample + n_samples)."""
        first = int(round(self.t_start * SAMPLE_RATE))
        lo = start_sample - first
        if lo < 0 or lo + n_samples > len(self.bg_audio):
            raise ValueError(f"audio window [{start_sample}, {start_sample + n_samples}) outside the "
                             f"scene span [{self.t_start}, {self.t_end}] s")
        out = self.bg_audio[lo:lo + n_samples].copy()
        for onset, wave in self.sounds:
            a = int(round(onset * SAMPLE_RATE)) - start_sample
            s0, s1 = max(a, 0), min(a + len(wave), n_samples)
            if s0 < s1:
                out[s0:s1] += wave[s0 - a:s1 - a]
        return np.clip(out, -1, 1)


def _draw_kind(rng: np.random.Generator) -> str:
    """A scene kind drawn from rng: 'beep_flash' with probability TEST_PATTERN_RATE, else 'mixed'."""
    return "beep_flash" if rng.random() < TEST_PATTERN_RATE else "mixed"


def scene_kind(seed: int) -> str:
    """The kind `make_scene(seed, ...)` draws when it is not given one (cheap: no rendering)."""
    return _draw_kind(np.random.default_rng(seed))


def make_scene(seed: int, t_start: float, t_end: float, kind: str | None = None,
               size: tuple[int, int] | None = None) -> Scene:
    """Draw a random scene (all of it a function of `seed`) spanning [t_start, t_end] seconds.

    kind: 'mixed' (bounces, hits, claps, flashes + distractors) or 'beep_flash' (test pattern);
    None draws one (20 % test patterns). size: (H, W) with shortest side 256; None draws one.
    """
    if t_start > 0 or t_end <= t_start:
        raise ValueError(f"scene span must contain time 0: got [{t_start}, {t_end}]")
    rng = np.random.default_rng(seed)
    if kind is None:
        kind = _draw_kind(rng)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    h, w = size if size is not None else FRAME_SIZES[rng.integers(len(FRAME_SIZES))]
    test = kind == "beep_flash"
    bg = make_background(rng, h, w, test)
    bg_mean = bg.reshape(-1, 3).mean(0)
    sources, events, sounds = [], [], []
    if test:
        times = event_times(rng, t_start, t_end, 0.4, 2.2, 0.0)
        durs = rng.integers(1, 9, len(times))
        sources.append(Flasher(rng, _pad(times, t_start, t_end), np.concatenate([[1, 1], durs, [1, 1]]),
                               bg, test_pattern=True))
        voice = Voice(rng, "beep")
        for t, d in zip(times, durs):
            events.append(Event(float(t), "beep_flash", 0))
            sounds.append((float(t), voice.sound(rng, d / FPS)))
    else:
        n_src = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
        src_kinds = list(rng.choice(["bounce", "hit", "clap", "flash"], n_src))
        times = event_times(rng, t_start, t_end, 0.2, 1.1, 0.12)
        owner = rng.integers(n_src, size=len(times))
        for j, sk in enumerate(src_kinds):
            mine = times[owner == j]
            padded = _pad(mine, t_start, t_end)
            if sk == "flash":
                durs = rng.integers(1, 5, len(mine))
                sources.append(Flasher(rng, padded, np.concatenate([[1, 1], durs, [1, 1]]),
                                       bg, test_pattern=False))
                voice = Voice(rng, "beep")
                snd = [voice.sound(rng, d / FPS) for d in durs]
            else:
                sources.append(Bouncer(rng, sk, padded, bg_mean, h, w) if sk != "clap"
                               else Clapper(rng, padded, bg_mean, h, w))
                voice = Voice(rng, sk)
                snd = [voice.sound(rng, 0.0) for _ in mine]
            events += [Event(float(t), sk, j) for t in mine]
            sounds += [(float(t), s) for t, s in zip(mine, snd)]
        events.sort(key=lambda e: e.time_sec)
        for _ in range(int(rng.integers(0, 4))):
            sources.insert(0, Drifter(rng, h, w))
        for t in rng.uniform(t_start, t_end, rng.poisson(0.2 * (t_end - t_start))):  # unsourced
            sounds.append((float(t), Voice(rng, str(rng.choice(["bounce", "hit", "clap", "beep"])))
                           .sound(rng, rng.uniform(0.04, 0.3))))
    n_audio = int(round((t_end - t_start) * SAMPLE_RATE)) + SAMPLE_RATE
    bg_audio = background_audio(rng, n_audio)
    noise_sigma = 0.0 if rng.random() < 0.2 else rng.uniform(0.5, 6.0)
    noise = (rng.standard_normal((_NOISE_BANK, h, w, 3), dtype=np.float32) * noise_sigma
             if noise_sigma > 0 else None)
    return Scene(seed=seed, kind=kind, height=h, width=w, t_start=t_start, t_end=t_end,
                 background=bg, sources=sources, events=events, sounds=sounds, bg_audio=bg_audio,
                 noise_sigma=noise_sigma, flicker=float(rng.uniform(0, 0.02)), _noise_bank=noise)
