"""Crafted media for the fuzzer (media_fuzz.py): PyAV writers with chosen codecs, sizes and packet
timestamps, stream-copy remuxes with edited timestamps, and byte edits (bit flips, header fields).

Timestamps are edited per packet by a `Retime`: (index of the packet in its stream, its time in s) ->
its new pts in s (None: no timestamp). The dts is edited the same way, or with `dts_floor` (s) it is an
increasing run from there (1 ms or one tick a packet): muxers refuse a decreasing dts and a pts below
its dts, so edits that make pts non-monotonic give a floor below every pts.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Callable

import av
import numpy as np

from sync_sdk.geometry import FPS, SAMPLE_RATE

Retime = Callable[[int, float], float | None]
_AUDIO_CHUNK = 1024  # samples per audio frame handed to the encoder
_PIX_FMT = {"mjpeg": "yuvj420p", "rawvideo": "rgb24", "png": "rgb24", "gif": "rgb8"}
_BITEXACT = {"fflags": "+bitexact"}  # no random ids or version strings: the same bytes on every run
_FAST = {"libx264": {"preset": "ultrafast", "crf": "23"},  # (libvpx's realtime mode would depend on the load)
         "libvpx": {"deadline": "good", "cpu-used": "16", "threads": "1"}}


def write_av(path: str | Path, frames: np.ndarray | None, audio: np.ndarray | None, *, fmt: str | None = None,
             vcodec: str = "libx264", acodec: str = "aac", video_time: Retime | None = None,
             audio_time: Retime | None = None, dts_floor: float | None = None, options: dict | None = None,
             pix_fmt: str | None = None) -> Path:
    """Mux frames (T, H, W, 3) uint8 RGB at 25 fps and audio (N,) float32 mono at 16 kHz into `path`.
    None leaves a stream out; an empty array (T = 0 or N = 0) declares the stream without packets."""
    path = Path(path)
    with av.open(str(path), "w", format=fmt, options={**_BITEXACT, **(options or {})}) as box:
        if frames is not None:
            vs = box.add_stream(vcodec, rate=FPS)
            vs.height, vs.width = frames.shape[1:3]
            vs.pix_fmt = pix_fmt or _PIX_FMT.get(vcodec, "yuv420p")
            vs.options = dict(_FAST.get(vcodec, {}))
        if audio is not None:
            aus = box.add_stream(acodec, rate=SAMPLE_RATE, layout="mono")
        box.start_encoding()  # the header, even without packets
        if frames is not None:
            packets = [p for k, img in enumerate(frames) for p in vs.encode(_video_frame(img, k))]
            _mux(box, packets + list(vs.encode(None)) if len(frames) else [], video_time, dts_floor)
        if audio is not None:
            packets = [p for s in range(0, len(audio), _AUDIO_CHUNK) for p in aus.encode(_audio_frame(audio, s))]
            _mux(box, packets + list(aus.encode(None)) if len(audio) else [], audio_time, dts_floor)
    return path


def remux(src: str | Path, dst: str | Path, *, fmt: str | None = None, video_time: Retime | None = None,
          audio_time: Retime | None = None, dts_floor: float | None = None, drop: tuple[str, ...] = ()) -> Path:
    """Stream-copy the first video and audio stream of `src` into `dst` with edited timestamps; the
    streams of kinds in `drop` are declared but get no packets."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt, options=_BITEXACT) as out:
        pairs = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[:1] + inp.streams.audio[:1])}
        count = dict.fromkeys(pairs, 0)
        for packet in inp.demux(*[inp.streams[i] for i in pairs]):
            kind, i = packet.stream.type, packet.stream.index
            if packet.dts is None and packet.size == 0 or kind in drop:
                continue
            retime = video_time if kind == "video" else audio_time
            if retime is not None:
                _retime(packet, retime, count[i], dts_floor)
            count[i] += 1
            packet.stream = pairs[i]
            out.mux(packet)
    return Path(dst)


def flip_bits(data: bytearray, rng: np.random.Generator, lo: int, hi: int, n: int) -> None:
    """Flip n random bits of data[lo:hi]."""
    for pos in rng.integers(lo, max(lo + 1, hi), n):
        data[int(pos)] ^= 1 << int(rng.integers(8))


def mp4_box(data: bytes, fourcc: bytes) -> tuple[int, int] | None:
    """(start, end) of the first ISO-BMFF box `fourcc` (from its size field), None if absent."""
    k = data.find(fourcc)
    if k < 4:
        return None
    return k - 4, min(len(data), k - 4 + struct.unpack(">I", data[k - 4:k])[0])


def patch(data: bytearray, marker: bytes, offset: int, fmt: str, value, start: int = 0, nth: int | None = None,
          version0: bool = False) -> int:
    """Write struct.pack(fmt, value) at `offset` bytes after occurrences of `marker` in data[start:] (all,
    or only the nth); version0: only where the byte after the marker is 0 (an ISO-BMFF version 0 box).
    Returns how many fields were written."""
    field, done, k = struct.pack(fmt, value), 0, data.find(marker, start)
    seen = 0
    while k >= 0:
        if (nth is None or seen == nth) and not (version0 and data[k + len(marker)] != 0):
            data[k + offset:k + offset + len(field)] = field
            done += 1
        seen += 1
        k = data.find(marker, k + 1)
    return done


def mkv_patch(data: bytearray, element: bytes, fmt: str, value) -> int:
    """Set every Matroska `element` (ID + 1-byte size, e.g. PixelWidth b"\\xb0\\x82") after the Tracks
    element to value (struct fmt, big-endian, the size the element already has)."""
    tracks = data.find(b"\x16\x54\xae\x6b")
    return patch(data, element, len(element), fmt, value, start=max(tracks, 0))


def y4m(path: str | Path, frames: np.ndarray, header_size: str) -> Path:
    """A YUV4MPEG2 file of frames (T, H, W, 3) whose header declares `header_size` ("W.. H..")."""
    out = Path(path)
    tmp = out.with_suffix(".tmp.y4m")
    write_av(tmp, frames, None, fmt="yuv4mpegpipe", vcodec="rawvideo", pix_fmt="yuv420p")
    raw = tmp.read_bytes()
    tmp.unlink()
    end = raw.index(b"\n")
    out.write_bytes(re.sub(rb"W\d+ H\d+", header_size.encode(), raw[:end]) + raw[end:])
    return out


def _mux(box, packets: list, retime: Retime | None, dts_floor: float | None) -> None:
    for i, packet in enumerate(packets):
        if retime is not None:
            _retime(packet, retime, i, dts_floor)
        box.mux(packet)


def _retime(packet, retime: Retime, i: int, dts_floor: float | None) -> None:
    tb = packet.time_base
    pts = retime(i, float(packet.pts * tb) if packet.pts is not None else i / FPS)
    packet.pts = None if pts is None else round(pts / tb)
    if pts is None or packet.dts is None:
        packet.dts = None
    elif dts_floor is None:
        dts = retime(i, float(packet.dts * tb))
        packet.dts = None if dts is None else round(dts / tb)
    else:
        packet.dts = round((dts_floor + i * max(float(tb), 1e-3)) / tb)


def _video_frame(img: np.ndarray, k: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    frame.pts = k
    return frame


def _audio_frame(audio: np.ndarray, s: int) -> av.AudioFrame:
    chunk = np.ascontiguousarray(audio[None, s:s + _AUDIO_CHUNK], dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
    frame.sample_rate, frame.pts = SAMPLE_RATE, s
    return frame
