"""Media in, AVClip out: RGB frames at 25 fps (shortest side 256) and mono float32 audio at 16 kHz.

Files are decoded with PyAV (any container and codec its FFmpeg opens), arrays are resampled the same
way. The result equals what the official route feeds its transforms (example.py: an ffmpeg CLI re-encode
to 25 fps / 256 / 16 kHz, then torchvision.io.read_video), without the lossy re-encode:

- Time origin: the container start time (the ffmpeg CLI subtracts it). Media time of a frame or
  sample = pts * time_base - start.
- 25 fps as ffmpeg's fps filter picks frames: each input frame's time is rounded to the nearest
  1/25-s slot (half away from zero); slot n shows the last frame whose slot is <= n (frames are
  duplicated or dropped, so variable frame rate input works); output ends at round(end * 25) with
  end = last pts + its duration. Deviation: slots before the first frame repeat the first frame (ffmpeg
  starts the output there instead, which misaligns audio and video).
- Size: scale=iw*256/min(iw,ih):ih*256/min(iw,ih) (each side truncated to int), then
  crop=trunc(iw/2)*2:trunc(ih/2)*2, which keeps the top-left pixels (ffmpeg's centred crop offset
  lrint(0.5) & ~1 = 0). Scaling is swscale bilinear in the decoded pixel format, then swscale converts
  to rgb24 (as read_video's frame.to_rgb()); frames already at the target size are only converted,
  which is bit-exact with read_video. (The CLI scales bicubic, but its x264 re-encode dominates the
  difference: on a 720p test file our bilinear frames are 1.21 levels (mean |diff|) from the official
  route's, bicubic ones 1.24, and bilinear costs half as much.)
- Rotation: the display matrix (frame side data) is honoured like the CLI's autorotate: the size rule
  applies to the displayed picture, frames are rotated by multiples of 90 degrees (flips ignored).
- Audio: av.AudioResampler(format="fltp", layout kept, rate=16000), then the mean over channels
  (the official mono: read_video, then mean(dim=0)). PyAV's own mono downmix, 0.707 (L + R), is +3 dB
  and is not used. Samples are placed by the first frame's timestamp; gaps (skipped packets) are
  filled with zeros so audio stays aligned with video.
- Every decode starts with a seek, even at 0: after a seek the MP4 demuxer skips the AAC priming
  packet (pts -1024) exactly as read_video does (decoding from the first packet instead changes the
  first 576 samples). Seeks decode only the asked range plus a short pre-roll.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from sync_sdk.errors import (CorruptMediaWarning, InvalidArrayError, MediaDecodeError, MediaNotFoundError,
                     NoAudioStreamError, NoVideoStreamError, WindowOutOfRangeError)
from sync_sdk.geometry import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

SHORT_SIDE = 256
_AUDIO_PREROLL_SEC = 0.25  # decoder warm-up (AAC/MP3/Opus overlap) and resampler history
_VIDEO_PREROLL_SLOTS = 2  # seek a little before the first slot: timestamps round to the nearest slot
_GAP_SEC = 0.01  # audio timestamp jumps larger than this are treated as gaps
_CONVERT_AHEAD = 4  # frames converted to RGB ahead of the consumer
_INTERPOLATION = "BILINEAR"  # swscale kernel for file frames (see the module docstring)


@dataclass(frozen=True)
class MediaInfo:
    """Stream metadata, read without decoding the file (only its first video frame, for rotation).

    width, height: displayed size (after rotation) before any resizing; fps: the stream's average
    frame rate; rotation: degrees counter-clockwise the display matrix asks for (0, 90, 180, 270);
    codecs: {"video": name, "audio": name} for the streams present; start_sec: container start time,
    the origin of media time.
    """
    path: str
    duration_sec: float | None
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rotation: int = 0
    codecs: dict = field(default_factory=dict)
    sample_rate: int | None = None
    channels: int | None = None
    start_sec: float = 0.0


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


# ------------------------------------------------------------------ public functions
def probe(path: str | os.PathLike) -> MediaInfo:
    """Metadata of a media file. Raises MediaNotFoundError, MediaDecodeError (not media)."""
    with _open(path) as container:
        video, audio = _video_stream(container), _audio_stream(container)
        info = dict(path=str(path), duration_sec=_duration(container, video, audio),
                    has_video=video is not None, has_audio=audio is not None,
                    start_sec=_start_sec(container), codecs={})
        if video is not None:
            rotation, (width, height) = _first_frame_geometry(container, video)
            rate = video.average_rate or video.guessed_rate or video.base_rate
            info.update(width=width, height=height, rotation=rotation, fps=float(rate) if rate else None)
            info["codecs"]["video"] = video.codec_context.name
        if audio is not None:
            info.update(sample_rate=audio.codec_context.sample_rate, channels=audio.codec_context.channels)
            info["codecs"]["audio"] = audio.codec_context.name
    return MediaInfo(**info)


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
    with _VideoDecoder(path, info) as vdec, _AudioDecoder(path) as adec:
        video = vdec.frames(first, stop)
        audio = _Samples(adec.samples(first * SAMPLES_PER_FRAME,
                                      None if stop is None else stop * SAMPLES_PER_FRAME))
        slot = first
        while stop is None or slot < stop:
            n = step if stop is None else min(step, stop - slot)
            frames = [f for _, f in zip(range(n), video)]
            pcm = audio.take(n * SAMPLES_PER_FRAME)
            if not frames and not len(pcm):
                break
            yield AVClip(_stack(frames, vdec.shape), pcm, start_sec=slot / FPS)
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
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    n_out = _round_half_away(Fraction(len(frames)) / rate * FPS)
    slots = _pick_frames([_round_half_away(Fraction(i) / rate * FPS) for i in range(len(frames))], n_out)
    height, width = frames.shape[1:3]
    (scaled_h, scaled_w), (out_h, out_w) = _target_size(height, width)
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


def read_video_slots(path: str | os.PathLike, first: int, stop: int | None,
                     info: MediaInfo | None = None) -> np.ndarray:
    """Frames of 25-fps slots [first, stop) of a file (to the end if stop is None): (T, H, W, 3) uint8."""
    with _VideoDecoder(path, info or probe(path)) as dec:
        if stop is None:
            return _stack(list(dec.frames(first, None)), dec.shape)
        out, n = np.empty((stop - first,) + dec.shape, np.uint8), 0
        for n, frame in enumerate(dec.frames(first, stop), 1):
            out[n - 1] = frame
        return out[:n]


def read_audio_samples(path: str | os.PathLike, first: int, stop: int | None) -> np.ndarray:
    """Mono 16-kHz samples [first, stop) of a file's media time (to the end if stop is None)."""
    with _AudioDecoder(path) as dec:
        return _Samples(dec.samples(first, stop)).take(None if stop is None else stop - first)


