"""Fake backends (NumPy only) whose heads depend on known parts of the input, for testing the
arithmetic of DeSync, attribution and offset search without a trained model."""
from __future__ import annotations

import numpy as np

from sync_sdk.config import ModelConfig

TINY = ModelConfig.named("tiny")  # v_dim 64, a_dim 48, 14 segments, 21 classes
GRID = 7  # spatial cells per side (32 px on the 224 crop)
BANDS = 8  # mel bands of 16 bins
AUDIO_COLS = 65  # real log-mel columns (the 66th is padding)


class FakeBackend:
    """What every fake declares of the backend protocol (NumPy on the CPU, float32)."""

    config = TINY
    precision = "fp32"
    device = "cpu"
    device_arrays = False
    model_id = ""


def encoder(backend, max_batch: int = 14):
    """The segment-encoding seam the analysis functions receive, over a fake backend."""
    from sync_sdk.runtime.encoder import SegmentEncoder
    return SegmentEncoder(backend, max_batch=max_batch)


class RecordingBackend(FakeBackend):
    """Encoders return zeros and keep their inputs; the head returns queued logits (one row per window)."""

    name = "fake-recording"
    config = TINY

    def __init__(self, logits: np.ndarray | None = None) -> None:
        self.video_inputs: list[np.ndarray] = []
        self.audio_inputs: list[np.ndarray] = []
        self.queue = None if logits is None else list(np.asarray(logits, np.float32))
        self.head_calls = 0

    def encode_video(self, vid):
        self.video_inputs.append(np.array(vid))
        return np.zeros((len(vid), 8, TINY.v_dim), np.float32)

    def encode_audio(self, aud):
        self.audio_inputs.append(np.array(aud))
        return np.zeros((len(aud), 6, TINY.a_dim), np.float32)

    def head(self, vfeat, afeat):
        self.head_calls += 1
        b = len(vfeat)
        if self.queue is None:
            out = np.zeros((b, 21), np.float32)
            out[:, 10] = 1.0
            return out
        rows, self.queue = self.queue[:b], self.queue[b:]
        return np.stack(rows)


def _video_cells(vid: np.ndarray) -> np.ndarray:
    """(N, 16, 3, 224, 224) -> (N, 8, 49): per 2-frame token, the mean of each 32x32 cell."""
    n = len(vid)
    x = vid.reshape(n, 8, 2, 3, GRID, 32, GRID, 32).mean(axis=(2, 3, 5, 7))
    return x.reshape(n, 8, GRID * GRID)


def _audio_bands(aud: np.ndarray, reduce=np.mean) -> np.ndarray:
    """(N, 1, 128, 66) -> (N, 6, 8): per token (11 columns of the 65 real ones), each band's value."""
    bands = aud[:, 0, :, :AUDIO_COLS].reshape(len(aud), BANDS, 16, AUDIO_COLS).mean(axis=2)
    return np.stack([reduce(bands[:, :, 11 * t:11 * t + 11], axis=2) for t in range(6)], axis=1)


class CellsBackend(FakeBackend):
    """Head logit of class 15 = gain * sum over chosen cells of tanh(temporal std / tau); all other
    logits 0. Video cells: (segment, spatial cell 0..48); audio cells: (segment, band 0..7). A part
    flattened in time (its std -> 0) removes its share of the evidence; nothing else matters."""

    name = "fake-cells"
    config = TINY

    def __init__(self, video_cells, audio_cells, gain: float = 3.0, tau: float = 1e-3) -> None:
        self.video_cells, self.audio_cells, self.gain, self.tau = list(video_cells), list(audio_cells), gain, tau

    def encode_video(self, vid):
        out = np.zeros((len(vid), 8, TINY.v_dim), np.float32)
        out[:, :, :GRID * GRID] = _video_cells(np.asarray(vid, np.float32))
        return out

    def encode_audio(self, aud):
        out = np.zeros((len(aud), 6, TINY.a_dim), np.float32)
        out[:, :, :BANDS] = _audio_bands(np.asarray(aud, np.float32))
        return out

    def head(self, vfeat, afeat):
        v = np.asarray(vfeat).reshape(len(vfeat), 14, 8, -1)
        a = np.asarray(afeat).reshape(len(afeat), 14, 6, -1)
        s = np.zeros(len(v))
        for seg, cell in self.video_cells:
            s += np.tanh(v[:, seg, :, cell].std(axis=1) / self.tau)
        for seg, band in self.audio_cells:
            s += np.tanh(a[:, seg, :, band].std(axis=1) / self.tau)
        out = np.zeros((len(v), 21), np.float32)
        out[:, 15] = self.gain * s
        return out


