"""DeSync: the audio-visual misalignment score of generated audio, compatible with hkchengrex/av-benchmark.

Per clip (duration d seconds, given or the audio file's length):
- video: the first int(25 d) frames at 25 fps, layout "av-benchmark" (shortest side 224 bicubic,
  centre crop 224, mean/std 0.5; see inputs/layouts.py). A video with fewer frames is dropped, as
  av-benchmark drops it ("Sync video too short"): the clip is reported (`DesyncClip.dropped`) and left
  out of the set mean; `fill_frames` = k repeats the last frame instead when at most k are missing;
  visual segment i = frames [8i, 8i + 16), i < (T - 16) // 8 + 1;
- audio: mono, resampled to 16 kHz, the first int(16000 d) samples (shorter audio: dropped too);
  audio segment i = samples [5120i, 5120i + 10240), each its own log-mel (features.log_mel);
- the head runs on 14-segment windows; protocol "first_last" (av-benchmark): the first 14 and the
  last 14 segments of each stream; protocol "cover" (JavisBench-style): non-overlapping windows
  0, 14, 28, ... of the common segment range, the last one right-aligned to its end;
- DeSync of a clip = mean |predicted offset| (s) over its windows; of a set = mean over clips (equal to
  av-benchmark's mean over all windows for "first_last", where every clip has two). With refine, each
  window's offset is the continuous one of runtime/refine.py (the audio also scored shifted in 80-ms
  steps within the clip), so DeSync is the mean |refined offset|, not av-benchmark's grid value.

Only the segments some window uses are encoded; clips are batched through the encoders and the head.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import (
    FPS,
    N_SEGMENTS,
    OFFSET_GRID_SEC,
    SAMPLE_RATE,
    SEG_FRAMES,
    SEG_SAMPLES,
    STEP_FRAMES,
    STEP_SAMPLES,
    count_segments,
)
from sync_sdk.inputs.cpu import log_mel
from sync_sdk.inputs.layouts import Layout, get_layout
from sync_sdk.media import load_audio_16k, read_video_crops
from sync_sdk.media.source import is_path
from sync_sdk.results import softmax
from sync_sdk.runtime.arrays import array_module
from sync_sdk.runtime.encoder import SegmentEncoder
from sync_sdk.runtime.refine import pair_fits

PROTOCOLS = ("first_last", "cover")


def window_starts(n_video: int, n_audio: int, protocol: str = "first_last", window: int = N_SEGMENTS
                  ) -> list[tuple[int, int]]:
    """(first visual segment, first audio segment) of each `window`-segment window.

    first_last: [(0, 0), (n_video - window, n_audio - window)] (each stream's own last window, as
    av-benchmark slices [:, -14:] per stream); cover: non-overlapping windows over the common
    n = min(n_video, n_audio) segments, the last one right-aligned (start n - window)."""
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    n = min(n_video, n_audio)
    if n < window:
        need = ((window - 1) * STEP_FRAMES + SEG_FRAMES) / FPS
        raise ClipTooShortError(f"DeSync needs {window} segments ({need:.2f} s) of video and audio; "
                                f"got {n_video} visual and {n_audio} audio segments")
    if protocol == "first_last":
        return [(0, 0), (n_video - window, n_audio - window)]
    starts = list(range(0, n - window + 1, window))
    if starts[-1] != n - window:
        starts.append(n - window)
    return [(s, s) for s in starts]


def offsets_from_logits(logits: np.ndarray) -> np.ndarray:
    """(W, 21) offset logits -> (W,) predicted offsets in seconds (grid value of the argmax)."""
    return OFFSET_GRID_SEC[np.argmax(np.asarray(logits), axis=-1)].astype(np.float64)


def desync_score(logits: np.ndarray) -> float:
    """Mean |predicted offset| (s) over the windows' (W, 21) logits."""
    return float(np.mean(np.abs(offsets_from_logits(logits))))


@dataclass
class DesyncClip:
    """DeSync of one clip: `desync` (s) = mean |offsets|; offsets/confidences per window; windows =
    (first visual segment, first audio segment) pairs; segment counts of each stream; logits (W, 21).
    A clip not scored has desync NaN and either `dropped` (why av-benchmark's rules leave it out: fewer
    frames or samples than the duration asks) or `error` (it cannot be read)."""

    name: str
    desync: float
    offsets: list[float]
    confidences: list[float]
    windows: list[tuple[int, int]]
    n_video_segments: int
    n_audio_segments: int
    duration_sec: float
    protocol: str
    layout: str
    error: str | None = field(default=None)
    dropped: str | None = field(default=None)
    class_offsets: list[float] | None = field(default=None)  # refined: the grid offsets, offsets continuous
    intervals: list[tuple[float, float]] | None = field(default=None)  # refined: (low, high) s per window
    logits: np.ndarray | None = field(default=None, repr=False)  # (W, 21) per window; not in to_dict()

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("logits")
        if self.class_offsets is None:  # not refined: the dict as av-benchmark's fields
            del d["class_offsets"], d["intervals"]
        d["windows"] = [list(w) for w in self.windows]
        return d


