"""The video stream as 25-fps RGB frames, in one of two frame sizes (`FRAME_SIZES`).

"short256" (the sync model's input; equals what the official route feeds its transforms, example.py:
an ffmpeg CLI re-encode to 25 fps / 256, then torchvision.io.read_video, without the lossy re-encode):
- 25 fps as ffmpeg's fps filter picks frames, on media time (container.py): each input frame's time
  is rounded to the nearest 1/25-s slot (half away from zero); slot n shows the last frame whose slot
  is <= n (frames are duplicated or dropped, so variable frame rate input works); output ends at
  round(end * 25) with end = last pts + its duration. Deviation: slots before the first frame repeat
  the first frame (ffmpeg starts the output there instead, which misaligns audio and video).
- Size: scale=iw*256/min(iw,ih):ih*256/min(iw,ih) (each side truncated to int), then
  crop=trunc(iw/2)*2:trunc(ih/2)*2, which keeps the top-left pixels (ffmpeg's centred crop offset
  lrint(0.5) & ~1 = 0). Scaling is swscale bilinear in the decoded pixel format, then swscale converts
  to rgb24 (as read_video's frame.to_rgb()); frames already at the target size are only converted,
  which is bit-exact with read_video. (The CLI scales bicubic, but its x264 re-encode dominates the
  difference: on a 720p test file our bilinear frames are 1.21 levels (mean |diff|) from the official
  route's, bicubic ones 1.24, and bilinear costs half as much.)
- Rotation: the display matrix (frame side data) is honoured like the CLI's autorotate: the size rule
  applies to the displayed picture, frames are rotated by multiples of 90 degrees (flips ignored).
- Every decode starts with a seek (a short pre-roll before the first slot asked).

"native" (the av-benchmark / torio reader: StreamingMediaDecoder with frame_rate=25, format="rgb24"):
frames as decoded, at their coded size and orientation (rotation metadata not applied), decoded from
the first packet and passed through FFmpeg's own filter graph fps=25,format=rgb24. Its frame choice is
kept exact rather than replaced by the slots above, because the two differ: the fps filter rounds the
raw pts (no start-time origin) and starts its output at the first frame's slot, so a stream that starts
late or a container with a start offset yields fewer frames (a video starting at 0.37 s: 50 frames
against 59 slots). Its rgb24 conversion (format filter) equals the "short256" one (PyAV's swscale
call) on 8-bit YUV and differs on 10-bit input, so it stays the filter's too.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from itertools import chain, pairwise
from typing import Iterator, Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from sync_sdk.errors import InvalidArrayError, MediaDecodeError, NoVideoStreamError, UnsupportedMediaError
from sync_sdk.geometry import FPS
from sync_sdk.media.container import Decoder, MediaInfo, probe, round_half_away, video_stream

SHORT_SIDE = 256
FRAME_SIZES = ("short256", "native")
_VIDEO_PREROLL_SLOTS = 2  # seek a little before the first slot: timestamps round to the nearest slot
_CONVERT_AHEAD = 4  # frames converted to RGB ahead of the consumer
_INTERPOLATION = "BILINEAR"  # swscale kernel for file frames (see the module docstring)
_CHUNK = 16  # frames handed to a layout's crop at a time (bounds memory on large native frames)
MAX_PIXELS = 8192 * 8192  # largest video frame (width x height) decoded from a file
MAX_ASPECT = 16  # largest ratio of a file's frame sides ("short256" frames are then at most 256 x 4096)


class FrameLayout(Protocol):
    """What read_video_crops needs of a layout (inputs.layouts.Layout): its frame size ("short256",
    "native" or "pyav": media.frame_picks) and its crop."""

    frame_size: str

    def crop_frames(self, frames: np.ndarray) -> np.ndarray: ...


def read_video_slots(path: str | os.PathLike, first: int, stop: int | None,
                     info: MediaInfo | None = None) -> np.ndarray:
    """"short256" frames of 25-fps slots [first, stop) of a file (to the end if stop is None):
    (T, H, W, 3) uint8."""
    with VideoDecoder(path, info or probe(path)) as dec:
        if stop is None:
            return stack_frames(list(dec.frames(first, None)), dec.shape)
        out, n = np.empty((stop - first,) + dec.shape, np.uint8), 0
        for n, frame in enumerate(dec.frames(first, stop), 1):
            out[n - 1] = frame
        return out[:n]


def read_video_crops(path: str | os.PathLike, layout: FrameLayout, max_frames: int | None = None) -> np.ndarray:
    """The layout's uint8 (T, 224, 224, 3) crops of the first `max_frames` 25-fps frames of a file (all
    if None): frames decoded at `layout.frame_size` and cropped by `layout.crop_frames`, 16 at a time."""
    size = layout.frame_size
    if size == "pyav":
        from sync_sdk.media.frame_picks import read_pyav_crops  # (it imports this module)
        return read_pyav_crops(path, layout.crop_frames, max_frames=max_frames)[0]
    with VideoDecoder(path, probe(path) if size == "short256" else None, size) as dec:
        crops, pending = [], []
        for frame in dec.frames(0, max_frames):
            pending.append(frame)
            if len(pending) == _CHUNK:
                crops.append(layout.crop_frames(np.stack(pending)))
                pending.clear()
        if pending or not crops:
            crops.append(layout.crop_frames(stack_frames(pending, dec.shape)))
    return np.concatenate(crops)


class VideoDecoder(Decoder):
    """25-fps RGB frames of the first video stream (not cover art) at size "short256" (needs the
    file's MediaInfo) or "native" (see the module docstring)."""

    kind = "video"

    def __init__(self, path, info: MediaInfo | None, size: str = "short256") -> None:
        if size not in FRAME_SIZES:
            raise ValueError(f"frame size must be one of {FRAME_SIZES}, got {size!r}")
        super().__init__(path)
        self.size = size
        self.stream = video_stream(self.container)
        if self.stream is None:
            raise NoVideoStreamError(f"{path} has no video stream; a video track is needed")
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = min(os.cpu_count() or 1, 8)
        if size == "native":
            self.shape = (self.stream.codec_context.height, self.stream.codec_context.width, 3)
            check_frame_size(path, self.shape[1], self.shape[0])
            return
        if not info.width or not info.height:
            raise MediaDecodeError(f"{path}: no frame of the video stream could be decoded")
        check_frame_size(path, info.width, info.height)
        self.rotation = info.rotation
        (self.scaled_h, self.scaled_w), (out_h, out_w) = target_size(info.height, info.width)
        self.shape = (out_h, out_w, 3)
        self._scaler, self._to_rgb = VideoReformatter(), VideoReformatter()

    def frames(self, first: int, stop: int | None) -> Iterator[np.ndarray]:
        """Frames first, first+1, ... (< stop) as (H, W, 3) uint8 arrays (do not keep views): "short256"
        slots of media time, or the fps filter's output frames ("native", from first = 0 only).

        "short256": scaling and RGB conversion run in a worker thread, a few frames ahead of the consumer,
        while this thread demuxes and the decoder's own threads decode (both release the GIL)."""
        if self.size == "native":
            if first != 0:
                raise ValueError("native frames are read from the start of the file (first = 0)")
            yield from self._filtered(stop)
            return
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

    def _filtered(self, stop: int | None) -> Iterator[np.ndarray]:
        """The first `stop` frames (all if None) of FFmpeg's fps=25,format=rgb24 fed from the first packet."""
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(template=self.stream), graph.add("fps", str(FPS)), graph.add("format", "rgb24"),
                 graph.add("buffersink")]
        for a, b in pairwise(nodes):
            a.link_to(b)
        graph.configure()
        n = 0
        for frame in chain(self._decoded(self.stream), [None]):  # None: end of stream, flushes the filter
            try:
                graph.push(frame)
            except av.error.FFmpegError as e:
                raise MediaDecodeError(f"{self.path}: FFmpeg's fps filter rejected a frame ({e})") from e
            while stop is None or n < stop:
                try:
                    out = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    break
                yield out.to_ndarray()
                n += 1
            if stop is not None and n >= stop:
                return

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
            slot = round_half_away(self._time(pts, self.stream) * FPS)
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
            if seek_sec <= 0:  # read from the start: the stream has nothing to show
                raise self.nothing_decoded()
            return
        if seek_sec <= 0 and self.stream.frames and n_decoded < self.stream.frames:
            self.log.missing = self.stream.frames - n_decoded  # read from the start to the end
        if end is None:  # no duration: one frame period of the stream's rate
            end_time = self._time(pts, self.stream) + 1 / Fraction(rate)
        else:
            end_time = self._time(end, self.stream)
        last = round_half_away(end_time * FPS)
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


