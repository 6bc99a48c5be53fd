"""Model inputs from media: the official test-time transform (prepare_inputs) and grid segments.

prepare_inputs reproduces, in NumPy, the chain EqualifyFromRight -> RGBSpatialCrop(224, centre) ->
TemporalCropAndOffset -> GenerateMultipleSegments -> RGBToHalfToZeroOne -> RGBNormalize(0.5, 0.5) ->
AudioMelSpectrogram -> AudioLog -> PadOrTruncate(66) -> AudioNormalizeAST (SPEC 1), with the index
quirks of segments.official_window. EqualifyFromRight (trim both streams to a common length of at most
10 s) is not applied: trimming never changes the values it keeps, so every window the official code
accepts gives the same inputs here, and windows it rejects (e.g. starting after 5 s) work.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np

from sync_sdk.errors import ClipTooShortError, SilentAudioWarning, WindowOutOfRangeError
from sync_sdk.geometry import (
    CROP_SIZE,
    N_SEGMENTS,
    SEG_FRAMES,
    SEG_SAMPLES,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    WINDOW_SEC,
    crop_offsets,
    official_window,
    offset_samples,
    segment_frame,
    segment_sample,
    window_segment_starts,
)
from sync_sdk.inputs.cpu import log_mel, map_frames
from sync_sdk.media import AVClip, read_audio_samples, read_video_slots, require_streams
from sync_sdk.media.source import as_span, is_path, source_name
from sync_sdk.media.span import MediaSpan

SILENCE_PEAK = 1e-4  # audio whose peak stays below this (-80 dBFS) is reported as silent
STILL_LEVEL = 8  # a frame none of whose pixels moves more than this (8-bit levels) from the last is still
STILL_STRIDE = 4  # the still test samples every 4th row and column
EVIDENCE_FLAGS = ("silent_audio", "static_video")  # what `evidence_flags` can say, in its order


def prepare_inputs(source, offset_sec: float = 0.0, start_sec: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Official model inputs for the 5-s window starting at start_sec, audio shifted by offset_sec.

    source: path | MediaSpan | AVClip | (frames (T,H,W,3) uint8, fps, audio (N,) / (C,N) / (N,C),
    sample_rate).
    offset_sec: positive = the audio crop is taken offset_sec later (audio leads), as in SPEC 1.4.
    Returns vid (14, 16, 3, 224, 224) float32 (the official float16 values) and
    aud (14, 1, 128, 66) float32. Raises ClipTooShortError (media shorter than 5 s + |offset|),
    WindowOutOfRangeError (window outside the media), media errors for files; warns SilentAudioWarning.
    """
    frames, audio = window_media(source, offset_sec, start_sec)
    return window_video(frames), window_audio(audio)


def decode_span(path, windows: Sequence[tuple[float, float]]) -> MediaSpan:
    """One decode of `path` covering the crops of the (offset_sec, start_sec) windows; windows that
    begin before the media are left out (prepare_inputs on the span raises for them as for the file)."""
    info = require_streams(path)
    crops = []
    for offset_sec, start_sec in windows:
        try:
            crops.append(official_window(offset_sec, start_sec))
        except WindowOutOfRangeError:
            continue
    if not crops:
        return MediaSpan(np.zeros((0, 1, 1, 3), np.uint8), 0, np.zeros(0, np.float32), 0, str(path),
                         info.duration_sec)
    v0, a0 = min(v for v, _ in crops), min(a for _, a in crops)
    frames = read_video_slots(path, v0, max(v for v, _ in crops) + WINDOW_FRAMES, info)
    audio = read_audio_samples(path, a0, max(a for _, a in crops) + WINDOW_SAMPLES)
    return MediaSpan(frames, v0, audio, a0, str(path), info.duration_sec)


