"""Seeded synthetic audio-visual clips whose synchronisation shows only at sparse moments.

A *scene* is a small world on a time axis in seconds: a background, silent distractors moving
smoothly, and sound sources whose visual moments are sparse and irregular (a ball bouncing on a
floor, an object hitting a bar, two shapes clapping together, a shape flashing) with a sound at each
such moment, plus sounds with no visual source, background noise/hum and silent stretches. The
`beep_flash` kind is the broadcast A/V-sync test pattern: a shape flashes while a tone sounds, at
irregular intervals, with varied shapes, sizes, positions, brightness, tones and durations.

A clip is two windows on that world: video frame k shows world time k/25 s; audio sample n carries
world time n/16000 + offset_sec. So with a positive offset (audio leads video) the sound of an event
seen at video time t sits at audio time t - offset_sec. Frames are uint8 RGB (T, H, W, 3) at 25 fps
with shortest side 256; audio is float32 mono at 16 kHz. Everything is a function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
KINDS = ("mixed", "beep_flash")
TEST_PATTERN_RATE = 0.2  # share of beep/flash scenes when make_scene draws the kind
FRAME_SIZES = ((256, 256), (256, 320), (256, 340), (320, 256))  # (H, W), shortest side 256
SHAPES = ("circle", "square", "diamond", "ring", "cross")
_NOISE_BANK = 8
_OTHER_SCENE = 0x5EED  # spawn key of the scene whose audio a no-overlap clip borrows


@dataclass(frozen=True)
class Event:
    """A sound-making visual moment: world time (on the frame grid), source kind and index."""

    time_sec: float
    kind: str
    source: int


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
        return not self.no_overlap

    @property
    def event_times_sec(self) -> np.ndarray:
        """Video times (s) of the sound-making visual moments."""
        return np.array([e.time_sec for e in self.events], dtype=np.float64)


# --- drawing ---------------------------------------------------------------------------------
def _shape_alpha(shape: str, dy: np.ndarray, dx: np.ndarray, ry: float, rx: float) -> np.ndarray:
    """Soft (1-px anti-aliased) coverage of a shape of half-sizes (ry, rx) at offsets (dy, dx)."""
    ny, nx = np.abs(dy) / ry, np.abs(dx) / rx
    scale = min(ry, rx)
    if shape == "circle":
        d = np.sqrt(ny * ny + nx * nx)
    elif shape == "square":
        d = np.maximum(ny, nx)
    elif shape == "diamond":
        d = ny + nx
    elif shape == "ring":
        d = np.sqrt(ny * ny + nx * nx)
        return np.clip((1 - d) * scale + 0.5, 0, 1) * np.clip((d - 0.55) * scale + 0.5, 0, 1)
    elif shape == "cross":
        d = np.minimum(np.maximum(ny, 3 * nx), np.maximum(3 * ny, nx))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip((1 - d) * scale + 0.5, 0, 1)


def _stamp(canvas: np.ndarray, view: tuple[int, int], shape: str, cy: float, cx: float,
           ry: float, rx: float, color: np.ndarray, opacity: float = 1.0) -> None:
    """Blend a shape (centre (cy, cx), full-frame pixels) into canvas, whose origin is `view`."""
    oy, ox = view
    h, w = canvas.shape[:2]
    y0, y1 = max(int(cy - ry) - 1 - oy, 0), min(int(cy + ry) + 2 - oy, h)
    x0, x1 = max(int(cx - rx) - 1 - ox, 0), min(int(cx + rx) + 2 - ox, w)
    if y0 >= y1 or x0 >= x1 or opacity <= 0:
        return
    yy = np.arange(y0 + oy, y1 + oy, dtype=np.float32)[:, None] - cy
    xx = np.arange(x0 + ox, x1 + ox, dtype=np.float32)[None, :] - cx
    alpha = _shape_alpha(shape, yy, xx, ry, rx) * opacity
    region = canvas[y0:y1, x0:x1]
    region += alpha[..., None] * (color - region)


def _color(rng: np.random.Generator, lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
    return rng.uniform(lo, hi, 3).astype(np.float32)


def _contrasting(rng: np.random.Generator, bg: np.ndarray, min_dist: float = 110.0) -> np.ndarray:
    """A colour at least `min_dist` (mean abs over channels x3) from the mean background colour."""
    for _ in range(50):
        c = _color(rng)
        if np.abs(c - bg).sum() >= min_dist:
            return c
    return np.where(bg > 127, 20.0, 235.0).astype(np.float32)


# --- sounds ----------------------------------------------------------------------------------
def _ramp(x: np.ndarray, n: int = 48) -> np.ndarray:
    n = min(n, len(x) // 2)
    if n > 0:
        r = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
        x[:n] *= r
        x[-n:] *= r[::-1]
    return x


def _tone(freq: float, dur: float, amp: float, harmonics: float = 0.0) -> np.ndarray:
    t = np.arange(max(int(dur * SAMPLE_RATE), 64)) / SAMPLE_RATE
    x = np.sin(2 * np.pi * freq * t) + harmonics * np.sin(2 * np.pi * 2 * freq * t)
    return _ramp(amp * x / (1 + harmonics))


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.abs(x).max() + 1e-9)


class _Voice:
    """The timbre of one sound source; `sound(rng, dur)` makes one event's waveform."""

    def __init__(self, rng: np.random.Generator, kind: str):
        self.kind = kind
        beep = rng.choice([440.0, 1000.0, rng.uniform(300, 3000)])
        self.f0 = {"bounce": rng.uniform(90, 420), "hit": rng.uniform(700, 3200),
                   "clap": rng.uniform(800, 2500), "beep": beep}[kind]
        self.decay = {"bounce": rng.uniform(0.03, 0.09), "hit": rng.uniform(0.05, 0.2),
                      "clap": rng.uniform(0.015, 0.05), "beep": 0.0}[kind]
        self.partials = rng.uniform(1.3, 3.1, 2)
        self.amp = rng.uniform(0.15, 0.6)
        self.harm = rng.uniform(0, 0.5)

    def sound(self, rng: np.random.Generator, dur: float) -> np.ndarray:
        amp = self.amp * rng.uniform(0.6, 1.0)
        if self.kind == "beep":
            return _tone(self.f0, dur, amp, self.harm).astype(np.float32)
        n = int(min(6 * self.decay, 0.45) * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        env = np.exp(-t / self.decay)
        if self.kind == "bounce":
            click = _band_noise(rng, n, 200, 4000) * np.exp(-t / 0.008)
            x = np.sin(2 * np.pi * self.f0 * t * (1 - 0.3 * t / t[-1])) + 0.4 * click
        elif self.kind == "hit":
            x = sum(np.sin(2 * np.pi * self.f0 * p * t) / (i + 2) for i, p in enumerate(self.partials))
            click = _band_noise(rng, n, 1000, 7000) * np.exp(-t / 0.005)
            x = x + np.sin(2 * np.pi * self.f0 * t) + 0.5 * click
        else:  # clap
            x = _band_noise(rng, n, self.f0 * 0.5, self.f0 * 2.5)
        x = env * x
        x[: min(16, n)] *= np.linspace(0, 1, min(16, n))
        return (amp * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def _background_audio(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise (white/pink/brown, maybe silent) plus an optional mains hum, n samples."""
    out = np.zeros(n, np.float32)
    level = 0.0 if rng.random() < 0.15 else 10 ** rng.uniform(-4, -1.6)
    if level > 0:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        power = rng.choice([0.0, 0.5, 1.0])  # white, pink, brown
        spec[1:] /= f[1:] ** power
        spec[0] = 0
        x = np.fft.irfft(spec, n)
        out += (level * x / (x.std() + 1e-12)).astype(np.float32)
    if rng.random() < 0.3:
        t = np.arange(n) / SAMPLE_RATE
        mains = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
        out += (10 ** rng.uniform(-3.3, -2) * hum).astype(np.float32)
    return out


# --- visual sources ------------------------------------------------------------------------
class _Drifter:
    """Silent distractor: a shape on a smooth Lissajous path with a slowly breathing size."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.shape = str(rng.choice(SHAPES))
        self.r = rng.uniform(6, 30)
        self.color = _color(rng)
        self.c = (rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w)
        self.a = (rng.uniform(5, 0.35 * h), rng.uniform(5, 0.35 * w))
        self.per = rng.uniform(2.5, 12, 3)
        self.ph = rng.uniform(0, 2 * np.pi, 3)

    def draw(self, canvas: np.ndarray, view: tuple[int, int], t: float) -> None:
        s = 2 * np.pi * t / self.per + self.ph
        r = self.r * (1 + 0.2 * np.sin(s[2]))
        _stamp(canvas, view, self.shape, self.c[0] + self.a[0] * np.sin(s[0]),
               self.c[1] + self.a[1] * np.sin(s[1]), r, r, self.color)


def _arc_param(times: np.ndarray, t: float) -> tuple[float, float, float]:
    """Position in the inter-event interval containing t: (u in [0, 1), interval length, distance
    to the nearest event in seconds). `times` are padded beyond the world span."""
    i = int(np.searchsorted(times, t, side="right")) - 1
    a, b = times[i], times[i + 1]
    return (t - a) / (b - a), b - a, min(t - a, b - t)


class _Bouncer:
    """A ball (bounce) or hammer (hit) that touches a bar exactly at its event times.

    Between consecutive contacts it flies a parabolic arc away from the bar; it squashes on contact.
    """

    def __init__(self, rng: np.random.Generator, kind: str, times: np.ndarray, bg: np.ndarray,
                 h: int, w: int):
        self.times = times
        self.shape = "circle" if kind == "bounce" else str(rng.choice(["square", "diamond", "cross"]))
        self.r = rng.uniform(12, 26)
        self.color = _contrasting(rng, bg)
        self.bar_color = _contrasting(rng, bg, 60)
        self.dir = int(rng.integers(4)) if kind == "hit" else 0  # 0: floor, 1: ceiling, 2/3: walls
        axis_len = h if self.dir < 2 else w
        cross_len = w if self.dir < 2 else h
        c0 = (axis_len - 224) / 2  # keep the action inside the centre 224 crop
        self.surface = c0 + rng.uniform(150, 215) if self.dir in (0, 2) else c0 + rng.uniform(9, 74)
        self.sign = -1.0 if self.dir in (0, 2) else 1.0  # direction away from the bar
        self.k = rng.uniform(150, 420)  # arc height = k * interval^2 (px)
        self.hmax = rng.uniform(60, 130)
        m = (cross_len - 224) / 2
        self.cross_c, self.cross_a = m + rng.uniform(70, 154), rng.uniform(0, 40)
        self.cross_per, self.cross_ph = rng.uniform(5, 14), rng.uniform(0, 2 * np.pi)

    def draw(self, canvas: np.ndarray, view: tuple[int, int], t: float) -> None:
        u, dt, near = _arc_param(self.times, t)
        height = min(max(self.k * dt * dt, 10.0), self.hmax) * 4 * u * (1 - u)
        squash = 0.72 if near < 0.5 / FPS else 1.0
        along = self.surface + self.sign * (self.r * squash + 2 + height)
        across = self.cross_c + self.cross_a * np.sin(2 * np.pi * t / self.cross_per + self.cross_ph)
        ra, rc = self.r * squash, self.r / squash
        bar = (self.surface + self.sign * 1.0, across, 2.5, 3.5 * self.r)
        if self.dir < 2:
            _stamp(canvas, view, "square", bar[0], bar[1], bar[2], bar[3], self.bar_color)
            _stamp(canvas, view, self.shape, along, across, ra, rc, self.color)
        else:
            _stamp(canvas, view, "square", bar[1], bar[0], bar[3], bar[2], self.bar_color)
            _stamp(canvas, view, self.shape, across, along, rc, ra, self.color)


class _Clapper:
    """Two shapes that meet (touch) exactly at the event times and swing apart in between."""

    def __init__(self, rng: np.random.Generator, times: np.ndarray, bg: np.ndarray, h: int, w: int):
        self.times = times
        self.shape = str(rng.choice(["square", "circle", "diamond"]))
        self.r = rng.uniform(12, 24)
        self.colors = (_contrasting(rng, bg), _contrasting(rng, bg))
        self.c = ((h - 224) / 2 + rng.uniform(60, 164), (w - 224) / 2 + rng.uniform(60, 164))
        ang = rng.uniform(0, np.pi)
        self.axis = (np.sin(ang), np.cos(ang))
        self.k = rng.uniform(80, 200)

    def draw(self, canvas: np.ndarray, view: tuple[int, int], t: float) -> None:
        u, dt, _ = _arc_param(self.times, t)
        sep = min(max(self.k * dt, 8.0), 70.0) * np.sin(np.pi * u)
        d = self.r + sep / 2
        for sgn, col in zip((-1, 1), self.colors):
            _stamp(canvas, view, self.shape, self.c[0] + sgn * d * self.axis[0],
                   self.c[1] + sgn * d * self.axis[1], self.r, self.r, col)


class _Flasher:
    """A shape lit for a few frames from each event time (dim or invisible otherwise).

    `size` <= 0 means a full-frame flash. Durations (frames) are per event. bg: (H, W, 3) image.
    """

    def __init__(self, rng: np.random.Generator, times: np.ndarray, durations: np.ndarray,
                 bg: np.ndarray, test_pattern: bool):
        self.times, self.durations = times, durations
        self.shape = str(rng.choice(SHAPES))
        full = test_pattern and rng.random() < 0.15
        self.size = 0.0 if full else (rng.uniform(16, 110) if test_pattern else rng.uniform(24, 64))
        self.aspect = rng.uniform(0.6, 1.6) if rng.random() < 0.4 else 1.0
        h, w = bg.shape[:2]
        m = self.size * 0.6
        self.c = ((h - 224) / 2 + rng.uniform(min(m, 100), max(224 - m, 124)),
                  (w - 224) / 2 + rng.uniform(min(m, 100), max(224 - m, 124)))
        r = self.size / 2 + 1
        y0, x0 = int(max(self.c[0] - r, 0)), int(max(self.c[1] - r, 0))
        local = bg[y0:int(self.c[0] + r) + 1, x0:int(self.c[1] + r) + 1] if self.size > 0 else bg
        self.color = _contrasting(rng, local.reshape(-1, 3).mean(0), rng.uniform(90, 500))
        self.idle = 0.0 if rng.random() < 0.6 else rng.uniform(0.05, 0.3)

    def lit(self, t: float) -> bool:
        k = int(round(t * FPS))
        i = int(np.searchsorted(self.times, t + 0.5 / FPS, side="right")) - 1
        return i >= 0 and 0 <= k - int(round(self.times[i] * FPS)) < self.durations[i]

    def draw(self, canvas: np.ndarray, view: tuple[int, int], t: float) -> None:
        opacity = 1.0 if self.lit(t) else self.idle
        if opacity <= 0:
            return
        if self.size <= 0:
            canvas += opacity * (self.color - canvas)
            return
        _stamp(canvas, view, self.shape, self.c[0], self.c[1], self.size / 2 * self.aspect,
               self.size / 2, self.color, opacity)


# --- scene -------------------------------------------------------------------------------------
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


def _interp_matrix(n: int, m: int) -> np.ndarray:
    """(n, m) linear-interpolation weights stretching m knots over n pixels."""
    pos = np.linspace(0, m - 1, n)
    return np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(m)[None, :])).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int, test_pattern: bool) -> np.ndarray:
    """(h, w, 3) float32: a two-colour gradient with low-frequency texture, or a test card."""
    if test_pattern:
        style = rng.integers(3)
        if style == 0:  # flat dark / grey
            return np.full((h, w, 3), rng.uniform(0, 110), np.float32)
        if style == 1:  # colour bars
            bars = np.array([[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0],
                             [192, 0, 192], [192, 0, 0], [0, 0, 192]], np.float32)
            bars *= rng.uniform(0.3, 1.0)
            return np.repeat(bars[np.minimum(np.arange(w) * 7 // w, 6)][None], h, axis=0)
    ca, cb = _color(rng), _color(rng)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = (np.sin(ang) * yy / h + np.cos(ang) * xx / w)
    g = (g - g.min()) / (g.max() - g.min() + 1e-6)
    img = ca + g[..., None] * (cb - ca)
    coarse = rng.standard_normal((6, 8, 3)).astype(np.float32) * rng.uniform(0, 25)
    wy, wx = _interp_matrix(h, 6), _interp_matrix(w, 8)
    tex = np.stack([wy @ coarse[:, :, c] @ wx.T for c in range(3)], -1)
    return (img + tex).astype(np.float32)


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

        crop: render only the centre crop x crop (as features.video_input would cut it)."""
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
    bg = _background(rng, h, w, test)
    bg_mean = bg.reshape(-1, 3).mean(0)
    sources, events, sounds = [], [], []
    if test:
        times = event_times(rng, t_start, t_end, 0.4, 2.2, 0.0)
        durs = rng.integers(1, 9, len(times))
        sources.append(_Flasher(rng, _pad(times, t_start, t_end), np.concatenate([[1, 1], durs, [1, 1]]),
                                bg, test_pattern=True))
        voice = _Voice(rng, "beep")
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
                sources.append(_Flasher(rng, padded, np.concatenate([[1, 1], durs, [1, 1]]),
                                        bg, test_pattern=False))
                voice = _Voice(rng, "beep")
                snd = [voice.sound(rng, d / FPS) for d in durs]
            else:
                sources.append(_Bouncer(rng, sk, padded, bg_mean, h, w) if sk != "clap"
                               else _Clapper(rng, padded, bg_mean, h, w))
                voice = _Voice(rng, sk)
                snd = [voice.sound(rng, 0.0) for _ in mine]
            events += [Event(float(t), sk, j) for t in mine]
            sounds += [(float(t), s) for t, s in zip(mine, snd)]
        events.sort(key=lambda e: e.time_sec)
        for _ in range(int(rng.integers(0, 4))):
            sources.insert(0, _Drifter(rng, h, w))
        for t in rng.uniform(t_start, t_end, rng.poisson(0.2 * (t_end - t_start))):  # unsourced
            sounds.append((float(t), _Voice(rng, str(rng.choice(["bounce", "hit", "clap", "beep"])))
                           .sound(rng, rng.uniform(0.04, 0.3))))
    n_audio = int(round((t_end - t_start) * SAMPLE_RATE)) + SAMPLE_RATE
    bg_audio = _background_audio(rng, n_audio)
    noise_sigma = 0.0 if rng.random() < 0.2 else rng.uniform(0.5, 6.0)
    noise = (rng.standard_normal((_NOISE_BANK, h, w, 3), dtype=np.float32) * noise_sigma
             if noise_sigma > 0 else None)
    return Scene(seed=seed, kind=kind, height=h, width=w, t_start=t_start, t_end=t_end,
                 background=bg, sources=sources, events=events, sounds=sounds, bg_audio=bg_audio,
                 noise_sigma=noise_sigma, flicker=float(rng.uniform(0, 0.02)), _noise_bank=noise)


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
    import av

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
