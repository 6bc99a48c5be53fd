"""Named video/audio presets: how frames become 224x224 model inputs outside the sync-model path.

Two presets (`PRESETS`):
- "synchformer": the official sync-model test transform (SPEC 1.3/1.6): frames with shortest side 256
  (media.read_clip), centre crop 224, fp16 lookup table (features.VIDEO_LUT).
- "av-benchmark": the DeSync / conditioning transform of hkchengrex/av-benchmark and MMAudio-style
  pipelines: frames decoded at 25 fps in their native size, shortest side resized to 224 (bicubic with
  antialiasing, torchvision/PIL weights: a = -0.5, support scaled by the downscale factor, width pass
  then height pass, clamp + round half-to-even to uint8), centre crop 224, float32 (u/255 - 0.5)/0.5.

Audio for av-benchmark: all channels averaged, resampled to 16 kHz with a windowed-sinc filter
equal to torchaudio's default `Resample` (Hann window, 6 zero crossings, rolloff 0.99).
Frames are uint8 RGB (T, H, W, 3); waves float32 (N,); everything NumPy, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sync_sdk.errors import InputError, MediaDecodeError, MediaNotFoundError, NoAudioStreamError, NoVideoStreamError

FPS = 25
SAMPLE_RATE = 16000
CROP = 224
_CHUNK = 16  # frames resized per call (bounds memory on large videos)


@dataclass(frozen=True)
class VideoPreset:
    """name; short_side: the shortest side frames are brought to before the 224 centre crop."""

    name: str
    short_side: int

    def crop_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) frames (already at `short_side` for "synchformer", any size for
        "av-benchmark") -> uint8 (T, 224, 224, 3) centre crops."""
        frames = _check_frames(frames)
        if self.name == "synchformer":
            return centre_crop(frames)
        return np.concatenate([resize_short_crop(frames[i:i + _CHUNK]) for i in range(0, len(frames), _CHUNK)]) \
            if len(frames) else np.zeros((0, CROP, CROP, 3), np.uint8)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (..., 224, 224, 3) -> float32 (..., 3, 224, 224) model input."""
        lut = _sync_lut() if self.name == "synchformer" else AV_BENCHMARK_LUT
        return np.moveaxis(lut[crops], -1, -3)


PRESETS = {"synchformer": VideoPreset("synchformer", 256), "av-benchmark": VideoPreset("av-benchmark", 224)}


def get_preset(name: str | VideoPreset) -> VideoPreset:
    if isinstance(name, VideoPreset):
        return name
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def _sync_lut() -> np.ndarray:
    from sync_sdk.inputs.cpu import VIDEO_LUT
    return VIDEO_LUT


# float32 (u / 255 - 0.5) / 0.5, as ToDtype(float32, scale=True) + Normalize(0.5, 0.5)
AV_BENCHMARK_LUT = ((np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(0.5))
                    / np.float32(0.5)).astype(np.float32)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
    return frames


# --- geometry ---------------------------------------------------------------------------------
def centre_crop(frames: np.ndarray, size: int = CROP) -> np.ndarray:
    """(..., H, W, C) -> (..., size, size, C); top/left = round((H - size)/2) (half-to-even)."""
    h, w = frames.shape[-3:-1]
    if h < size or w < size:
        raise InputError(f"frames of {h}x{w} are smaller than the {size}x{size} crop")
    top, left = round((h - size) / 2), round((w - size) / 2)
    return frames[..., top:top + size, left:left + size, :]


def resized_size(h: int, w: int, short: int = CROP) -> tuple[int, int]:
    """(new_h, new_w) with the shortest side = `short`, the other int(short * long / short_side)."""
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_aa_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased bicubic resampling taps: (index (out, K) int64, weight (out, K) float64), rows sum to 1.

    Output pixel i is centred at scale*(i + 0.5) input pixels (scale = in/out); when downscaling the
    kernel is stretched by `scale` (support 2*scale); taps outside the image are dropped and the rest
    renormalised (PIL / torch antialias=True)."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(out_size) + 0.5)
    lo = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), in_size)
    taps = int((hi - lo).max())
    j = np.arange(taps)
    idx = lo[:, None] + j[None, :]
    w = _cubic((idx - centre[:, None] + 0.5) * inv)
    w[idx >= hi[:, None]] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return np.minimum(idx, in_size - 1), w


def _resample_axis(x: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Apply taps along `axis` of float32 x; output length = len(idx)."""
    x = np.moveaxis(x, axis, -1)
    out = np.zeros(x.shape[:-1] + (len(idx),), np.float32)
    wk = w.astype(np.float32)
    for k in range(idx.shape[1]):
        out += x[..., idx[:, k]] * wk[:, k]
    return np.moveaxis(out, -1, axis)