def window_media(source, offset_sec: float = 0.0, start_sec: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The raw crops of prepare_inputs' window: frames (125, H, W, 3) uint8 and audio (80000,) float32;
    the same checks and warnings. source: path | MediaSpan | AVClip | arrays (see prepare_inputs)."""
    v0, a0 = official_window(offset_sec, start_sec)
    if is_path(source):
        info = require_streams(source)
        frames = read_video_slots(source, v0, v0 + WINDOW_FRAMES, info)
        audio = read_audio_samples(source, a0, a0 + WINDOW_SAMPLES)
        length = info.duration_sec
    else:
        span = as_span(source)
        v, a = v0 - span.first_frame, a0 - span.first_sample
        if v < 0 or a < 0:
            raise WindowOutOfRangeError(f"the window at start_sec={start_sec}, offset_sec={offset_sec} begins "
                                        f"before the media held (frames from {span.first_frame}, samples from "
                                        f"{span.first_sample})")
        frames, audio = span.frames[v:v + WINDOW_FRAMES], span.audio[a:a + WINDOW_SAMPLES]
        length = span.duration_sec
    if len(frames) < WINDOW_FRAMES or len(audio) < WINDOW_SAMPLES:
        _raise_out_of_range(source, length, offset_sec, start_sec, len(frames), len(audio))
    warn_if_silent(audio, f"window at {start_sec} s (offset {offset_sec} s) of {_name(source)}")
    return frames, audio


def window_video(frames: np.ndarray) -> np.ndarray:
    """(14, 16, 3, 224, 224) float32 video input of a window's frames (125, H, W, 3) uint8."""
    return _video_at(frames, window_segment_starts(0, 0)[0])


class WindowVideo:
    """A window's video model input, made a few segments at a time: `vid[a:b]` gives segments a..b-1
    as window_video does, (b - a, 16, 3, 224, 224) float32 (9.6 MB a segment); np.asarray(vid) all
    14 (135 MB). It holds only the window's frames (125, H, W, 3) uint8 (a view of what was decoded)."""

    dtype = np.dtype(np.float32)

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self._starts = window_segment_starts(0, 0)[0]
        self.shape = (len(self._starts), SEG_FRAMES, 3, CROP_SIZE, CROP_SIZE)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"WindowVideo takes slices of segments, got {index!r}")
        return _video_at(self.frames, self._starts[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


def window_audio(audio: np.ndarray) -> np.ndarray:
    """(14, 1, 128, 66) float32 audio input of a window's samples (80000,) float32."""
    return _audio_at(audio, window_segment_starts(0, 0)[1])


def video_segments(clip: AVClip, seg_ids) -> np.ndarray:
    """Grid segments of a clip's video: segment g = frames [2+8g, 18+8g) of the clip ->
    (n, 16, 3, 224, 224) float32 model input."""
    starts = [segment_frame(g) for g in seg_ids]
    _check_range(starts, SEG_FRAMES, len(clip.frames), "frames")
    return _video_at(clip.frames, starts)


def audio_segments(clip: AVClip, seg_ids, offset_sec: float = 0.0) -> np.ndarray:
    """Grid segments of a clip's audio shifted by offset_sec: segment g = samples
    [1280+5120g+off, 11520+5120g+off) of the clip, off = round(offset_sec*16000) -> (n, 1, 128, 66)."""
    starts = [segment_sample(g, offset_samples(offset_sec)) for g in seg_ids]
    _check_range(starts, SEG_SAMPLES, len(clip.audio), "audio samples")
    return _audio_at(clip.audio, starts)


def evidence_flags(frames: np.ndarray, audio: np.ndarray) -> tuple[str, ...]:
    """What one stream lacks in the frames (T, H, W, 3) uint8 and samples (N,) a model sees:
    "silent_audio" (peak below SILENCE_PEAK) and "static_video" (no frame moves more than STILL_LEVEL
    from the one before). Over grid segments, a window's flags are those all its segments carry."""
    flags = []
    if not len(audio) or float(np.max(np.abs(audio))) < SILENCE_PEAK:
        flags.append("silent_audio")
    sampled = frames[:, ::STILL_STRIDE, ::STILL_STRIDE].astype(np.int16)
    if len(sampled) < 2 or int(np.abs(np.diff(sampled, axis=0)).max()) <= STILL_LEVEL:
        flags.append("static_video")
    return tuple(flags)


def window_flags(frames: np.ndarray, audio: np.ndarray) -> tuple[str, ...]:
    """`evidence_flags` of the part of a window's crop, frames (125, H, W, 3) and samples (80000,), that
    its segments cover."""
    n = N_SEGMENTS - 1
    return evidence_flags(frames[segment_frame(0):segment_frame(n) + SEG_FRAMES],
                          audio[segment_sample(0):segment_sample(n) + SEG_SAMPLES])


def span_flags(span: MediaSpan, first_segment: int, n_segments: int) -> tuple[str, ...]:
    """`evidence_flags` of grid segments first_segment.. (n_segments of them) of a span (grid
    coordinates; the span must hold their frames and samples)."""
    last = first_segment + n_segments - 1
    f0, a0 = segment_frame(first_segment) - span.first_frame, segment_sample(first_segment) - span.first_sample
    return evidence_flags(span.frames[f0:segment_frame(last) + SEG_FRAMES - span.first_frame],
                          span.audio[a0:segment_sample(last) + SEG_SAMPLES - span.first_sample])


class SegmentFlags:
    """Evidence flags of grid segments, each segment's computed once (`span_flags` of that segment); a
    window's flags are those all its segments carry, which equals `span_flags` over the whole window
    (overlapping segments hold every pair of consecutive frames and every sample of it)."""

    def __init__(self) -> None:
        self._flags: dict[int, frozenset[str]] = {}

    def add(self, span: MediaSpan, segments: Iterable[int]) -> None:
        """Compute the flags of `segments` not seen yet from `span` (which must hold them)."""
        for g in segments:
            if g not in self._flags:
                self._flags[g] = frozenset(span_flags(span, g, 1))

    def window(self, first_segment: int, n_segments: int) -> tuple[str, ...]:
        """The flags of the window of segments first_segment.. (all added), in EVIDENCE_FLAGS order."""
        flags = frozenset.intersection(*(self._flags[g] for g in range(first_segment, first_segment + n_segments)))
        return tuple(f for f in EVIDENCE_FLAGS if f in flags)

    def drop_before(self, segment: int) -> None:
        """Forget the segments before `segment`."""
        self._flags = {g: f for g, f in self._flags.items() if g >= segment}


def warn_if_silent(audio: np.ndarray, where: str) -> None:
    """SilentAudioWarning when the peak of `audio` is below SILENCE_PEAK."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak < SILENCE_PEAK:
        warnings.warn(f"the audio of the {where} is silent (peak {peak:.2g}); the offset prediction needs "
                      f"audible sound", SilentAudioWarning, stacklevel=3)


def _video_at(frames: np.ndarray, starts) -> np.ndarray:
    """(n, 16, 3, 224, 224) from frames (T, H, W, 3): segments of 16 frames at `starts`. Only the
    224 x 224 centre is mapped, once per frame: frames shared by overlapping segments are copied."""
    top, left = crop_offsets(frames.shape[1], frames.shape[2])
    crop = frames[:, top:top + CROP_SIZE, left:left + CROP_SIZE]
    out = np.empty((len(starts), SEG_FRAMES, 3, CROP_SIZE, CROP_SIZE), np.float32)
    done: dict[int, np.ndarray] = {}  # frame index -> its mapped values in `out`
    for s, dst in zip(starts, out):
        for f in range(SEG_FRAMES):
            if s + f in done:
                dst[f] = done[s + f]
            else:
                map_frames(crop[s + f:s + f + 1], dst[f:f + 1])
                done[s + f] = dst[f]
    return out


def _audio_at(audio: np.ndarray, starts) -> np.ndarray:
    """(n, 1, 128, 66) log-mel of the 10240-sample segments of `audio` at `starts`."""
    return log_mel(audio[np.asarray(starts)[:, None] + np.arange(SEG_SAMPLES)])


def _check_range(starts, size: int, available: int, what: str) -> None:
    bad = [s for s in starts if s < 0 or s + size > available]
    if bad:
        raise WindowOutOfRangeError(f"segment {what} [{bad[0]}, {bad[0] + size}) fall outside the clip's "
                                    f"{available} {what}")


def _raise_out_of_range(source, length, offset_sec, start_sec, n_frames, n_samples):
    off = round(float(offset_sec), 2)
    need = WINDOW_SEC + abs(off)
    have = f"{length:.2f} s" if length is not None else "unknown length"
    if length is not None and length < need:
        raise ClipTooShortError(f"{_name(source)} is {have} long; a {WINDOW_SEC}-s window with offset {off} s "
                                f"needs at least {need:.2f} s")
    hi = f"{length - WINDOW_SEC - max(0.0, off):.2f}" if length is not None else "length - 5 - max(0, offset)"
    raise WindowOutOfRangeError(
        f"the window at start_sec={start_sec} with offset_sec={off} runs past the end of {_name(source)} "
        f"({have}; got {n_frames}/{WINDOW_FRAMES} frames and {n_samples}/{WINDOW_SAMPLES} samples); "
        f"start_sec must lie in [{max(0.0, -off):.2f}, {hi}]")


def _name(source) -> str:
    return source_name(source) or "the clip"
