"""The fuzz families of media_fuzz.py. Each is a stream of recipes (note, make): make(stem) writes one
file at stem + a suffix and returns its path. Hand-picked families end; the others go on with drawn
parameters (from the family's own generator, so the first k files of a family never depend on n)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from benchmarks.faults.crafted import Retime, flip_bits, mkv_patch, mp4_box, patch, remux, write_av, y4m
from sync_sdk.geometry import FPS

Make = Callable[[Path], Path]
Recipe = tuple[str, Make]
CONTAINERS = {  # suffix: (format, video codec, audio codec); none of the video codecs reorders frames
    ".mp4": ("mp4", "libx264", "aac"), ".mkv": ("matroska", "mpeg4", "libmp3lame"),
    ".avi": ("avi", "mjpeg", "pcm_s16le"), ".webm": ("webm", "libvpx", "libopus"), ".mov": ("mov", "mpeg4", "aac"),
    ".ts": ("mpegts", "libx264", "mp2"), ".nut": ("nut", "ffv1", "flac")}
TIMED = (".mkv", ".mp4", ".ts", ".mov")  # containers that store any pts per packet (the nut muxer aborts)
_AUDIO_STEP = 1024 / 16000  # s per audio packet (AAC)
_FLOOR = -10_000.0  # dts floor (s) for edits whose pts decrease


@dataclass
class Bases:
    """What the families damage: frames (T, H, W, 3) uint8 at 25 fps (`big`: the same at full size) and
    audio (N,) float32 at 16 kHz of a synthetic clip; base files by name (synthetic ones in several
    containers, then the real videos and their remuxes); real: the real videos' paths."""
    frames: np.ndarray
    audio: np.ndarray
    big: np.ndarray
    files: dict[str, Path]
    real: list[Path]


# ---------------------------------------------------------------------------- recipes' helpers
def _bytes(data: bytes | bytearray, suffix: str) -> Make:
    def make(stem: Path) -> Path:
        path = Path(f"{stem}{suffix}")
        path.write_bytes(bytes(data))
        return path
    return make


def _copy(src: Path) -> Make:
    """The bytes of `src` at stem + its suffix."""
    return lambda stem: _bytes(src.read_bytes(), src.suffix)(stem)


def _clip(suffix: str, frames: np.ndarray | None, audio: np.ndarray | None, **kw) -> Make:
    """write_av of frames and audio in the container of `suffix` (CONTAINERS; kw overrides)."""
    fmt, vcodec, acodec = CONTAINERS[suffix]
    kw = {"fmt": fmt, "vcodec": vcodec, "acodec": acodec, **kw}
    return lambda stem: write_av(Path(f"{stem}{suffix}"), frames, audio, **kw)


def _remuxed(src: Path, suffix: str, **kw) -> Make:
    return lambda stem: remux(src, Path(f"{stem}{suffix}"), **kw)


def _patched(make: Make, edit: Callable[[bytearray], int]) -> Make:
    """The file of `make`, then edited in place by edit(data), which must change something."""
    def patched(stem: Path) -> Path:
        path = make(stem)
        data = bytearray(path.read_bytes())
        if not edit(data):
            raise RuntimeError(f"{path}: the field to patch was not found")
        path.write_bytes(data)
        return path
    return patched


def _tiled(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """frames (T, H, W, 3) repeated or cut to (T, h, w, 3)."""
    return np.ascontiguousarray(frames[:, np.arange(h) % frames.shape[1]][:, :, np.arange(w) % frames.shape[2]])


def _png(img: np.ndarray) -> bytes:
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = img.shape[1], img.shape[0], "rgb24"
    return b"".join(bytes(p) for p in ctx.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))


def _folder(stem: Path) -> Path:
    path = Path(f"{stem}.mp4")
    path.mkdir(exist_ok=True)
    return path


def _counts(b: Bases, src: Path | None) -> tuple[int, int]:
    """(video packets, audio packets) of a base file, or of the synthetic clip (None)."""
    if src is None:
        return len(b.frames), len(b.audio) // 1024 + 2
    with av.open(str(src)) as box:
        n = {"video": 0, "audio": 0}
        for packet in box.demux(box.streams.video[0], box.streams.audio[0]):
            n[packet.stream.type] += packet.size > 0
    return n["video"], n["audio"]


def _shift(d: float) -> Retime:
    return lambda i, t: t + d


def _scale(k: float) -> Retime:
    return lambda i, t: t * k


def _jump(after: int, d: float) -> Retime:
    return lambda i, t: t + d if i >= after else t