def target_size(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((scaled_h, scaled_w), (out_h, out_w)) for displayed (height, width): the ffmpeg expressions
    iw*256/min(iw,ih) (double, truncated to int) then an even crop."""
    if not height or not width or height < 1 or width < 1:
        raise InvalidArrayError(f"frames of size {width}x{height} cannot be resized; need width, height >= 1")
    short = min(width, height)
    scaled_w, scaled_h = int(width * SHORT_SIDE / short), int(height * SHORT_SIDE / short)
    return (scaled_h, scaled_w), (scaled_h // 2 * 2, scaled_w // 2 * 2)


def check_frame_size(path, width: int, height: int) -> None:
    """UnsupportedMediaError for a file's frames of more than MAX_PIXELS or with sides more than MAX_ASPECT
    times apart: decoding or resizing them takes memory that only the header decides (checked before any
    frame is allocated; 0 = not known yet)."""
    if width <= 0 or height <= 0:
        return
    if width * height > MAX_PIXELS or max(width, height) > MAX_ASPECT * min(width, height):
        raise UnsupportedMediaError(f"{path}: the video frames are {width}x{height}; frames of at most "
                                    f"{MAX_PIXELS // 10 ** 6} Mpixels whose sides are at most {MAX_ASPECT} times "
                                    f"apart are supported")


def stack_frames(frames: list[np.ndarray], shape: tuple) -> np.ndarray:
    """(T, H, W, 3) uint8 from a list of (H, W, 3) frames; (0,) + shape when there are none."""
    return np.stack(frames) if frames else np.empty((0,) + tuple(shape), np.uint8)


def _frame_pts(frame, prev_pts: int | None, prev_end: int | None) -> int | None:
    """A decoded frame's pts; without one its dts, else the end of the previous frame."""
    if frame.pts is not None:
        return frame.pts
    if frame.dts is not None:
        return frame.dts
    return prev_end if prev_end is not None else prev_pts
