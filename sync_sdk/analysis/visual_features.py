"""Visual features for conditioning (MMAudio, HunyuanVideo-Foley, ThinkSound): the visual encoder only.

A clip of T frames at 25 fps gives S = (T - 16) // 8 + 1 segments (frames [8i, 8i + 16)); each goes
through the backend's encode_video (many segments per call) -> (8, v_dim); the clip's features are the
S segments' tokens in order: (S * 8, v_dim) float32, each project's (1, S * 8, 768) without its batch
axis. The frames are those of a layout (inputs/layouts.py: "av-benchmark" by default, "mmaudio",
"hunyuan-foley", "thinksound", "synchformer"), so they match what that project feeds Synchformer.

Precision: the backend's (float32 on the CPU). The projects: MMAudio's demo casts Synchformer and its
input to bfloat16 (float32 with --full_precision); HunyuanVideo-Foley keeps float32 weights and runs it
under torch.autocast(float16) on CUDA; ThinkSound runs float32 (float16 with --use_half) and saves float32;
av-benchmark float32.

output="cupy" keeps the features on the GPU: each batch of normalised segments is uploaded once and
the GPU backends (TensorRT, torch-cuda; `device_arrays`) return CuPy arrays, which stay on the device
and are joined there. A CuPy array speaks DLPack, so `torch.from_dlpack(feats)` (or JAX's) takes it without a copy.
"""
from __future__ import annotations

import numpy as np

from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.geometry import SEG_FRAMES, STEP_FRAMES, VIDEO_TOKENS_PER_SEGMENT, count_segments
from sync_sdk.inputs.gpu import import_cupy
from sync_sdk.inputs.layouts import Layout, get_layout, layout_crops
from sync_sdk.runtime.arrays import to_numpy
from sync_sdk.runtime.encoder import SegmentEncoder

OUTPUTS = ("numpy", "cupy")


def visual_features(encoder: SegmentEncoder, source, layout: str | Layout = "av-benchmark",
                    duration_sec: float | None = None, batch: int | None = None, output: str = "numpy",
                    fps: float | None = None):
    """(S * 8, v_dim) float32 visual features of `source` at 25 fps: a NumPy array, or with
    output="cupy" a CuPy array on the engine's GPU (needs the `gpu` extra). `feats[None]` is the
    projects' (1, S * 8, 768) (their precision: module docstring).

    source: path (any frame rate) | uint8 frames (T, H, W, 3) at `fps` (default 25) | AVClip.
    layout: whose frames (inputs/layouts.py); duration_sec: that layout's length rule (None: its
    default, e.g. every frame for "av-benchmark"). batch: segments per encoder call (default the encoder's max_batch).
    Raises InputError (unknown layout or output, bad source), ClipTooShortError (< 16 frames)."""
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    lay = get_layout(layout)
    crops = layout_crops(source, lay, duration_sec, fps)
    s = count_segments(len(crops), SEG_FRAMES, STEP_FRAMES)
    if s == 0:
        raise ClipTooShortError(f"visual features need at least {SEG_FRAMES} frames at 25 fps, got {len(crops)} "
                                f"(layout {lay.name!r})")
    if batch is not None:
        encoder = SegmentEncoder(encoder.backend, features=encoder.features, max_batch=batch)

    def segments(ids: range) -> np.ndarray:
        return lay.normalise(np.stack([crops[STEP_FRAMES * i:STEP_FRAMES * i + SEG_FRAMES] for i in ids]))

    if output == "cupy":
        feats = _encode_on_device(encoder, s, segments)
    else:
        feats = to_numpy(encoder.encode("video", s, segments))
    return feats.reshape(s * VIDEO_TOKENS_PER_SEGMENT, feats.shape[-1]).astype(np.float32, copy=False)


def _encode_on_device(encoder: SegmentEncoder, n: int, segments):
    """CuPy (n, 8, v_dim) of segments 0..n-1. A GPU backend (`device_arrays`) gets device batches and
    its CuPy outputs stay on the device; a host backend's NumPy outputs are uploaded at the end."""
    cp = import_cupy()
    on_device = encoder.backend.device_arrays
    return cp.asarray(encoder.encode("video", n, lambda ids: cp.asarray(segments(ids)) if on_device else segments(ids)))