def resize_short_crop(frames: np.ndarray, short: int = CROP, crop: int = CROP) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, crop, crop, 3): bicubic-antialias resize of the shortest side to
    `short` (width pass, then height pass, float32), clamp to [0, 255], round half-to-even, centre crop.
    Only the cropped output pixels are computed."""
    frames = _check_frames(frames)
    h, w = frames.shape[1:3]
    nh, nw = resized_size(h, w, short)
    top, left = round((nh - crop) / 2), round((nw - crop) / 2)
    x = frames.astype(np.float32)
    if nw != w:
        idx, wt = bicubic_aa_weights(w, nw)
        x = _resample_axis(x, 2, idx[left:left + crop], wt[left:left + crop])
    else:
        x = x[:, :, left:left + crop]
    if nh != h:
        idx, wt = bicubic_aa_weights(h, nh)
        x = _resample_axis(x, 1, idx[top:top + crop], wt[top:top + crop])
    else:
        x = x[:, top:top + crop]
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


# --- decoding ---------------------------------------------------------------------------------
def _open(path):
    import av
    path = Path(path)
    if not path.is_file():
        raise MediaNotFoundError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaDecodeError(f"{path}: cannot open as media ({e})") from e


def read_video_crops(path, preset: str | VideoPreset = "av-benchmark", max_frames: int | None = None) -> np.ndarray:
    """Decode `path` at 25 fps (FFmpeg fps filter, as torio/ffmpeg readers do), native size, RGB, and
    return the preset's uint8 (T, 224, 224, 3) crops of the first `max_frames` frames (all if None).

    "synchformer" first scales to shortest side 256 through media.read_clip."""
    import av
    preset = get_preset(preset)
    if preset.name == "synchformer":
        from sync_sdk.media import read_clip
        frames = read_clip(path, duration_sec=None if max_frames is None else max_frames / FPS).frames
        return preset.crop_frames(frames[:max_frames])
    out, pending = [], []

    def flush():
        if pending:
            out.append(resize_short_crop(np.stack(pending)))
            pending.clear()

    with _open(path) as box:
        if not box.streams.video:
            raise NoVideoStreamError(f"{path}: no video stream")
        stream = box.streams.video[0]
        graph = av.filter.Graph()
        src, fps, fmt, sink = (graph.add_buffer(template=stream), graph.add("fps", str(FPS)),
                               graph.add("format", "rgb24"), graph.add("buffersink"))
        src.link_to(fps)
        fps.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        n = 0

        def drain() -> bool:
            nonlocal n
            while max_frames is None or n < max_frames:
                try:
                    frame = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return False
                pending.append(frame.to_ndarray())
                n += 1
                if len(pending) == _CHUNK:
                    flush()
            return True

        try:
            for packet_frame in box.decode(stream):
                graph.push(packet_frame)
                if drain():
                    break
            else:
                graph.push(None)
                drain()
        except av.FFmpegError as e:
            raise MediaDecodeError(f"{path}: video decoding failed ({e})") from e
    flush()
    return np.concatenate(out) if out else np.zeros((0, CROP, CROP, 3), np.uint8)


def read_audio(path) -> tuple[np.ndarray, int]:
    """Whole audio track of `path`: (float32 (N,) mean over channels, sample rate)."""
    import av
    with _open(path) as box:
        if not box.streams.audio:
            raise NoAudioStreamError(f"{path}: no audio stream")
        stream = box.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks = []
        try:
            for frame in box.decode(stream):
                for f in resampler.resample(frame):
                    chunks.append(f.to_ndarray())
            for f in resampler.resample(None):
                chunks.append(f.to_ndarray())
        except av.FFmpegError as e:
            raise MediaDecodeError(f"{path}: audio decoding failed ({e})") from e
        rate = stream.codec_context.sample_rate or stream.rate
    if not chunks:
        raise MediaDecodeError(f"{path}: the audio stream holds no samples")
    wave = np.concatenate(chunks, axis=1).astype(np.float32)
    return wave.mean(axis=0).astype(np.float32), int(rate)


# --- resampling -------------------------------------------------------------------------------
def sinc_kernel(orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """Polyphase windowed-sinc kernel (new', 2*width + orig') for orig'/new' = reduced rates; width."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (-np.arange(new, dtype=np.float64) / new)[:, None] + idx[None, :]
    t = np.clip(t * base, -zeros, zeros)
    window = np.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    return (k * window * (base / orig)).astype(np.float32), width


def resample(wave: np.ndarray, orig: int, new: int = SAMPLE_RATE) -> np.ndarray:
    """float32 (N,) at `orig` Hz -> float32 (ceil(N * new / orig),) at `new` Hz (torchaudio's default
    sinc_interp_hann resampler)."""
    wave = np.asarray(wave, dtype=np.float32)
    if orig == new:
        return wave
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    kernel, width = sinc_kernel(orig, new)
    padded = np.pad(wave, (width, width + o))
    n_out = (len(padded) - kernel.shape[1]) // o + 1
    frames = np.lib.stride_tricks.as_strided(padded, (n_out, kernel.shape[1]),
                                             (padded.strides[0] * o, padded.strides[0]))
    out = (frames @ kernel.T).reshape(-1)
    return out[:math.ceil(n * len(wave) / o)].astype(np.float32)


def load_audio_16k(source) -> tuple[np.ndarray, float]:
    """Audio as av-benchmark reads it: (float32 (N,) mono at 16 kHz, duration in seconds of the
    original track). source: path | (wave (N,) or (N, C) float, sample_rate)."""
    if isinstance(source, (str, Path)):
        wave, rate = read_audio(source)
    else:
        wave, rate = source
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:
            wave = wave.mean(axis=1)
        if wave.ndim != 1:
            raise InputError(f"audio must be (N,) or (N, C), got shape {wave.shape}")
        rate = int(rate)
    if rate <= 0:
        raise InputError(f"sample rate must be positive, got {rate}")
    return resample(wave, rate, SAMPLE_RATE), len(wave) / rate