# ------------------------------------------------------------------ decoders
class _DecodeLog:
    """What could not be read; warns once (CorruptMediaWarning) when the decoder closes."""

    def __init__(self, path, kind: str) -> None:
        self.path, self.kind = path, kind
        self.skipped: list[float] = []  # media times of packets the decoder rejected (nan if unknown)
        self.gaps: list[tuple[float, float]] = []  # stretches without data between decoded frames
        self.demux_errors = 0
        self.missing = 0  # frames the container declares but that never came

    def skip(self, time: float | None) -> None:
        self.skipped.append(math.nan if time is None else time)

    def warn(self) -> None:
        found = []
        if self.skipped:
            known = [t for t in self.skipped if not math.isnan(t)]
            where = f" ({min(known):.2f}-{max(known):.2f} s)" if known else ""
            found.append(f"{len(self.skipped)} undecodable {self.kind} packet(s) skipped{where}")
        if self.gaps:
            spans = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in self.gaps[:5])
            fill = "filled with silence" if self.kind == "audio" else "previous frame repeated"
            found.append(f"no {self.kind} data in {len(self.gaps)} stretch(es) ({spans}; {fill})")
        if self.demux_errors:
            found.append(f"{self.demux_errors} unreadable stretch(es) of the file")
        if self.missing:
            found.append(f"{self.missing} of the declared {self.kind} frames missing")
        if found:
            warnings.warn(f"{self.path}: {'; '.join(found)}. The rest was decoded; results near these times "
                          f"are unreliable", CorruptMediaWarning, stacklevel=4)


