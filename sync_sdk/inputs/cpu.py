"""Model inputs from pixels and samples on the CPU (NumPy): the RGB table, the official log-mel, and
CpuFeatures, which makes them for grid segments (GpuFeatures in gpu.py has the same two methods).

video_input: uint8 RGB frames -> centre crop 224 -> official float16 normalisation, via a 256-entry table.
log_mel:     10240-sample segments -> torchaudio MelSpectrogram (n_fft 1024, Hann 400, hop 160, 128 HTK
             mels, power 2) -> log(x + 1e-6) -> pad to 66 frames with 0.0 -> AST normalisation.
"""
from __future__ import annotations

import math

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.geometry import CROP_SIZE, N_MELS, SAMPLE_RATE, SEG_FRAMES, SEG_SAMPLES, SPEC_FRAMES, crop_offsets

N_FFT = 1024
WIN_LENGTH = 400
HOP_LENGTH = 160
N_FRAMES = 1 + SEG_SAMPLES // HOP_LENGTH  # 65 STFT frames per segment
LOG_EPS = 1e-6
AST_MEAN = -4.2677393
AST_STD = 4.5689974


def _video_lut() -> np.ndarray:
    """uint8 level -> model input, computed as the official pipeline does, in float16 arithmetic:
    RGBToHalfToZeroOne (u.half() / 255) then RGBNormalize ((x - 0.5) / 0.5), each op rounded to fp16.
    Differs from the float32 formula (u / 255 - 0.5) / 0.5 by up to 4.9e-4."""
    u = np.arange(256).astype(np.float16)
    half = np.float16(0.5)
    return ((u / np.float16(255) - half) / half).astype(np.float32)


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace in float32, bit for bit: step = (end - start) / (steps - 1) in float32, then
    start + step*i for the first half and end - step*(steps-1-i) for the rest, each as one fused
    multiply-add (one rounding; emulated exactly in float64)."""
    a, b = np.float32(start), np.float32(end)
    step = (b - a) / np.float32(steps - 1)
    i = np.arange(steps, dtype=np.float64)
    low = np.float64(a) + np.float64(step) * i
    high = np.float64(b) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, low, high).astype(np.float32)


def _mel_fbanks() -> np.ndarray:
    """(513, 128) float32 HTK triangular filterbank, 0-8000 Hz, no norm: torchaudio's melscale_fbanks
    re-derived from its formula (equals torchaudio's values bit for bit)."""
    all_freqs = _torch_linspace_f32(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    m_max = 2595.0 * math.log10(1.0 + (SAMPLE_RATE / 2) / 700.0)
    m_pts = _torch_linspace_f32(0.0, m_max, N_MELS + 2)
    # 10 ** x correctly rounded to float32, then the rest in float32 as torch computes it
    f_pts = np.float32(700.0) * ((10.0 ** (m_pts / np.float32(2595.0)).astype(np.float64)).astype(np.float32)
                                 - np.float32(1.0))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(np.float32(0.0), np.minimum(down, up)).astype(np.float32)


def _stft_window() -> np.ndarray:
    """(400,) float32 periodic Hann window, 0.5 - 0.5 cos(2 pi n / 400), in torch.hann_window's float32
    steps (within 1 ulp of it: torch's vectorised cos is not correctly rounded)."""
    arg = np.arange(WIN_LENGTH, dtype=np.float32) * np.float32(2.0 * np.pi / WIN_LENGTH)
    return np.cos(arg.astype(np.float64)).astype(np.float32) * np.float32(-0.5) + np.float32(0.5)


VIDEO_LUT = _video_lut()
MEL_FBANKS = _mel_fbanks()
STFT_WINDOW = _stft_window()
# MEL_FBANKS as its 1012 non-zero taps, grouped by mel band (every band has at least one): mel = sums of
# weighted power bins, ~65x fewer operations than the dense product and no multi-threaded BLAS call
# (which stalls badly when the CPU is oversubscribed)
_BAND, _BIN = np.nonzero(MEL_FBANKS.T)
_TAP_WEIGHT = MEL_FBANKS[_BIN, _BAND][:, None]
_BAND_START = np.searchsorted(_BAND, np.arange(N_MELS))
_PAD_VALUE = (np.float32(0.0) - np.float32(AST_MEAN)) / (np.float32(2.0) * np.float32(AST_STD))  # 0.4670324


def video_input(frames: np.ndarray) -> np.ndarray:
    """frames uint8 RGB (..., H, W, 3), H, W >= 224 -> float32 (..., 3, 224, 224) model input.

    Official centre crop (top = round((H-224)/2), left = round((W-224)/2), half-to-even) then
    VIDEO_LUT[u8]: the exact float16 values of the official pipeline, cast to float32.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise InputError(f"video_input expects uint8 frames (..., H, W, 3), got {frames.dtype} {frames.shape}")
    top, left = crop_offsets(frames.shape[-3], frames.shape[-2])
    crop = frames[..., top:top + CROP_SIZE, left:left + CROP_SIZE, :]
    flat = crop.reshape((-1,) + crop.shape[-3:])
    out = np.empty((len(flat), 3, CROP_SIZE, CROP_SIZE), np.float32)
    map_frames(flat, out)
    return out.reshape(crop.shape[:-3] + (3, CROP_SIZE, CROP_SIZE))


def map_frames(frames: np.ndarray, out: np.ndarray) -> None:
    """out[i] = VIDEO_LUT[frames[i]] channels first: frames (n, h, w, 3) uint8 -> out (n, 3, h, w) float32,
    frame by frame (the integer index temporaries stay small)."""
    for frame, dst in zip(frames, out):
        np.take(VIDEO_LUT, np.moveaxis(frame, -1, 0), out=dst)


def log_mel(waves: np.ndarray) -> np.ndarray:
    """waves (N, 10240) float (16 kHz segments) -> (N, 1, 128, 66) float32 normalised log-mel.

    STFT: reflect padding of 512 on both sides, 65 frames every 160 samples, periodic Hann 400
    zero-padded (centred) to n_fft 1024, power |X|^2; mel = MEL_FBANKS^T power; log(mel + 1e-6);
    the 66th time frame is 0.0 (PadOrTruncate, in the log domain); then (x + 4.2677393) / 9.1379948.
    All frames of all segments go through one batched float32 rfft (|diff| to torch <= 3e-5).
    """
    waves = np.asarray(waves, dtype=np.float32)
    if waves.ndim != 2 or waves.shape[1] != SEG_SAMPLES:
        raise InputError(f"log_mel expects waves (N, {SEG_SAMPLES}), got shape {waves.shape}")
    pad = N_FFT // 2
    padded = np.pad(waves, ((0, 0), (pad, pad)), mode="reflect")
    # the window is non-zero on [312, 712) of each 1024-sample frame: only those 400 samples matter,
    # and their position inside the frame changes the phase of X, not |X|^2
    first = (N_FFT - WIN_LENGTH) // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN_LENGTH, axis=1)
    frames = frames[:, first:first + HOP_LENGTH * N_FRAMES:HOP_LENGTH]  # (N, 65, 400)
    spec = np.fft.rfft(frames * STFT_WINDOW, n=N_FFT, axis=-1)  # (N, 65, 513) complex64
    power = (spec.real * spec.real + spec.imag * spec.imag).reshape(-1, N_FFT // 2 + 1).T  # (513, N*65)
    mel = np.add.reduceat(power[_BIN] * _TAP_WEIGHT, _BAND_START, axis=0)  # (128, N*65) = MEL_FBANKS^T power
    logmel = np.log(mel + np.float32(LOG_EPS)).reshape(N_MELS, len(waves), N_FRAMES)
    out = np.full((len(waves), 1, N_MELS, SPEC_FRAMES), _PAD_VALUE, np.float32)
    out[:, 0, :, :N_FRAMES] = (logmel.transpose(1, 0, 2) - np.float32(AST_MEAN)) / np.float32(2.0 * AST_STD)
    return out


class CpuFeatures:
    """Segment model inputs with NumPy; GpuFeatures (inputs/gpu.py) has the same two methods on a GPU."""

    def video_segments(self, frames: np.ndarray, starts) -> np.ndarray:
        """frames (T,H,W,3) uint8, segments frames[s:s+16] -> (n, 16, 3, 224, 224) float32."""
        return video_input(np.stack([frames[s:s + SEG_FRAMES] for s in starts]))

    def log_mel_segments(self, pcm: np.ndarray, starts) -> np.ndarray:
        """pcm (L,) float32 16 kHz, segments pcm[s:s+10240] -> (n, 1, 128, 66) float32."""
        return log_mel(np.stack([pcm[s:s + SEG_SAMPLES] for s in starts]))