@dataclass
class _Prepared:
    name: str
    crops: np.ndarray   # uint8 (T, 224, 224, 3)
    wave: np.ndarray    # float32 (N,) 16 kHz
    duration: float
    layout: Layout
    windows: list[tuple[int, int]]
    n_video: int
    n_audio: int


def load_pair(video, audio, duration_sec: float | None = None, layout: str | Layout = "av-benchmark",
              fill_frames: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(uint8 (int(25 d), 224, 224, 3) crops, float32 (int(16000 d),) audio, d) of a video/audio pair.

    video: path | uint8 frames (T, H, W, 3) at 25 fps; audio: path | (wave (N,) or (N, C), sample_rate).
    duration_sec: None = the audio track's length. fill_frames: how many missing frames may repeat the
    last one (0: none, as av-benchmark). Raises ClipTooShortError for a shorter video or audio."""
    check_fill_frames(fill_frames)
    wave, audio_sec = load_audio_16k(audio)
    d = float(audio_sec if duration_sec is None else duration_sec)
    if d <= 0:
        raise InputError(f"duration must be positive, got {d}")
    n_samples, n_frames = int(SAMPLE_RATE * d), int(FPS * d)
    if len(wave) < n_samples:
        raise ClipTooShortError(f"audio holds {len(wave) / SAMPLE_RATE:.3f} s at 16 kHz, {d:.3f} s asked "
                                f"(av-benchmark drops such a clip: 'Audio ... is too short')")
    p = get_layout(layout)
    if is_path(video):
        crops = read_video_crops(video, p, max_frames=n_frames)
    else:
        crops = p.crop_frames(np.asarray(video)[:n_frames])
    missing = n_frames - len(crops)
    if missing > 0:
        if missing > fill_frames or not len(crops):
            raise ClipTooShortError(
                f"video holds {len(crops)} frames at 25 fps, {n_frames} ({d:.3f} s) asked; av-benchmark drops "
                f"such a clip ('Sync video too short'); fill_frames >= {missing} repeats the last frame instead "
                f"(now {fill_frames})")
        crops = np.concatenate([crops, np.repeat(crops[-1:], missing, axis=0)])
    return crops, wave[:n_samples], d


def check_fill_frames(fill_frames) -> int:
    """fill_frames as given if it is a whole number >= 0; else InputError."""
    if isinstance(fill_frames, bool) or not isinstance(fill_frames, (int, np.integer)) or fill_frames < 0:
        raise InputError(f"fill_frames must be a whole number of frames >= 0 (0: drop short videos, as "
                         f"av-benchmark does), got {fill_frames!r}")
    return int(fill_frames)


def _prepare(name: str, video, audio, duration_sec, protocol: str, layout, fill_frames: int) -> _Prepared:
    p = get_layout(layout)
    crops, wave, d = load_pair(video, audio, duration_sec, p, fill_frames)
    nv = count_segments(len(crops), SEG_FRAMES, STEP_FRAMES)
    na = count_segments(len(wave), SEG_SAMPLES, STEP_SAMPLES)
    return _Prepared(name, crops, wave, d, p, window_starts(nv, na, protocol), nv, na)


def _logits(encoder: SegmentEncoder, clips: list[_Prepared], head_batch: int = 16, refine: bool = False
            ) -> list[tuple[np.ndarray, list | None]]:
    """Offset logits (W_i, 21) per prepared clip, and with refine its windows' fits (`pair_fits`, the
    audio shifted against the same video features); only the segments the windows use are encoded.
    The inputs are made on the CPU: the video with the clip's layout, the audio with NumPy's log-mel."""
    vsegs = sorted({(c, v + s) for c, p in enumerate(clips) for v, _ in p.windows for s in range(N_SEGMENTS)})
    asegs = sorted({(c, a + s) for c, p in enumerate(clips) for _, a in p.windows for s in range(N_SEGMENTS)})

    def video(ids):
        return np.stack([clips[c].layout.normalise(clips[c].crops[STEP_FRAMES * g:STEP_FRAMES * g + SEG_FRAMES])
                         for c, g in (vsegs[i] for i in ids)])

    def audio(ids):
        return log_mel(np.stack([clips[c].wave[STEP_SAMPLES * g:STEP_SAMPLES * g + SEG_SAMPLES]
                                 for c, g in (asegs[i] for i in ids)]))

    vfeat = encoder.encode("video", len(vsegs), video)
    afeat = encoder.encode("audio", len(asegs), audio)
    vrow = {k: i for i, k in enumerate(vsegs)}
    arow = {k: i for i, k in enumerate(asegs)}
    wins = [(c, v, a) for c, p in enumerate(clips) for v, a in p.windows]
    xp = array_module(vfeat)
    vtake = xp.asarray([vrow[(c, v + s)] for c, v, _ in wins for s in range(N_SEGMENTS)])
    atake = xp.asarray([arow[(c, a + s)] for c, _, a in wins for s in range(N_SEGMENTS)])
    vwin = vfeat[vtake].reshape(len(wins), N_SEGMENTS, *vfeat.shape[1:])
    logits = encoder.head(vwin, afeat[atake].reshape(len(wins), N_SEGMENTS, *afeat.shape[1:]), batch=head_batch)
    bounds = np.cumsum([0] + [len(p.windows) for p in clips])
    return [(logits[a:b], pair_fits(encoder, vwin[a:b], p.wave, [STEP_SAMPLES * w for _, w in p.windows],
                                     offsets_from_logits(logits[a:b]), head_batch) if refine else None)
            for p, a, b in zip(clips, bounds[:-1], bounds[1:])]


def _result(p: _Prepared, logits: np.ndarray, protocol: str, fits: list | None = None) -> DesyncClip:
    probs = softmax(logits)
    k = np.argmax(logits, axis=-1)
    grid = [float(o) for o in offsets_from_logits(logits)]
    offsets = grid if fits is None else [f[0] for f in fits]
    return DesyncClip(name=p.name, desync=float(np.mean(np.abs(offsets))), offsets=offsets,
                      confidences=[float(probs[i, j]) for i, j in enumerate(k)], windows=list(p.windows),
                      n_video_segments=p.n_video, n_audio_segments=p.n_audio, duration_sec=p.duration,
                      protocol=protocol, layout=p.layout.name, logits=logits,
                      class_offsets=None if fits is None else grid,
                      intervals=None if fits is None else [(f[1], f[2]) for f in fits])


def desync(encoder: SegmentEncoder, video, audio, duration_sec: float | None = None, protocol: str = "first_last",
           layout: str = "av-benchmark", name: str | None = None, fill_frames: int = 0,
           refine: bool = False) -> DesyncClip:
    """DeSync of one video (path | uint8 (T,H,W,3) frames at 25 fps) and its generated audio
    (path | (wave, sample_rate)); duration_sec None = the audio's length; fill_frames: see load_pair;
    refine: continuous offsets (module docstring). Raises on bad input, ClipTooShortError for a clip
    av-benchmark would drop."""
    encoder.require("sync", "DeSync", N_SEGMENTS)
    name = name or (Path(video).stem if is_path(video) else "clip")
    p = _prepare(name, video, audio, duration_sec, protocol, layout, fill_frames)
    logits, fits = _logits(encoder, [p], refine=refine)[0]
    return _result(p, logits, protocol, fits)


def desync_batch(encoder: SegmentEncoder, items: Iterable[tuple], duration_sec: float | None = None, protocol: str = "first_last",
                 layout: str = "av-benchmark", batch_clips: int = 8, fill_frames: int = 0, refine: bool = False):
    """Yield a DesyncClip per (name, video, audio) item, `batch_clips` clips per encoder/head pass.

    A clip too short for the duration yields a DesyncClip with `dropped` set, one that cannot be read one
    with `error` set, both with desync NaN (the others go on). fill_frames: see load_pair; refine: as desync."""
    encoder.require("sync", "DeSync", N_SEGMENTS)
    check_fill_frames(fill_frames)
    pending: list[_Prepared] = []

    def run():
        for p, (lg, fits) in zip(pending, _logits(encoder, pending, refine=refine)):
            yield _result(p, lg, protocol, fits)
        pending.clear()

    for name, video, audio in items:
        try:
            pending.append(_prepare(name, video, audio, duration_sec, protocol, layout, fill_frames))
        except InputError as e:
            yield _failed(name, protocol, layout, e)
        if len(pending) >= batch_clips:
            yield from run()
    if pending:
        yield from run()


def _failed(name: str, protocol: str, layout, err: Exception) -> DesyncClip:
    """The DesyncClip of a clip not scored: `dropped` for a clip too short (ClipTooShortError), else `error`."""
    reason = f"{type(err).__name__}: {err}"
    short = isinstance(err, ClipTooShortError)
    return DesyncClip(name=name, desync=float("nan"), offsets=[], confidences=[], windows=[], n_video_segments=0,
                      n_audio_segments=0, duration_sec=0.0, protocol=protocol, layout=get_layout(layout).name,
                      error=None if short else reason, dropped=reason if short else None)
