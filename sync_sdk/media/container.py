"""Opening media files: the container, the stream each decoder reads, probing, and the decode loop.

Every reader of this package opens its file with `open_container` (MediaNotFoundError, MediaDecodeError),
takes its stream from `video_stream` / `audio_stream` (NoVideoStreamError, NoAudioStreamError through
`require_streams` and the decoders) and reads frames through `Decoder._decoded`, which skips what the
demuxer or decoder rejects and warns once (CorruptMediaWarning) when the decoder closes.

Time origin: the container start time (the ffmpeg CLI subtracts it). Media time of a frame or sample =
pts * time_base - start, in seconds.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av

from sync_sdk.errors import (
    CorruptMediaWarning,
    MediaDecodeError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
)


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


def probe(path: str | os.PathLike) -> MediaInfo:
    """Metadata of a media file. Raises MediaNotFoundError, MediaDecodeError (not media)."""
    with open_container(path) as container:
        video, audio = video_stream(container), audio_stream(container)
        info = dict(path=str(path), duration_sec=_duration(container, video, audio),
                    has_video=video is not None, has_audio=audio is not None,
                    start_sec=(container.start_time or 0) / av.time_base, codecs={})
        if video is not None:
            rotation, (width, height) = _first_frame_geometry(container, video)
            rate = video.average_rate or video.guessed_rate or video.base_rate
            info.update(width=width, height=height, rotation=rotation, fps=float(rate) if rate else None)
            info["codecs"]["video"] = video.codec_context.name
        if audio is not None:
            info.update(sample_rate=audio.codec_context.sample_rate, channels=audio.codec_context.channels)
            info["codecs"]["audio"] = audio.codec_context.name
    return MediaInfo(**info)


def require_streams(path: str | os.PathLike) -> MediaInfo:
    """probe(path), raising NoVideoStreamError / NoAudioStreamError unless both streams are there."""
    info = probe(path)
    if not info.has_video:
        raise NoVideoStreamError(f"{path} has no video stream (found: {info.codecs or 'nothing'}); "
                                 f"a video track is needed")
    if not info.has_audio:
        raise NoAudioStreamError(f"{path} has no audio stream (found: {info.codecs}); an audio track is needed")
    return info


def open_container(path: str | os.PathLike):
    """The opened av container of a file. Raises MediaNotFoundError, MediaDecodeError (not media)."""
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


def video_stream(container):
    """The first video stream that is not cover art, or None."""
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    return None


def audio_stream(container):
    """The first audio stream, or None."""
    return container.streams.audio[0] if container.streams.audio else None


def round_half_away(x: Fraction) -> int:
    """Nearest integer, ties away from zero (av_rescale_q_rnd with AV_ROUND_NEAR_INF)."""
    n = math.floor(abs(x) + Fraction(1, 2))
    return n if x >= 0 else -n


class DecodeLog:
    """What could not be read; warns once (CorruptMediaWarning) when the decoder closes."""

    def __init__(self, path, kind: str) -> None:
        self.path, self.kind = path, kind
        self.skipped: list[float] = []  # media times of packets the decoder rejected (nan if unknown)
        self.gaps: list[tuple[float, float]] = []  # stretches without data between decoded frames
        self.demux_errors = 0
        self.missing = 0  # frames the container declares but that never came
        self.packets = 0  # packets read
        self.decoded = 0  # frames the decoder gave

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


class Decoder:
    """One container opened on one stream, for sequential reading (after at most one seek)."""

    kind = ""

    def __init__(self, path) -> None:
        self.path = path
        self.container = open_container(path)
        self.origin = Fraction(self.container.start_time or 0, av.time_base)
        self.log = DecodeLog(path, self.kind)

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
            self.log.packets += packet.size > 0  # not the empty packet that flushes the decoder
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.log.skip(None if packet.pts is None else float(packet.pts * stream.time_base - self.origin))
                continue
            self.log.decoded += len(frames)
            yield from frames

    def nothing_decoded(self) -> MediaDecodeError:
        """The error for a stream read from its start that gave nothing to use."""
        log = self.log
        if not log.packets:
            why = "no packet could be read from its start: it is empty, or its timestamps are too damaged to seek"
        elif not log.decoded:
            why = f"none of its {log.packets} packet(s) decoded" + (": the decoder rejected them" if log.skipped else "")
        else:
            why = f"none of its {log.decoded} decoded frame(s) has a usable timestamp"
        return MediaDecodeError(f"{self.path}: the {self.kind} stream gave nothing to decode ({why}); a file "
                                f"whose {self.kind} stream can be decoded is needed")

    def _time(self, pts: int, stream) -> Fraction:
        """Media time (s) of a timestamp of `stream`."""
        return pts * stream.time_base - self.origin


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