def _by_index(idx: np.ndarray, step: float) -> Retime:
    """pts of packet i = idx[i] * step (s); packets past the array keep theirs."""
    return lambda i, t: float(idx[i]) * step if i < len(idx) else t


def _shuffled(rng: np.random.Generator, n: int, window: int) -> np.ndarray:
    """0..n-1 with each run of `window` indices shuffled."""
    idx = np.arange(n)
    for s in range(0, n, window):
        rng.shuffle(idx[s:s + window])
    return idx


# ---------------------------------------------------------------------------- families
def control(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """The undamaged bases (must give a result)."""
    for name, path in b.files.items():
        yield f"undamaged {name}", lambda stem, path=path: path


CUTS = (0, 1, 16, 512, 0.02, 0.25, 0.5, 0.75, 0.9, 0.98, 0.999)  # bytes (int) or fractions of the size


def truncate(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """A base cut short: the CUTS twice, then at drawn fractions."""
    files = list(b.files.values())
    for k in count():
        f = files[k % len(files)]
        data = f.read_bytes()
        cut = CUTS[k % len(CUTS)] if k < 2 * len(CUTS) else float(rng.uniform(0.005, 0.999))
        size = cut if isinstance(cut, int) else int(len(data) * cut)
        yield f"{f.name} cut to {size} of {len(data)} bytes", _bytes(data[:size], f.suffix)


def header_bitflip(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """1-8 bits flipped in the first 4 KiB of a base, or (mp4 / mov) in its moov box."""
    files = list(b.files.values())
    for k in count():
        f = files[k % len(files)]
        data = bytearray(f.read_bytes())
        regions = [(0, min(len(data), 4096))]
        moov = mp4_box(data, b"moov") if f.suffix in (".mp4", ".mov") else None
        regions += [moov] if moov else []
        lo, hi = regions[k // len(files) % len(regions)]
        n = int(rng.integers(1, 9))
        flip_bits(data, rng, lo, hi, n)
        yield f"{f.name}: {n} bit(s) flipped in bytes {lo}-{hi}", _bytes(data, f.suffix)


def payload_bitflip(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """Past the header (and before an mp4's trailing moov): 1-64 bits flipped, or a run of 16 B - 4 KiB
    overwritten with random bytes or zeros."""
    files = list(b.files.values())
    for k in count():
        f = files[k % len(files)]
        data = bytearray(f.read_bytes())
        lo = min(4096, len(data) // 4)
        moov = mp4_box(data, b"moov")
        hi = moov[0] if moov and moov[0] > lo + 4096 else len(data)
        mode = ("bits", "random", "zeros")[k // len(files) % 3]
        if mode == "bits":
            n = int(rng.integers(1, 65))
            flip_bits(data, rng, lo, hi, n)
        else:
            n = int(rng.integers(16, 4097))
            at = int(rng.integers(lo, max(lo + 1, hi - n)))
            data[at:at + n] = rng.bytes(n) if mode == "random" else bytes(n)
        yield f"{f.name}: {mode} x{n} in bytes {lo}-{hi}", _bytes(data, f.suffix)


def swapped_container(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """One format's bytes under another's name, splices, audio / image formats, junk and non-files."""
    mp4, mkv = b.files["synthetic.mp4"].read_bytes(), b.files["synthetic.mkv"].read_bytes()
    for suffix in (".mkv", ".wav", ".mp3", ".avi", ".webm", ".png", ".txt", ""):
        yield f"mp4 bytes named '{suffix}'", _bytes(mp4, suffix)
    for name, suffix in (("synthetic.mkv", ".mp4"), ("synthetic.avi", ".mov"), ("synthetic.ts", ".mp4"),
                         ("synthetic.webm", ".avi"), ("synthetic.nut", ".mkv"), ("synthetic.mov", ".ts")):
        yield f"{name} named '{suffix}'", _bytes(b.files[name].read_bytes(), suffix)
    for path in b.real:
        yield f"{path.name} named '.wav'", _bytes(path.read_bytes(), ".wav")
    yield "wav (audio only) named .mp4", lambda stem: write_av(f"{stem}.mp4", None, b.audio, fmt="wav",
                                                               acodec="pcm_s16le")
    yield "mp3 (audio only) named .mkv", lambda stem: write_av(f"{stem}.mkv", None, b.audio, fmt="mp3",
                                                               acodec="libmp3lame")
    yield "gif animation (no audio) named .mp4", lambda stem: write_av(f"{stem}.mp4", b.frames[:50], None,
                                                                       fmt="gif", vcodec="gif")
    yield "png image named .mp4", _bytes(_png(b.frames[0]), ".mp4")
    yield "y4m (raw video only) named .mp4", lambda stem: y4m(f"{stem}.mp4", b.frames[:10], "W160 H128")
    yield "64 KiB of random bytes named .mp4", _bytes(rng.bytes(65536), ".mp4")
    yield "a text file named .mp4", _bytes(b"not a video\n" * 10, ".mp4")
    yield "an empty file named .mkv", _bytes(b"", ".mkv")
    yield "a folder named .mp4", _folder
    yield "mp4 header + mkv body", _bytes(mp4[:4096] + mkv[4096:], ".mp4")
    yield "mkv + mp4 concatenated, named .mkv", _bytes(mkv + mp4, ".mkv")
    yield "mp4 twice", _bytes(mp4 + mp4, ".mp4")


def zero_length_stream(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """Streams declared without packets, missing streams, one-frame and one-sample streams."""
    for suffix in (".mp4", ".mkv", ".avi", ".nut", ".mov", ".ts"):
        for what, frames, audio in (("video", b.frames[:0], b.audio), ("audio", b.frames, b.audio[:0]),
                                    ("both", b.frames[:0], b.audio[:0])):
            yield f"{suffix}: {what} stream(s) without packets", _clip(suffix, frames, audio)
    yield "mp4 without an audio stream", _clip(".mp4", b.frames, None)
    yield "mp4 without a video stream", _clip(".mp4", None, b.audio)
    yield "one video frame", _clip(".mkv", b.frames[:1], b.audio)
    yield "one audio packet", _clip(".mkv", b.frames, b.audio[:1024])
    yield "one audio sample", _clip(".nut", b.frames, b.audio[:1])
    for src in [b.files["synthetic.mp4"], *b.real]:
        for kind in ("video", "audio"):
            yield f"{src.name} remuxed without {kind} packets", _remuxed(src, ".mkv", drop=(kind,))


def absurd_dimensions(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """Extreme frame sizes (the data has them), and headers declaring sizes the data does not have (avi strf, mkv
    PixelWidth / PixelHeight, mp4 tkhd / avc1, JPEG SOF, y4m)."""
    for w, h in ((16384, 2), (2, 16384), (1, 1), (2, 2), (7, 3), (8192, 8), (3, 4096)):
        codec = "ffv1" if w % 2 == h % 2 == 0 and w >= h else "rawvideo"  # what this ffv1 encoder takes
        yield f"{codec} frames of {w}x{h}", _clip(".nut", _tiled(b.frames, h, w), b.audio, vcodec=codec)
    raw = _clip(".avi", b.frames[:, :48, :64], b.audio, vcodec="rawvideo")
    for w, h in ((60000, 60000), (60000, 1), (1, -60000), (0, 0), (-64, 48), (2 ** 31 - 1, 2 ** 31 - 1)):
        yield f"avi rawvideo 64x48 declared {w}x{h}", _patched(raw, lambda d, w=w, h=h: (
            patch(d, b"strf", 12, "<i", w, nth=0) + patch(d, b"strf", 16, "<i", h, nth=0)))
    ffv1 = _clip(".mkv", b.big[:40], b.audio, vcodec="ffv1", acodec="flac")
    for w, h in ((60000, 60000), (16000, 16000), (65535, 2), (2, 65535), (0, 0)):
        yield f"mkv ffv1 320x256 declared {w}x{h}", _patched(ffv1, lambda d, w=w, h=h: (
            mkv_patch(d, b"\xb0\x82", ">H", w) + mkv_patch(d, b"\xba\x82", ">H", h)))
    mp4 = b.files["synthetic.mp4"]
    for where, edit in (("tkhd", lambda d: patch(d, b"tkhd", 80, ">I", 60000 << 16, version0=True)
                         + patch(d, b"tkhd", 84, ">I", 60000 << 16, version0=True)),
                        ("avc1", lambda d: patch(d, b"avc1", 28, ">H", 65535) + patch(d, b"avc1", 30, ">H", 65535)),
                        ("avc1 0x0", lambda d: patch(d, b"avc1", 28, ">H", 0) + patch(d, b"avc1", 30, ">H", 0))):
        yield f"mp4 {where} size 60000-65535 (or 0)", _patched(_copy(mp4), edit)
    mjpeg = b.files["synthetic.avi"]
    for w, h in ((65535, 65535), (16000, 16000), (1, 65535), (0, 0), (60000, 8)):
        yield f"mjpeg SOF0 declares {w}x{h}", _patched(_copy(mjpeg), lambda d, w=w, h=h: (
            patch(d, b"\xff\xc0", 5, ">H", h) + patch(d, b"\xff\xc0", 7, ">H", w)))
    for size in ("W60000 H60000", "W0 H0", "W16384 H2", "W-5 H9"):
        yield f"y4m declaring {size}", lambda stem, size=size: y4m(f"{stem}.y4m", b.frames[:10], size)


def absurd_audio_format(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """Audio headers with sample rates 0 / 1 / 1e9 / NaN / inf / negative and channel counts 0 / 255 / 1000."""
    pcm = _clip(".mkv", b.frames, b.audio, acodec="pcm_s16le")
    for rate in (0.0, 1.0, 1e9, math.nan, -16000.0, math.inf, 1e-300):
        yield f"mkv pcm sample rate {rate}", _patched(pcm, lambda d, r=rate: mkv_patch(d, b"\xb5\x88", ">d", r))
    for n in (0, 255):
        yield f"mkv pcm {n} channels", _patched(pcm, lambda d, n=n: mkv_patch(d, b"\x9f\x81", ">B", n))
    avi = b.files["synthetic.avi"]
    for what, at, fmt, value in (("rate", 12, "<I", 0), ("rate", 12, "<I", 1), ("rate", 12, "<I", 2 ** 32 - 1),
                                 ("channels", 10, "<H", 0), ("channels", 10, "<H", 1000), ("block align", 20, "<H", 0)):
        yield f"avi pcm {what} {value}", _patched(_copy(avi), lambda d, at=at, fmt=fmt, v=value: (
            patch(d, b"strf", at, fmt, v, nth=1)))


TIME_EDITS = (  # (note, video Retime, audio Retime, dts floor)
    ("both streams start at +1e6 s", _shift(1e6), _shift(1e6), None),
    ("both streams start at +2^40 s", _shift(2.0 ** 40), _shift(2.0 ** 40), None),
    ("video starts at +1e6 s", _shift(1e6), None, None),
    ("audio starts at +1e6 s", None, _shift(1e6), None),
    ("both streams start at -1000 s", _shift(-1000), _shift(-1000), None),
    ("video starts at -3 s", _shift(-3), None, None),
    ("audio starts 3 s late", None, _shift(3), None),
    ("video jumps +1e6 s after 2 s", _jump(50, 1e6), None, None),
    ("audio jumps +1e6 s after 2 s", None, _jump(31, 1e6), None),
    ("video stretched x1000", _scale(1000), None, None),
    ("both stretched x1000", _scale(1000), _scale(1000), None),
    ("both squeezed x0.001", _scale(1e-3), _scale(1e-3), None),
    ("every video pts 1.0 s", lambda i, t: 1.0, None, _FLOOR),
    ("no video timestamps", lambda i, t: None, None, None),
    ("no audio timestamps", None, lambda i, t: None, None))
MP4_TIME_FIELDS = (  # (note, box, offset after the fourcc, struct format, value)
    ("mdhd timescale 1", b"mdhd", 16, ">I", 1), ("mdhd timescale 0", b"mdhd", 16, ">I", 0),
    ("mdhd timescale 2^32-1", b"mdhd", 16, ">I", 2 ** 32 - 1), ("mdhd duration 2^32-1", b"mdhd", 20, ">I", 2 ** 32 - 1),
    ("mvhd duration 0", b"mvhd", 20, ">I", 0), ("mvhd timescale 0", b"mvhd", 16, ">I", 0),
    ("tkhd duration 2^32-1", b"tkhd", 24, ">I", 2 ** 32 - 1), ("stts delta 0", b"stts", 16, ">I", 0),
    ("stts delta 2^31-1", b"stts", 16, ">I", 2 ** 31 - 1), ("stts entries 2^32-1", b"stts", 8, ">I", 2 ** 32 - 1))
MKV_TIME_FIELDS = (  # (note, element, struct format, value)
    ("mkv TimestampScale 1 ns", b"\x2a\xd7\xb1\x83", "3s", (1).to_bytes(3, "big")),
    ("mkv TimestampScale 16.7 ms", b"\x2a\xd7\xb1\x83", "3s", b"\xff\xff\xff"),
    ("mkv TimestampScale 0", b"\x2a\xd7\xb1\x83", "3s", bytes(3)),
    ("mkv Duration 1e300", b"\x44\x89\x88", ">d", 1e300), ("mkv Duration NaN", b"\x44\x89\x88", ">d", math.nan),
    ("mkv Duration -5", b"\x44\x89\x88", ">d", -5.0))


def absurd_timestamps(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """TIME_EDITS on the synthetic clip (containers in turn) and on remuxed real videos, mp4 / mkv time
    fields, then drawn shifts, stretches and jumps."""
    for k, (note, v, a, floor) in enumerate(TIME_EDITS):
        suffix = TIMED[k % len(TIMED)]
        yield f"{suffix}: {note}", _clip(suffix, b.frames, b.audio, video_time=v, audio_time=a, dts_floor=floor)
    for k, path in enumerate(b.real):
        for note, v, a, floor in TIME_EDITS[:-2][k::4]:  # not without pts: their B-frames need them
            yield f"{path.name} remuxed: {note}", _remuxed(path, ".mkv", video_time=v, audio_time=a, dts_floor=floor)
    mp4, mkv = b.files["synthetic.mp4"], b.files["synthetic.mkv"]
    for note, box, at, fmt, value in MP4_TIME_FIELDS:
        yield note, _patched(_copy(mp4), lambda d, box=box, at=at, fmt=fmt, v=value: (
            patch(d, box, at, fmt, v, version0=True)))
    for note, element, fmt, value in MKV_TIME_FIELDS:
        yield note, _patched(_copy(mkv), lambda d, e=element, fmt=fmt, v=value: patch(d, e, len(e), fmt, v))
    for k in count():
        kind = ("shift", "stretch", "jump")[k % 3]
        size = float(10 ** rng.uniform(-3, 9))
        edit = {"shift": _shift(size * rng.choice([-1, 1])), "stretch": _scale(size),
                "jump": _jump(int(rng.integers(1, 140)), size)}[kind]
        which = ("video", "audio", "both")[int(rng.integers(3))]
        v, a = (edit if which != "audio" else None), (edit if which != "video" else None)
        suffix = TIMED[int(rng.integers(len(TIMED)))]
        yield (f"{suffix}: {which} {kind} {size:.3g}",
               _clip(suffix, b.frames, b.audio, video_time=v, audio_time=a, dts_floor=_FLOOR))


def non_monotonic_pts(b: Bases, rng: np.random.Generator) -> Iterator[Recipe]:
    """Shuffled, reversed, swapped, restarting and duplicated pts of video, audio or both (the dts stays
    increasing), on the synthetic clip (containers in turn) and remuxed real videos, then drawn shuffles."""
    n_v, n_a = _counts(b, None)
    orders = (("shuffled", lambda n: rng.permutation(n)), ("reversed", lambda n: np.arange(n)[::-1]),
              ("swapped in pairs", lambda n: np.arange(n) ^ 1), ("restarting halfway", lambda n: np.arange(n) % (n // 2)),
              ("duplicated", lambda n: np.arange(n) // 2 * 2), ("shuffled within 8", lambda n: _shuffled(rng, n, 8)))
    k = 0
    for which in ("video", "audio", "both"):
        for note, order in orders:
            v = _by_index(order(n_v), 1 / FPS) if which != "audio" else None
            a = _by_index(order(n_a), _AUDIO_STEP) if which != "video" else None
            suffix, k = TIMED[k % len(TIMED)], k + 1
            yield f"{suffix}: {which} pts {note}", _clip(suffix, b.frames, b.audio, video_time=v, audio_time=a,
                                                         dts_floor=_FLOOR)
    for path in b.real:
        rv, ra = _counts(b, path)
        for note, order in orders[::2]:
            yield (f"{path.name} remuxed: video and audio pts {note}",
                   _remuxed(path, ".mkv", video_time=_by_index(order(rv), 1 / FPS),
                            audio_time=_by_index(order(ra), _AUDIO_STEP), dts_floor=_FLOOR))
    while True:
        window = int(rng.integers(2, n_v + 1))
        which = ("video", "audio", "both")[int(rng.integers(3))]
        v = _by_index(_shuffled(rng, n_v, window), 1 / FPS) if which != "audio" else None
        a = _by_index(_shuffled(rng, n_a, window), _AUDIO_STEP) if which != "video" else None
        suffix = TIMED[int(rng.integers(len(TIMED)))]
        yield f"{suffix}: {which} pts shuffled within {window}", _clip(suffix, b.frames, b.audio, video_time=v,
                                                                       audio_time=a, dts_floor=_FLOOR)


FAMILIES = {f.__name__: f for f in (control, truncate, header_bitflip, payload_bitflip, swapped_container,
                                    zero_length_stream, absurd_dimensions, absurd_audio_format, absurd_timestamps,
                                    non_monotonic_pts)}
