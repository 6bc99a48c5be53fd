"""What a synthetic scene shows: shapes drawn with soft edges, backgrounds and the moving sources.

Pixel coordinates are full-frame (y, x) of an (H, W) frame whose shortest side is 256; a canvas is an
(h, w, 3) float32 view of it with its origin at `view` = (top, left), so the same source draws into
a whole frame or into its centre 224 x 224 crop. Time t is world time in seconds (frame k shows
t = k / 25). The sound-making sources (`Bouncer`, `Clapper`, `Flasher`) reach their visual moment
exactly at their event times; `Drifter` moves smoothly and makes no sound.
"""
from __future__ import annotations

import numpy as np

from sync_sdk.geometry import FPS

SHAPES = ("circle", "square", "diamond", "ring", "cross")


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
    """An RGB colour (3,) float32, each channel uniform in [lo, hi)."""
    return rng.uniform(lo, hi, 3).astype(np.float32)


def _contrasting(rng: np.random.Generator, bg: np.ndarray, min_dist: float = 110.0) -> np.ndarray:
    """A colour at least `min_dist` (mean abs over channels x3) from the mean background colour."""
    for _ in range(50):
        c = _color(rng)
        if np.abs(c - bg).sum() >= min_dist:
            return c
    return np.where(bg > 127, 20.0, 235.0).astype(np.float32)


# --- backgrounds -----------------------------------------------------------------------------
def _interp_matrix(n: int, m: int) -> np.ndarray:
    """(n, m) linear-interpolation weights stretching m knots over n pixels."""
    pos = np.linspace(0, m - 1, n)
    return np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(m)[None, :])).astype(np.float32)


def make_background(rng: np.random.Generator, h: int, w: int, test_pattern: bool) -> np.ndarray:
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


# --- visual sources ------------------------------------------------------------------------
class Drifter:
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


class Bouncer:
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


class Clapper:
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


class Flasher:
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