class _Decoder:
    """One container opened on one stream, for sequential reading after one seek."""

    kind = ""

    def __init__(self, path) -> None:
        self.path = path
        self.container = _open(path)
        self.origin = Fraction(self.container.start_time or 0, av.time_base)
        self.log = _DecodeLog(path, self.kind)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()
        self.log.warn()

    def _seek(self, stream, sec: float) -> None:
        """Seek `stream` to the keyframe at or before media time `sec` (clamped to 0)."""
        target = Fraction(max(0.0, sec)).limit_denominator(10 ** 6) + self.origin
        try:
            self.container.seek(int(math.floor(target / stream.time_base)), stream=stream, backward=True)
        except av.error.FFmpegError:  # not seekable: decode from where we are (the start)
            pass

    def _packets(self, stream) -> Iterator:
        """Packets of `stream`; unreadable stretches are counted and skipped (demuxing resumes)."""
        for _ in range(1000):
            try:
                yield from self.container.demux(stream)
                return
            except av.error.FFmpegError:
                self.log.demux_errors += 1

    def _decoded(self, stream) -> Iterator:
        """Decoded frames of `stream`; packets the decoder rejects are counted and skipped."""
        for packet in self._packets(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.log.skip(None if packet.pts is None else float(packet.pts * stream.time_base - self.origin))
                continue
            yield from frames

    def _time(self, pts: int, stream) -> Fraction:
        return pts * stream.time_base - self.origin


class _VideoDecoder(_Decoder):
    """25-fps RGB frames of the first video stream (fps filter + scale + even crop + rotation)."""

    kind = "video"

    def __init__(self, path, info: MediaInfo) -> None:
        super().__init__(path)
        self.stream = _video_stream(self.container)
        if self.stream is None:
            raise NoVideoStreamError(f"{path} has no video stream; a video track is needed")
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = min(os.cpu_count() or 1, 8)
        if not info.width or not info.height:
            raise MediaDecodeError(f"{path}: no frame of the video stream could be decoded")
        self.rotation = info.rotation
        (self.scaled_h, self.scaled_w), (out_h, out_w) = _target_size(info.height, info.width)
        self.shape = (out_h, out_w, 3)
        self._scaler, self._to_rgb = VideoReformatter(), VideoReformatter()

    def frames(self, first: int, stop: int | None) -> Iterator[np.ndarray]:
        """Frames of slots first, first+1, ... (< stop), as (H, W, 3) uint8 arrays (do not keep views).

        Scaling and RGB conversion run in a worker thread, a few frames ahead of the consumer, while this
        thread demuxes and the decoder's own threads decode (both release the GIL)."""
        with ThreadPoolExecutor(1, thread_name_prefix="sync_sdk-rgb") as pool:
            ahead: deque = deque()
            for shown in self._shown(first, stop):
                if shown[2] is None:  # a frame shown in several slots is converted once
                    shown[2] = pool.submit(self._convert, shown[1])
                ahead.append(shown[2])
                if len(ahead) > _CONVERT_AHEAD:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def _shown(self, first: int, stop: int | None) -> Iterator[list]:
        """For each slot first, first+1, ... (< stop): the record [slot, frame, conversion] of the frame
        it shows (ffmpeg's fps filter; the same record for repeated frames)."""
        seek_sec = (first - _VIDEO_PREROLL_SLOTS) / FPS
        self._seek(self.stream, seek_sec)
        nxt = first  # next slot to emit
        pending = None  # [slot, frame, converted array or None]: the frame shown until a later one
        pts = end = None
        rate = self.stream.average_rate or self.stream.guessed_rate or FPS
        max_gap, n_decoded = max(10 / Fraction(rate), Fraction(1, 2)), 0  # larger holes: data lost (or VFR)
        for frame in self._decoded(self.stream):
            prev = pts
            pts = _frame_pts(frame, pts, end)
            if pts is None:
                continue
            end = pts + frame.duration if frame.duration else None
            slot = _round_half_away(self._time(pts, self.stream) * FPS)
            if pending is None and slot > nxt and seek_sec > 0:  # the seek landed late: start over
                seek_sec = 0.0
                self._seek(self.stream, seek_sec)
                pts = end = None
                continue
            n_decoded += 1
            if prev is not None and (pts - prev) * self.stream.time_base > max_gap:
                self.log.gaps.append((float(self._time(prev, self.stream)), float(self._time(pts, self.stream))))
            shown = pending or [slot, frame, None]  # slots before the first frame repeat it
            while nxt < slot and (stop is None or nxt < stop):
                yield shown
                nxt += 1
            if stop is not None and nxt >= stop:
                return
            pending = shown if pending is None else [slot, frame, None]
        if pending is None:
            return
        if seek_sec <= 0 and self.stream.frames and n_decoded < self.stream.frames:
            self.log.missing = self.stream.frames - n_decoded  # read from the start to the end
        if end is None:  # no duration: one frame period of the stream's rate
            end_time = self._time(pts, self.stream) + 1 / Fraction(rate)
        else:
            end_time = self._time(end, self.stream)
        last = _round_half_away(end_time * FPS)
        while nxt < last and (stop is None or nxt < stop):
            yield pending
            nxt += 1

    def _convert(self, frame) -> np.ndarray:
        """Decoded frame -> (H, W, 3) uint8 RGB: scale in its own pixel format, convert, rotate, crop."""
        k = self.rotation // 90
        h, w = (self.scaled_w, self.scaled_h) if k % 2 else (self.scaled_h, self.scaled_w)
        if (frame.height, frame.width) != (h, w):
            frame = self._scaler.reformat(frame, width=w, height=h, interpolation=_INTERPOLATION, threads=1)
        img = self._to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()
        if k:
            img = np.rot90(img, k)
        return img[:self.shape[0], :self.shape[1]]


class _AudioDecoder(_Decoder):
    """Mono 16-kHz float32 samples of the first audio stream, placed on media time."""

    kind = "audio"

    def __init__(self, path) -> None:
        super().__init__(path)
        self.stream = _audio_stream(self.container)
        if self.stream is None:
            raise NoAudioStreamError(f"{path} has no audio stream; an audio track is needed")

    def samples(self, first: int, stop: int | None) -> Iterator[np.ndarray]:
        """Consecutive chunks covering samples first, first+1, ... (< stop, or to the end) at 16 kHz;
        samples before the stream's first timestamp and in timestamp gaps are zeros."""
        start_sec = first / SAMPLE_RATE
        self._seek(self.stream, 0.0 if start_sec <= _AUDIO_PREROLL_SEC else start_sec - _AUDIO_PREROLL_SEC)
        out = _Placer(first, stop)
        resampler = setup = expect = None
        anchored = False
        pos = 0  # sample index of the next resampler output
        for frame in self._decoded(self.stream):
            t = self._time(frame.pts, self.stream) if frame.pts is not None else (expect or Fraction(0))
            key = (frame.format.name, frame.layout.name, frame.sample_rate)
            jump = expect is not None and abs(t - expect) > _GAP_SEC
            if jump and t > expect:
                self.log.gaps.append((float(expect), float(t)))
            if resampler is not None and (jump or key != setup):  # gap or new format: flush
                pcm = _mono(resampler.resample(None))
                yield from out.place(pcm, pos)
                pos += len(pcm)
                resampler = None
            expect = t + Fraction(frame.samples, frame.sample_rate)
            if jump or not anchored:  # (re-)anchor on the timestamp, on the full decode's sample grid
                frame, anchor = _on_output_grid(frame, t)
                if frame is None:
                    continue
                pos, anchored = anchor if not anchored else max(pos, anchor), True
            if resampler is None:
                resampler, setup = av.AudioResampler(format="fltp", layout=frame.layout, rate=SAMPLE_RATE), key
            pcm = _mono(resampler.resample(frame))
            yield from out.place(pcm, pos)
            pos += len(pcm)
            if out.done:
                return
        if resampler is not None:
            yield from out.place(_mono(resampler.resample(None)), pos)


class _Placer:
    """Turns (pcm, position) pieces into one gap-free run of samples [first, stop): zeros fill holes,
    overlaps and samples outside the range are dropped."""

    def __init__(self, first: int, stop: int | None) -> None:
        self.next, self.stop = first, stop

    @property
    def done(self) -> bool:
        return self.stop is not None and self.next >= self.stop

    def place(self, pcm: np.ndarray, pos: int) -> Iterator[np.ndarray]:
        end = pos + len(pcm) if self.stop is None else min(pos + len(pcm), self.stop)
        if end <= self.next:
            return
        if pos > self.next:
            yield np.zeros(pos - self.next, np.float32)
            self.next = pos
        yield pcm[self.next - pos:end - pos]
        self.next = end


class _Samples:
    """Takes exact sample counts from an iterator of consecutive chunks."""

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self.chunks, self.buffer = chunks, np.empty(0, np.float32)

    def take(self, n: int | None) -> np.ndarray:
        """The next n samples (all the rest if n is None; fewer at the end)."""
        parts, have = [self.buffer], len(self.buffer)
        while n is None or have < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        pcm = np.concatenate(parts)
        n = len(pcm) if n is None else min(n, len(pcm))
        self.buffer = pcm[n:]
        return np.ascontiguousarray(pcm[:n], dtype=np.float32)


# ------------------------------------------------------------------ helpers
def _open(path):
    p = Path(path)
    if not p.exists():
        raise MediaNotFoundError(f"media file not found: {p}")
    if not p.is_file():
        raise MediaNotFoundError(f"not a file: {p}; a media file is needed")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise MediaDecodeError(f"{p} is not media that PyAV/FFmpeg can open ({e}); "
                               f"a video file such as mp4, mkv, webm, mov or avi is needed") from e


def _video_stream(container):
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:  # skip cover art
            return s
    return None


def _audio_stream(container):
    return container.streams.audio[0] if container.streams.audio else None


def require_streams(path) -> MediaInfo:
    """probe(path), raising NoVideoStreamError / NoAudioStreamError unless both streams are there."""
    info = probe(path)
    if not info.has_video:
        raise NoVideoStreamError(f"{path} has no video stream (found: {info.codecs or 'nothing'}); "
                                 f"a video track is needed")
    if not info.has_audio:
        raise NoAudioStreamError(f"{path} has no audio stream (found: {info.codecs}); an audio track is needed")
    return info


def _start_sec(container) -> float:
    return (container.start_time or 0) / av.time_base


def _duration(container, video, audio) -> float | None:
    """Shortest stream duration (s), else the container's."""
    durations = [float(s.duration * s.time_base) for s in (video, audio)
                 if s is not None and s.duration is not None]
    if durations:
        return min(durations)
    return container.duration / av.time_base if container.duration is not None else None


def _first_frame_geometry(container, stream) -> tuple[int, tuple[int, int]]:
    """(rotation, displayed (width, height)) from the first decodable video frame (or the stream)."""
    rotation, width, height = 0, stream.codec_context.width, stream.codec_context.height
    try:
        for packet in container.demux(stream):
            frames = packet.decode()
            if frames:
                frame = frames[0]
                rotation, width, height = int(round(frame.rotation / 90.0)) * 90 % 360, frame.width, frame.height
                break
    except av.error.FFmpegError:
        pass
    if rotation in (90, 270):
        width, height = height, width
    return rotation, (width, height)


def _target_size(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((scaled_h, scaled_w), (out_h, out_w)) for displayed (height, width): the ffmpeg expressions
    iw*256/min(iw,ih) (double, truncated to int) then an even crop."""
    if not height or not width or height < 1 or width < 1:
        raise InvalidArrayError(f"frames of size {width}x{height} cannot be resized; need width, height >= 1")
    short = min(width, height)
    scaled_w, scaled_h = int(width * SHORT_SIDE / short), int(height * SHORT_SIDE / short)
    return (scaled_h, scaled_w), (scaled_h // 2 * 2, scaled_w // 2 * 2)


def _frame_pts(frame, prev_pts: int | None, prev_end: int | None) -> int | None:
    """A decoded frame's pts; without one its dts, else the end of the previous frame."""
    if frame.pts is not None:
        return frame.pts
    if frame.dts is not None:
        return frame.dts
    return prev_end if prev_end is not None else prev_pts


def _on_output_grid(frame, t: Fraction):
    """(frame or its tail or None, output position) such that resampling starts on an input sample
    that falls exactly on a 16-kHz sample (input index a multiple of rate / gcd(rate, 16000), counted
    from media time 0). Decoding from a seek point then resamples on the same grid as a full decode."""
    rate = frame.sample_rate
    period = rate // math.gcd(rate, SAMPLE_RATE)
    first = _round_half_away(t * rate)
    drop = -first % period
    anchor = (first + drop) * SAMPLE_RATE // rate
    if drop == 0:
        return frame, anchor
    if drop >= frame.samples:
        return None, anchor
    pcm = frame.to_ndarray()
    pcm = pcm[:, drop:] if frame.format.is_planar else pcm[:, drop * frame.layout.nb_channels:]
    tail = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format=frame.format.name, layout=frame.layout.name)
    tail.sample_rate = rate
    return tail, anchor


def _round_half_away(x: Fraction) -> int:
    """Nearest integer, ties away from zero (av_rescale_q_rnd with AV_ROUND_NEAR_INF)."""
    n = math.floor(abs(x) + Fraction(1, 2))
    return n if x >= 0 else -n


def _pick_frames(slots: list[int], n_out: int) -> list[int]:
    """Input frame index shown in each output slot 0..n_out-1 given each input frame's slot (fps filter)."""
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


def _stack(frames: list[np.ndarray], shape: tuple) -> np.ndarray:
    return np.stack(frames) if frames else np.empty((0,) + tuple(shape), np.uint8)


def _mono(frames) -> np.ndarray:
    """Mean over channels of planar float frames: (sum of channels) / C in float32."""
    if not frames:
        return np.empty(0, np.float32)
    pcm = np.concatenate([f.to_ndarray() for f in frames], axis=1) if len(frames) > 1 else frames[0].to_ndarray()
    return pcm[0].copy() if len(pcm) == 1 else pcm.mean(axis=0, dtype=np.float32)


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
    mono = audio.astype(np.float32) if audio.ndim == 1 else audio.astype(np.float32).mean(axis=0, dtype=np.float32)
    if not (isinstance(sample_rate, (int, np.integer)) or float(sample_rate).is_integer()) or sample_rate <= 0:
        raise InvalidArrayError(f"sample_rate must be a positive integer (Hz), got {sample_rate}")
    if int(sample_rate) == SAMPLE_RATE:
        return np.ascontiguousarray(mono)
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = int(sample_rate), 0, Fraction(1, int(sample_rate))
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
    return np.concatenate([_mono(resampler.resample(frame)), _mono(resampler.resample(None))])


def _describe(x) -> str:
    return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
