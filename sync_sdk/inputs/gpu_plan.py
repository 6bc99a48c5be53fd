"""Host side of the GPU feature kernels, in NumPy only (no CuPy): what `gpu.py` computes before a launch.

- launch geometry (`grid_1d`);
- the tables the kernels read: the zero-padded STFT window, the packed mel bands, the bicubic resize
  taps, the centre-crop offsets, the frame and sample spans to upload;
- the device/pinned buffer plan (`plan_buffers`): every buffer of a `GpuFeatures` carved out of one slab;
- NumPy emulations of `kernels/logmel.cu` and `kernels/frames.cu` that use the same tables and the same
  index arithmetic as the kernels, so the kernels' logic is checked on CPU against `inputs/cpu.py`, and
  the GPU results are checked against these on a GPU.

Units: samples at 16 kHz, frames at 25 fps, pixels; arrays are C-contiguous.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sync_sdk.geometry import CROP_SIZE, N_MELS, SEG_FRAMES, SEG_SAMPLES, SPEC_FRAMES
from sync_sdk.inputs.cpu import AST_MEAN, AST_STD, HOP_LENGTH, LOG_EPS, N_FFT, N_FRAMES
from sync_sdk.media import SHORT_SIDE

# Audio (SPEC 1.7): the log-mel constants of inputs/cpu.py; video: shortest side 256, centre crop 224.
N_BINS = N_FFT // 2 + 1                     # 513 one-sided bins

PIXELS_PER_THREAD = 4                       # crop kernel: 4 adjacent pixels of one row per thread

BLOCK = 256                                 # threads per block of the grid-stride kernels
MAX_BLOCKS = 8192                           # grid-stride cap (H100: 132 SMs x 8 blocks x several waves)
ALIGN = 256                                 # byte alignment of every buffer carved from a slab


def grid_1d(n_items: int, block: int = BLOCK, max_blocks: int = MAX_BLOCKS) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for a grid-stride loop over `n_items` (at least one block)."""
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    blocks = max(1, min(max_blocks, -(-n_items // block)))
    return (blocks,), (block,)


# --------------------------------------------------------------------------------------------- audio
def padded_window(window: np.ndarray, n_fft: int = N_FFT) -> tuple[np.ndarray, int, int]:
    """Window (win_length,) zero-padded centred to n_fft as torch.stft does -> (window (n_fft,), lo, hi).

    Taps outside [lo, hi) are zero: the framing kernel writes 0 there without reading the signal.
    """
    window = np.asarray(window, dtype=np.float32)
    lo = (n_fft - window.shape[0]) // 2
    out = np.zeros(n_fft, np.float32)
    out[lo:lo + window.shape[0]] = window
    return out, lo, lo + window.shape[0]


def reflect_index(j: np.ndarray, n: int) -> np.ndarray:
    """Index into a length-n signal of position j of its reflect-padded version (pad < n), as the kernel.

    `if (j < 0) j = -j; if (j >= n) j = 2 * (n - 1) - j;`  (numpy.pad mode 'reflect', no edge repeat).
    """
    j = np.abs(j)
    return np.where(j >= n, 2 * (n - 1) - j, j)


def stft_source_index(seg_len: int = SEG_SAMPLES, n_frames: int = N_FRAMES, n_fft: int = N_FFT,
                      hop: int = HOP_LENGTH) -> np.ndarray:
    """(n_frames, n_fft) sample index read for tap t of frame k: reflect(k*hop + t - n_fft/2, seg_len)."""
    if n_fft // 2 >= seg_len:
        raise ValueError(f"reflect padding of {n_fft // 2} needs segments longer than that, got {seg_len}")
    j = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :] - n_fft // 2
    return reflect_index(j, seg_len)


@dataclass(frozen=True)
class MelBands:
    """The mel filterbank packed by band: band m sums weights[offset[m] + i] * power[lo[m] + i], i < length[m]."""

    lo: np.ndarray        # (n_mels,) int32 first bin
    length: np.ndarray    # (n_mels,) int32 number of bins
    offset: np.ndarray    # (n_mels,) int32 start of the band's weights in `weights`
    weights: np.ndarray   # (sum(length),) float32


def mel_band_table(fbanks: np.ndarray) -> MelBands:
    """Pack fbanks (n_bins, n_mels) float32 by band: each band keeps its bins from first to last non-zero."""
    fbanks = np.asarray(fbanks, dtype=np.float32)
    lo, length, chunks = [], [], []
    for m in range(fbanks.shape[1]):
        nz = np.flatnonzero(fbanks[:, m])
        first, last = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        lo.append(first)
        length.append(last - first)
        chunks.append(fbanks[first:last, m])
    length_arr = np.asarray(length, np.int32)
    offset = np.concatenate([[0], np.cumsum(length_arr)[:-1]]).astype(np.int32)
    weights = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return MelBands(np.asarray(lo, np.int32), length_arr, offset, weights)


def segment_starts(starts, seg_len: int, n_available: int) -> np.ndarray:
    """Validated (n,) int64 first sample/frame of each segment inside a source of n_available items."""
    s = np.asarray(starts, dtype=np.int64).reshape(-1)
    if s.size and (s.min() < 0 or s.max() + seg_len > n_available):
        raise ValueError(f"segments [{s.min()}, {s.max() + seg_len}) do not fit a source of {n_available}")
    return s


def upload_span(starts: np.ndarray, seg_len: int) -> tuple[int, int]:
    """[lo, hi) of the source that covers every segment (the only part that is uploaded)."""
    if starts.size == 0:
        return 0, 0
    return int(starts.min()), int(starts.max()) + seg_len


def emulate_log_mel(pcm: np.ndarray, starts: np.ndarray, window: np.ndarray, fbanks: np.ndarray) -> np.ndarray:
    """NumPy twin of logmel.cu: segments pcm[s:s+10240] -> (n, 1, 128, 66) float32 normalised log-mel.

    Same steps as the kernels: framing by `stft_source_index` times the padded window (float32), a real
    FFT, |X|^2 in float32, band sums from `mel_band_table` in float32, log(x + 1e-6), pad to 66 frames
    with 0.0, then (x - mean) / (2 std).
    """
    win, _, _ = padded_window(window)
    idx = stft_source_index()
    bands = mel_band_table(fbanks)
    pcm = np.asarray(pcm, dtype=np.float32)
    out = np.zeros((len(starts), 1, N_MELS, SPEC_FRAMES), np.float32)
    for n, s in enumerate(np.asarray(starts, dtype=np.int64)):
        frames = pcm[s + idx] * win                                       # (65, 1024) float32
        spec = np.fft.rfft(frames.astype(np.float64), axis=-1).astype(np.complex64)
        power = spec.real * spec.real + spec.imag * spec.imag             # float32
        mel = np.zeros((N_FRAMES, N_MELS), np.float32)
        for m in range(N_MELS):
            lo, ln, off = bands.lo[m], bands.length[m], bands.offset[m]
            mel[:, m] = power[:, lo:lo + ln] @ bands.weights[off:off + ln]
        logmel = np.zeros((N_MELS, SPEC_FRAMES), np.float32)
        k = min(N_FRAMES, SPEC_FRAMES)
        logmel[:, :k] = np.log(mel[:k].T + np.float32(LOG_EPS))
        out[n, 0] = (logmel - np.float32(AST_MEAN)) / (np.float32(AST_STD) * np.float32(2.0))
    return out


# --------------------------------------------------------------------------------------------- video
def centre_crop_offsets(h: int, w: int, size: int = CROP_SIZE) -> tuple[int, int]:
    """(top, left) of the official centre crop: round((H - size) / 2) with Python's half-to-even round."""
    if h < size or w < size:
        raise ValueError(f"frames of {h}x{w} are smaller than the {size}x{size} crop")
    return round((h - size) / 2), round((w - size) / 2)


def resized_shape(h: int, w: int, short: int = SHORT_SIDE) -> tuple[tuple[int, int], tuple[int, int]]:
    """((scaled_h, scaled_w), (out_h, out_w)) as media.py sizes frames (the official ffmpeg expressions):
    each side times short / min(h, w) in double, truncated to int; then the top-left even crop."""
    if min(h, w) <= 0:
        raise ValueError(f"frame size must be positive, got {h}x{w}")
    sh, sw = int(h * short / min(h, w)), int(w * short / min(h, w))
    return (sh, sw), (sh // 2 * 2, sw // 2 * 2)


BICUBIC_A = -0.6  # swscale's default bicubic (B = 0, C = 0.6): Keys' cubic with a = -C


def _keys_cubic(x: np.ndarray, a: float = BICUBIC_A) -> np.ndarray:
    x = np.abs(x)
    near = (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    far = a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@dataclass(frozen=True)
class ResizeTaps:
    """Taps of out[i] = sum_k weight[i, k] * in[first[i] + k], k < count[i]."""

    first: np.ndarray     # (n,) int32
    count: np.ndarray     # (n,) int32
    weight: np.ndarray    # (n, taps) float32, zero past count


def resize_taps(in_size: int, out_size: int, lo: int = 0, n: int | None = None) -> ResizeTaps:
    """Bicubic taps for output positions [lo, lo+n) of a 1-D resize in_size -> out_size.

    Keys' cubic with a = -0.6 (swscale's default bicubic), half-pixel centres (centre of output i =
    scale * (i + 0.5) with scale = in / out), stretched by the scale when downscaling (support
    2 * max(scale, 1): antialiased, as swscale widens its filter), clipped to the image and
    normalised to sum 1; zero taps at either end are dropped (identity sizes give one tap of 1).
    On CPU this equals PyAV/swscale's bicubic RGB resize (media.py) to within one level for upscales
    and mild downscales; for large downscales (e.g. 720p -> 256) swscale's fixed-point vertical pass
    differs by a few levels on sharp edges.
    """
    n = out_size - lo if n is None else n
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    firsts, counts, rows = [], [], []
    for i in range(lo, lo + n):
        centre = scale * (i + 0.5)
        first = max(int(np.floor(centre - 2 * stretch)), 0)
        stop = min(int(np.ceil(centre + 2 * stretch)), in_size)
        w = _keys_cubic((np.arange(first, stop) + 0.5 - centre) / stretch)
        nz = np.flatnonzero(w)
        w = w[nz[0]:nz[-1] + 1]
        firsts.append(first + int(nz[0]))
        counts.append(w.size)
        rows.append(w / w.sum())
    taps = max(counts) if counts else 0
    weight = np.zeros((n, taps), np.float32)
    for i, r in enumerate(rows):
        weight[i, :len(r)] = r
    return ResizeTaps(np.asarray(firsts, np.int32), np.asarray(counts, np.int32), weight)


@dataclass(frozen=True)
class FrameGeometry:
    """Where the 224x224 crop comes from in frames of h x w: straight (resize None) or through a resize."""

    h: int
    w: int
    top: int
    left: int
    rows: ResizeTaps | None = None
    cols: ResizeTaps | None = None

    @property
    def resized(self) -> bool:
        return self.rows is not None


def frame_geometry(h: int, w: int, resize: bool, size: int = CROP_SIZE) -> FrameGeometry:
    """Crop offsets (and, with resize, the bicubic taps restricted to the crop) for frames of h x w.

    resize: the frames are first sized as media.py does (shortest side 256, top-left even crop), and
    the centre crop is taken from that picture.
    """
    if not resize:
        top, left = centre_crop_offsets(h, w, size)
        return FrameGeometry(h, w, top, left)
    (sh, sw), (oh, ow) = resized_shape(h, w)
    top, left = centre_crop_offsets(oh, ow, size)
    return FrameGeometry(h, w, top, left, resize_taps(h, sh, top, size), resize_taps(w, sw, left, size))


def segment_frame_index(starts: np.ndarray, frames_per_segment: int = SEG_FRAMES,
                        base: int = 0) -> np.ndarray:
    """(n * frames_per_segment,) int32 uploaded-frame index of output frame f of segment s: starts[s]-base+f."""
    s = np.asarray(starts, dtype=np.int64).reshape(-1, 1) - base
    return (s + np.arange(frames_per_segment)).reshape(-1).astype(np.int32)


def emulate_frames(frames: np.ndarray, frame_index: np.ndarray, lut: np.ndarray, geom: FrameGeometry,
                   size: int = CROP_SIZE) -> np.ndarray:
    """NumPy twin of frames.cu: frames (T, H, W, 3) uint8 -> (len(frame_index), 3, size, size) lut dtype.

    Straight: lut[frames[i, top+y, left+x, c]]. Resized: per channel, float32 sum over rows i of
    wy_i * (sum over columns j of wx_j * pixel), rounded half-to-even and clamped to 0..255, then the lut.
    """
    frames = np.asarray(frames)
    sel = frames[np.asarray(frame_index)]
    if not geom.resized:
        crop = sel[:, geom.top:geom.top + size, geom.left:geom.left + size]
        return np.ascontiguousarray(lut[crop].transpose(0, 3, 1, 2))
    rows, cols = geom.rows, geom.cols
    src = sel.astype(np.float32)
    horiz = np.zeros((src.shape[0], src.shape[1], size, 3), np.float32)       # (F, H, size, 3)
    for j in range(cols.weight.shape[1]):
        x = np.minimum(cols.first + j, geom.w - 1)
        horiz += cols.weight[:, j][None, None, :, None] * src[:, :, x, :]
    acc = np.zeros((src.shape[0], size, size, 3), np.float32)
    for i in range(rows.weight.shape[1]):
        y = np.minimum(rows.first + i, geom.h - 1)
        acc += rows.weight[:, i][None, :, None, None] * horiz[:, y, :, :]
    u8 = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(lut[u8].transpose(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------- buffers
@dataclass(frozen=True)
class BufferSpec:
    offset: int                 # bytes from the start of the slab (multiple of ALIGN)
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def plan_buffers(shapes: dict[str, tuple[tuple[int, ...], object]], align: int = ALIGN
                 ) -> tuple[dict[str, BufferSpec], int]:
    """Lay buffers {name: (shape, dtype)} one after another in a slab -> ({name: BufferSpec}, slab bytes)."""
    specs, offset = {}, 0
    for name, (shape, dtype) in shapes.items():
        spec = BufferSpec(offset, tuple(int(s) for s in shape), np.dtype(dtype))
        specs[name] = spec
        offset += -(-spec.nbytes // align) * align
    return specs, offset


def feature_buffers(max_segments: int, max_frame_bytes: int, video_dtype) -> dict[str, tuple[tuple[int, ...], object]]:
    """Device buffers of a GpuFeatures for `max_segments` segments and `max_frame_bytes` uploaded frame bytes.

    Audio: the uploaded samples, segment starts, STFT frames, spectrum (complex64), log-mel output.
    Video: the uploaded uint8 frames (any T, H, W inside the byte budget), the per-output-frame index,
    the (n * 16, 3, 224, 224) output.
    """
    n_out_frames = max_segments * SEG_FRAMES
    return {
        "pcm": ((max_segments * SEG_SAMPLES,), np.float32),
        "starts": ((max_segments,), np.int64),
        "stft": ((max_segments * N_FRAMES, N_FFT), np.float32),
        "spec": ((max_segments * N_FRAMES, N_BINS), np.complex64),
        "mel": ((max_segments, 1, N_MELS, SPEC_FRAMES), np.float32),
        "frames": ((max_frame_bytes,), np.uint8),
        "frame_index": ((n_out_frames,), np.int32),
        "video": ((n_out_frames, 3, CROP_SIZE, CROP_SIZE), np.dtype(video_dtype)),
    }


# Buffers that are filled from the host (they get a pinned twin of the same layout).
UPLOADED = ("pcm", "starts", "frames", "frame_index")