class EventBackend(FakeBackend):
    """A "perfect" sync model for flash/click clips: visual tokens hold frame brightness, audio tokens
    the loudest column; the head scores each offset class r by how many (flash, click) pairs are r
    apart (visual time - audio time = r, Gaussian sigma 0.08 s). Out-of-range offsets only see
    chance pairs, as a real model would."""

    name = "fake-events"
    config = TINY

    def __init__(self, gain: float = 1.5, sigma: float = 0.08) -> None:
        self.gain, self.sigma = gain, sigma

    def encode_video(self, vid):
        out = np.zeros((len(vid), 8, TINY.v_dim), np.float32)
        out[:, :, 0] = np.asarray(vid, np.float32).reshape(len(vid), 8, -1).mean(axis=2)
        return out

    def encode_audio(self, aud):
        out = np.zeros((len(aud), 6, TINY.a_dim), np.float32)
        out[:, :, 0] = _audio_bands(np.asarray(aud, np.float64), reduce=np.max).mean(axis=2)
        return out

    def head(self, vfeat, afeat):
        v = np.asarray(vfeat).reshape(len(vfeat), 14, 8, -1)[..., 0]
        a = np.asarray(afeat).reshape(len(afeat), 14, 6, -1)[..., 0]
        seg = np.arange(14)[:, None]
        tv = (2 + 8 * seg + 2 * np.arange(8)[None, :] + 1) / 25  # token centres, crop-relative (s)
        ta = (1280 + 5120 * seg + 160 * (11 * np.arange(6)[None, :] + 5)) / 16000
        grid = np.linspace(-2, 2, 21)
        out = np.zeros((len(v), 21), np.float32)
        for b in range(len(v)):
            d = tv[v[b] > -0.5][:, None] - ta[a[b] > 0.0][None, :]
            if d.size:
                out[b] = self.gain * np.exp(-(d.reshape(-1, 1) - grid) ** 2 / (2 * self.sigma ** 2)).sum(axis=0)
        return out


def flash_click_clip(duration_sec: float, offset_sec: float, seed: int = 0, size: int = 256, times=None):
    """(frames, 25, audio, 16000, event_times): dark frames with one-frame full flashes at irregular
    times (0.45-1.3 s apart, or at `times` s), and a 20-ms noise click for each flash at video time t
    placed at audio time t - offset."""
    rng = np.random.default_rng(seed)
    if times is None:
        times, t = [], 0.3
        while t < duration_sec - 0.3:
            times.append(round(t * 25) / 25)
            t += rng.uniform(0.45, 1.3)
    n_frames = int(round(duration_sec * 25))
    frames = np.zeros((n_frames, size, size, 3), np.uint8)
    for t in times:
        frames[int(round(t * 25))] = 255
    audio = (rng.standard_normal(n_frames * 640) * 1e-4).astype(np.float32)
    for t in times:
        start = int(round((t - offset_sec) * 16000))
        if 0 <= start < len(audio) - 320:
            audio[start:start + 320] += (rng.standard_normal(320) * 0.5).astype(np.float32)
    return frames, 25, audio, 16000, np.array(times)


def tiny_checkpoint(path, seed: int = 0):
    """A seeded random tiny-config .safetensors checkpoint (config stored in it) for CLI runs."""
    from sync_sdk.weights.checkpoint import expected_shapes, save_checkpoint
    rng = np.random.default_rng(seed)
    sd = {k: rng.normal(0, 0.3, shape).astype(np.float32) for k, shape in expected_shapes(TINY).items()}
    return save_checkpoint(path, sd, TINY)
