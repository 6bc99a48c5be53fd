"""Files and arrays in, AVClip out: RGB frames at 25 fps (shortest side 256) and mono float32 audio at 16 kHz.

Files are decoded with PyAV (any container and codec its FFmpeg opens) by video.py ("short256" frames on
25-fps slots) and audio.py (16 kHz on media time); arrays are resampled by the same rules. A clip's frame
t and sample 640 t are simultaneous.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from sync_sdk.errors import InvalidArrayError, WindowOutOfRangeError
from sync_sdk.geometry import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from sync_sdk.media.audio import AudioDecoder, Samples, mono, read_audio_samples
from sync_sdk.media.container import MediaInfo, require_streams, round_half_away
from sync_sdk.media.video import VideoDecoder, read_video_slots, stack_frames, target_size


@dataclass(eq=False)
class AVClip:
    """Decoded media on the model's time base.

    frames: (T, H, W, 3) uint8 RGB at 25 fps, shortest side 256 (even sizes) when decoded by this module;
    audio: (N,) float32 mono at 16 kHz; start_sec: media time of frames[0] and of audio[0] (a multiple of
    0.04 s for clips read from files). Frame t and sample 640 t are simultaneous.
    """
    frames: np.ndarray
    audio: np.ndarray
    start_sec: float = 0.0
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.fps != FPS or self.sample_rate != SAMPLE_RATE:
            raise InvalidArrayError(f"AVClip holds {FPS} fps / {SAMPLE_RATE} Hz data, got {self.fps} fps / "
                                    f"{self.sample_rate} Hz; use clip_from_arrays() to resample")
        f, a = self.frames, self.audio
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 4 and f.shape[-1] == 3):
            raise InvalidArrayError(f"AVClip.frames must be uint8 (T, H, W, 3), got {_describe(f)}")
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 1):
            raise InvalidArrayError(f"AVClip.audio must be float32 (N,), got {_describe(a)}")

    @property
    def duration_sec(self) -> float:
        """Length covered by both streams, in seconds."""
        return min(len(self.frames) / FPS, len(self.audio) / SAMPLE_RATE)


def read_clip(path: str | os.PathLike, start_sec: float = 0.0, duration_sec: float | None = None) -> AVClip:
    """Decode [start_sec, start_sec + duration_sec) of a file (to the end when duration_sec is None).

    start_sec is rounded to the nearest frame (clip.start_sec = that frame's time); the clip holds
    round(duration_sec * 25) frames and 640 samples per frame, fewer where a stream ends earlier.
    Memory and time scale with the duration asked, not with the file.
    Raises MediaNotFoundError, MediaDecodeError, NoVideoStreamError, NoAudioStreamError,
    WindowOutOfRangeError (start before 0 or after the end); warns CorruptMediaWarning.
    """
    first, stop = _slot_range(start_sec, duration_sec)
    info = require_streams(path)
    frames = read_video_slots(path, first, stop, info)
    audio = read_audio_samples(path, first * SAMPLES_PER_FRAME, None if stop is None else stop * SAMPLES_PER_FRAME)
    if len(frames) == 0 and len(audio) == 0:
        raise WindowOutOfRangeError(f"start_sec={start_sec} is at or after the end of {path} "
                                    f"(duration {info.duration_sec} s)")
    return AVClip(frames, audio, start_sec=first / FPS)


def iter_clips(path: str | os.PathLike, chunk_sec: float, start_sec: float = 0.0,
               end_sec: float | None = None, prefetch: int = 1) -> Iterator[AVClip]:
    """Consecutive AVClips of round(chunk_sec * 25) frames from start_sec to end_sec (or the end).

    Both ends are rounded to the nearest frame. One decoder per stream runs through the file once, so
    memory stays at 1 + prefetch chunks whatever the file length; `prefetch` chunks are decoded ahead in
    a background thread while the caller works on the current one (0: decode on demand). The last clip
    may be shorter; a clip's frames and audio can differ in length at the end of the file.
    """
    first, _ = _slot_range(start_sec, None)
    stop = None if end_sec is None else int(round(end_sec * FPS))
    step = int(round(chunk_sec * FPS))
    if step < 1:
        raise WindowOutOfRangeError(f"chunk_sec must be >= {1 / FPS} s, got {chunk_sec}")
    info = require_streams(path)
    clips = _clips(path, info, first, stop, step)
    return _prefetched(clips, prefetch) if prefetch > 0 else clips


def _clips(path, info: MediaInfo, first: int, stop: int | None, step: int) -> Iterator[AVClip]:
    with VideoDecoder(path, info) as vdec, AudioDecoder(path) as adec:
        video = vdec.frames(first, stop)
        audio = Samples(adec.samples(first * SAMPLES_PER_FRAME,
                                     None if stop is None else stop * SAMPLES_PER_FRAME))
        slot = first
        while stop is None or slot < stop:
            n = step if stop is None else min(step, stop - slot)
            frames = list(islice(video, n))
            pcm = audio.take(n * SAMPLES_PER_FRAME)
            if not frames and not len(pcm):
                break
            yield AVClip(stack_frames(frames, vdec.shape), pcm, start_sec=slot / FPS)
            slot += n


def _prefetched(items: Iterator, depth: int) -> Iterator:
    """The items of a generator, produced by a background thread up to `depth` ahead of the consumer.
    Its exceptions re-raise in the consumer; stopping early stops and closes the producer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    quit_ = threading.Event()
    done = object()

    def put(item) -> bool:
        while not quit_.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)
        finally:
            items.close()

    worker = threading.Thread(target=produce, name="sync_sdk-decode", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        quit_.set()
        worker.join()


def iter_chunks(path: str | os.PathLike, chunk_sec: float, start_sec: float = 0.0,
                end_sec: float | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frames, audio) of each clip of iter_clips (frames (T,H,W,3) uint8, audio (N,) float32)."""
    for clip in iter_clips(path, chunk_sec, start_sec, end_sec):
        yield clip.frames, clip.audio


def clip_from_arrays(frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int) -> AVClip:
    """AVClip from arrays: frames (T, H, W, 3) uint8 RGB at `fps`, audio (N,), (C, N) or (N, C) at
    `sample_rate` (float in [-1, 1], or int16/int32 PCM; a 2-D array's shorter axis is channels).

    Same rules as files: frames picked by timestamp (frame i at i / fps) for 25 fps, resized to
    shortest side 256 with even sizes (bicubic, in RGB), audio averaged over channels and resampled
    to 16 kHz with libswresample (averaging first is equivalent: resampling is linear).
    Raises InvalidArrayError for empty, zero-size or badly shaped arrays and non-positive rates.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidArrayError(f"frames must be uint8 RGB (T, H, W, 3), got {_describe(frames)}")
    if min(frames.shape) == 0:
        raise InvalidArrayError(f"frames must be non-empty with H, W >= 1, got shape {frames.shape}")
    if not (np.isfinite(fps) and fps > 0):
        raise InvalidArrayError(f"fps must be a positive number, got {fps}")
    slots = pick_fps_filter(len(frames), fps)
    height, width = frames.shape[1:3]
    (scaled_h, scaled_w), (out_h, out_w) = target_size(height, width)
    out = np.empty((len(slots), out_h, out_w, 3), np.uint8)
    scaler, cache = VideoReformatter(), {}
    for k, i in enumerate(slots):
        if i not in cache:
            cache.clear()
            img = frames[i]
            if (height, width) != (scaled_h, scaled_w):
                img = scaler.reformat(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24"),
                                      width=scaled_w, height=scaled_h, interpolation="BICUBIC").to_ndarray()
            cache[i] = img[:out_h, :out_w]
        out[k] = cache[i]
    return AVClip(out, _audio_from_array(audio, sample_rate))


def pick_fps_filter(n_frames: int, fps: float) -> list[int]:
    """Index of the frame each 25-fps slot shows, for `n_frames` frames at `fps` (frame i at i / fps),
    as FFmpeg's fps filter picks: frame i's slot is i / fps x 25 rounded half away from zero, slot n
    shows the last frame whose slot is <= n, and the output ends at round(n_frames / fps x 25)."""
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    n_out = round_half_away(Fraction(n_frames) / rate * FPS)
    slots = [round_half_away(Fraction(i) / rate * FPS) for i in range(n_frames)]
    picked, i = [], 0
    for n in range(n_out):
        while i + 1 < len(slots) and slots[i + 1] <= n:
            i += 1
        picked.append(i)
    return picked


def _slot_range(start_sec: float, duration_sec: float | None) -> tuple[int, int | None]:
    if start_sec < 0 or not math.isfinite(start_sec):
        raise WindowOutOfRangeError(f"start_sec must be >= 0, got {start_sec}")
    first = int(round(start_sec * FPS))
    if duration_sec is None:
        return first, None
    if duration_sec <= 0:
        raise WindowOutOfRangeError(f"duration must be > 0 s, got {duration_sec}")
    return first, first + max(1, int(round(duration_sec * FPS)))


def _audio_from_array(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,), (C, N) or (N, C) float / int PCM at sample_rate -> (M,) float32 mono 16 kHz."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio if audio.shape[0] <= audio.shape[1] else audio.T
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise InvalidArrayError(f"audio must be a non-empty (N,), (C, N) or (N, C) array, got {_describe(audio)}")
    if np.issubdtype(audio.dtype, np.integer) and audio.dtype.itemsize in (2, 4):
        audio = audio.astype(np.float32) / np.float32(2 ** (8 * audio.dtype.itemsize - 1))
    elif not np.issubdtype(audio.dtype, np.floating):
        raise InvalidArrayError(f"audio must be float or int16/int32 PCM, got {audio.dtype}")
    wave = audio.astype(np.float32) if audio.ndim == 1 else audio.astype(np.float32).mean(axis=0, dtype=np.float32)
    if not (isinstance(sample_rate, (int, np.integer)) or float(sample_rate).is_integer()) or sample_rate <= 0:
        raise InvalidArrayError(f"sample_rate must be a positive integer (Hz), got {sample_rate}")
    if int(sample_rate) == SAMPLE_RATE:
        return np.ascontiguousarray(wave)
    frame = av.AudioFrame.from_ndarray(wave[None, :], format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = int(sample_rate), 0, Fraction(1, int(sample_rate))
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
    return np.concatenate([mono(resampler.resample(frame)), mono(resampler.resample(None))])


def _describe(x) -> str:
    return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
