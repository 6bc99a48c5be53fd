"""Which frame each 25-fps slot shows in the PyAV loop of MMAudio and HunyuanVideo-Foley (the "pyav"
frames), for files and frames in memory (FFmpeg's fps filter, the other rule, is decode.pick_fps_filter).

PyAV loop (`pick_next`, `read_pyav_crops`): MMAudio (mmaudio/data/av_utils.py `read_frames`, behind
eval_utils.load_video) and HunyuanVideo-Foley (hunyuanvideo_foley/utils/feature_utils.py `get_frames_av`)
decode every frame of the video stream and keep a slot time that starts at 0.0 and grows by 1/25
(float64, one addition per slot): a decoded frame whose time is at or past the slot time fills that slot,
and the next ones while it still is. So slot k shows the first frame whose time >= the k-th sum. Frame
time: PyAV's `frame.time` (pts x time base, no start-time origin); frames before 0 s or after `end_sec`
are left out (a frame without a timestamp too). RGB: `frame.to_ndarray(format="rgb24")`, coded size.
The sums drift from k/25 (0.04 added six times exceeds 0.24), so on a 25-fps file slot 6 shows frame 7,
and slots 18-205 (0.72-8.2 s) show the next frame (40 ms late), as those projects' frames do. Any other
rate goes through the same rule (30 fps: each slot shows the first frame at or after it).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

import numpy as np

from sync_sdk.errors import NoVideoStreamError
from sync_sdk.geometry import FPS
from sync_sdk.media.container import Decoder, video_stream
from sync_sdk.media.video import check_frame_size, stack_frames

_CHUNK = 16  # frames handed to the crop at a time (bounds memory on large frames)


def slot_times(rate: float = FPS) -> Iterator[float]:
    """0.0, 1/rate, 2/rate, ... (s) as the projects make them: a float64 sum, one addition per slot."""
    t, step = 0.0, 1 / rate
    while True:
        yield t
        t += step


def count_slots(last_time: float | None, rate: float = FPS) -> int:
    """Slots filled once a frame at `last_time` (s, the latest frame kept) has been seen: the sums <= it."""
    if last_time is None:
        return 0
    n = 0
    for t in slot_times(rate):
        if t > last_time:
            return n
        n += 1


def pick_next(times: Iterable[float | None], rate: float = FPS, end_sec: float | None = None) -> list[int]:
    """Index into `times` (s, one per frame in decode order) of the frame each slot shows: slot k, the
    first frame whose time >= the k-th sum (`slot_times`), among frames with 0 <= time <= end_sec."""
    picked: list[int] = []
    slots = slot_times(rate)
    nxt = next(slots)
    for i, t in enumerate(times):
        if t is None or t < 0 or (end_sec is not None and t > end_sec):
            continue
        while t >= nxt:
            picked.append(i)
            nxt = next(slots)
    return picked


class PyavFrames(Decoder):
    """The "pyav" slots of a file's first video stream (not cover art), read from its start."""

    kind = "video"

    def __init__(self, path) -> None:
        super().__init__(path)
        self.stream = video_stream(self.container)
        if self.stream is None:
            raise NoVideoStreamError(f"{path} has no video stream; a video track is needed")
        self.stream.thread_type = "AUTO"
        self.shape = (self.stream.codec_context.height, self.stream.codec_context.width, 3)
        check_frame_size(path, self.shape[1], self.shape[0])
        self.last_time: float | None = None  # time (s) of the latest frame kept

    def frames(self, end_sec: float | None = None, stop: int | None = None) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB of slots 0, 1, ... (< stop). Reading ends at the first frame after `end_sec`
        (the projects read on but keep no later frame: the same frames unless timestamps go backwards).
        No frame in [0, end_sec] gives no slot; a stream that decodes nothing raises MediaDecodeError."""
        slots = slot_times()
        nxt, n = next(slots), 0
        for frame in self._decoded(self.stream):
            t = frame.time
            if t is None or t < 0:
                continue
            if (end_sec is not None and t > end_sec) or (stop is not None and n >= stop):
                break
            self.last_time = t if self.last_time is None else max(self.last_time, t)
            rgb = None
            while t >= nxt and (stop is None or n < stop):
                rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
                yield rgb
                n, nxt = n + 1, next(slots)
        if self.last_time is None and not self.log.decoded:
            raise self.nothing_decoded()


def read_pyav_crops(path: str | os.PathLike, crop: Callable[[np.ndarray], np.ndarray], end_sec: float | None = None,
                    max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """(crop(frames) of the file's "pyav" slots up to `end_sec` / `max_frames`, the time (s) of the latest
    frame kept). Frames go to `crop` as uint8 (n, H, W, 3), 16 at a time. Raises NoVideoStreamError,
    MediaDecodeError (nothing decodable), UnsupportedMediaError (huge frames)."""
    with PyavFrames(path) as dec:
        crops, pending = [], []
        for frame in dec.frames(end_sec, max_frames):
            pending.append(frame)
            if len(pending) == _CHUNK:
                crops.append(crop(np.stack(pending)))
                pending.clear()
        if pending or not crops:
            crops.append(crop(stack_frames(pending, dec.shape)))
    return np.concatenate(crops), dec.last_time
