"""Video layouts: the frames each project's Synchformer visual encoder sees, as its public code makes them.

A layout is a frame choice at 25 fps (`frame_size`: the media decoder's "native", "short256" or "pyav"
frames), a crop to 224 x 224, a float table (uint8 level -> model input) and what `duration_sec` (d)
does. `LAYOUTS`:

- "av-benchmark" (hkchengrex/av-benchmark DeSync; the same frames as MMAudio's training features,
  mmaudio/data/extraction/vgg_sound.py): torio StreamingMediaDecoder(frame_rate=25, format="rgb24") =
  "native" frames (FFmpeg's fps filter); v2.Resize(224, BICUBIC) + v2.CenterCrop(224)
  (media.resize_short_crop); v2.ToDtype(float32, scale=True) + v2.Normalize(0.5, 0.5)
  (`TORCHVISION_TABLE`). d: the first int(25 d) frames; fewer is a ClipTooShortError, as av-benchmark
  raises "Sync video too short" (DeSync drops such a clip; its fill_frames option repeats the last frame).
- "mmaudio" (hkchengrex/MMAudio mmaudio/eval_utils.py load_video, its inference): "pyav" frames
  (av_utils.read_frames) of the first d s; resize, crop and table as above; then d is cut to the length of
  its 8-fps CLIP frames (read the same way) and of the 25-fps frames, and the first int(25 d) kept.
  Its demo's d is 8 s; without d, the whole file goes through the same cuts.
- "hunyuan-foley" (Tencent-Hunyuan/HunyuanVideo-Foley hunyuanvideo_foley/utils/feature_utils.py
  get_frames_av + model_utils' syncformer_preprocess): "pyav" frames; resize, crop and table as above.
  Without d the frames of the first 15 s (get_frames_av's default end, what its pipeline uses); with d
  the frames up to d s, at most int(25 d).
- "thinksound" (FunAudioLLM/ThinkSound extract_latents.py, data_utils/v2a_utils/vggsound_224_no_audio.py):
  "native" frames; resize, crop and table as above. d: the first int(25 d) frames, a shorter clip padded
  with its last frame (its demo passes d = the whole seconds of the container's duration).
- "synchformer" (the sync model's own test transform, SPEC 1.3/1.6): "short256" frames, centre crop 224,
  the fp16 table (inputs.cpu.VIDEO_LUT). d: the first int(25 d) frames.
Without d, "av-benchmark", "thinksound" and "synchformer" keep every frame.

Frame rates: a file of any rate (or variable rate) is resampled to 25 fps by timestamps, by the layout's
own rule (media/video.py, media/frame_picks.py). Frames in memory are at `fps` (frame i at i / fps; default
25) and go through the same rule; an AVClip's frames are already 25 fps at shortest side 256.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from sync_sdk.errors import ClipTooShortError, InputError, InvalidArrayError
from sync_sdk.geometry import FPS, check_seconds
from sync_sdk.inputs.cpu import VIDEO_LUT
from sync_sdk.media import AVClip, centre_crop, read_video_crops, resize_short_crop
from sync_sdk.media.decode import pick_fps_filter
from sync_sdk.media.frame_picks import count_slots, pick_next, read_pyav_crops
from sync_sdk.media.source import is_path

# float32 ToDtype(float32, scale=True) then Normalize(0.5, 0.5), as torchvision computes them: u * (1/255)
# (the factor rounded to float32; not u / 255, which differs at 111 levels by 1 ulp), then (x - 0.5) / 0.5
TORCHVISION_TABLE = ((np.arange(256, dtype=np.float32) * np.float32(1 / 255) - np.float32(0.5))
                     / np.float32(0.5)).astype(np.float32)
TABLES = {"torchvision": TORCHVISION_TABLE, "fp16": VIDEO_LUT}
MMAUDIO_CLIP_FPS = 8.0  # MMAudio reads its CLIP frames at 8 fps; their length can shorten the sync frames
HUNYUAN_END_SEC = 15.0  # get_frames_av reads up to 15 s when no length is given
_CHUNK = 64  # frames in memory cropped at a time


@dataclass(frozen=True)
class Layout:
    """name; frame_size: the media decoder's frames ("native", "short256", "pyav"); resize: shortest side
    224 bicubic before the centre crop (else the crop only); table: a key of TABLES; duration: the rule
    for duration_sec ("first", "exact", "mmaudio", "hunyuan", "pad"; module docstring)."""

    name: str
    frame_size: str
    resize: bool
    table: str
    duration: str

    def crop_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) -> uint8 (T, 224, 224, 3). Raises InputError for other arrays."""
        return resize_short_crop(frames) if self.resize else centre_crop(frames)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (..., 224, 224, 3) -> float32 (..., 3, 224, 224), the encoder's input."""
        return np.moveaxis(TABLES[self.table][crops], -1, -3)


LAYOUTS = {
    "av-benchmark": Layout("av-benchmark", "native", True, "torchvision", "exact"),
    "mmaudio": Layout("mmaudio", "pyav", True, "torchvision", "mmaudio"),
    "hunyuan-foley": Layout("hunyuan-foley", "pyav", True, "torchvision", "hunyuan"),
    "thinksound": Layout("thinksound", "native", True, "torchvision", "pad"),
    "synchformer": Layout("synchformer", "short256", False, "fp16", "first"),
}


def get_layout(name: str | Layout) -> Layout:
    """The layout of a name in LAYOUTS (a Layout is returned as it is). Raises InputError."""
    if isinstance(name, Layout):
        return name
    if name not in LAYOUTS:
        raise InputError(f"unknown layout {name!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def visual_inputs(source, layout: str | Layout = "av-benchmark", normalize: bool = False,
                  duration_sec: float | None = None, fps: float | None = None) -> np.ndarray:
    """The frames `layout` feeds the visual encoder, at 25 fps: uint8 (T, 224, 224, 3) RGB, or with
    normalize=True float32 (T, 3, 224, 224) (the encoder's axis order; a segment is 16 of them).

    source: path | uint8 frames (T, H, W, 3) at `fps` (default 25) | AVClip. duration_sec: the layout's
    length rule (module docstring). Raises InputError (bad arguments, unknown layout), media errors."""
    lay = get_layout(layout)
    crops = layout_crops(source, lay, duration_sec, fps)
    return lay.normalise(crops) if normalize else crops


def layout_crops(source, layout: Layout, duration_sec: float | None = None, fps: float | None = None) -> np.ndarray:
    """uint8 (T, 224, 224, 3) crops of `source` at 25 fps as `layout` makes them (see visual_inputs)."""
    d = None if duration_sec is None else check_seconds(duration_sec, "duration_sec")
    if d is not None and d <= 0:
        raise InputError(f"duration_sec must be positive, got {d}")
    if layout.frame_size == "pyav":
        end = d if d is not None or layout.duration != "hunyuan" else HUNYUAN_END_SEC
        crops, last = _pyav_crops(source, layout, end, fps)
        if layout.duration == "mmaudio":
            return _mmaudio_cut(crops, last, d)
        return crops if d is None else crops[:int(d * FPS)]
    n = None if d is None else int(FPS * d)
    if is_path(source):
        crops = read_video_crops(source, layout, max_frames=n)
    else:
        frames, rate = _frames_of(source, fps)
        picks = pick_fps_filter(len(frames), rate) if rate != FPS else range(len(frames))
        crops = _crop_picks(frames, list(picks)[:n], layout)
    return _fill(crops, n, layout) if n is not None else crops


def _pyav_crops(source, layout: Layout, end_sec: float | None, fps: float | None):
    """(crops, time of the latest frame kept) of the "pyav" frames up to end_sec."""
    if is_path(source):
        return read_pyav_crops(source, layout.crop_frames, end_sec=end_sec)
    frames, rate = _frames_of(source, fps)
    times = [i / rate for i in range(len(frames))]
    kept = [t for t in times if end_sec is None or t <= end_sec]
    return _crop_picks(frames, pick_next(times, FPS, end_sec), layout), (max(kept) if kept else None)


def _mmaudio_cut(crops: np.ndarray, last_time: float | None, d: float | None) -> np.ndarray:
    """load_video's cut: d (inf without one) shortened to the CLIP frames' and the sync frames' lengths
    (float64, in that order), then the first int(25 d) frames."""
    dur = math.inf if d is None else d
    clip_sec = count_slots(last_time, MMAUDIO_CLIP_FPS) / MMAUDIO_CLIP_FPS
    sync_sec = len(crops) / float(FPS)
    if clip_sec < dur:
        dur = clip_sec
    if sync_sec < dur:
        dur = sync_sec
    return crops[:int(float(FPS) * dur)]


def _fill(crops: np.ndarray, n: int, layout: Layout) -> np.ndarray:
    """The first n crops: missing ones repeat the last ("pad"), are an error ("exact") or stay missing."""
    missing = n - len(crops)
    if missing <= 0 or layout.duration == "first":
        return crops[:n]
    if not len(crops) or layout.duration == "exact":
        why = "needs them all (av-benchmark: 'Sync video too short')" if len(crops) else "has no frame to repeat"
        raise ClipTooShortError(f"the video holds {len(crops)} frames at 25 fps, {n} asked ({n / FPS:.2f} s); "
                                f"layout {layout.name!r} {why}")
    return np.concatenate([crops, np.repeat(crops[-1:], missing, axis=0)])


def _frames_of(source, fps: float | None) -> tuple[np.ndarray, float]:
    """(uint8 (T, H, W, 3) frames, their rate) of frames in memory or an AVClip (25 fps)."""
    if isinstance(source, AVClip):
        if fps is not None and fps != FPS:
            raise InputError(f"an AVClip's frames are at {FPS} fps; fps={fps} does not apply")
        return source.frames, float(FPS)
    if not isinstance(source, np.ndarray):
        raise InputError(f"source must be a path, uint8 frames (T, H, W, 3) or an AVClip, got {type(source).__name__}")
    if fps is None:
        return source, float(FPS)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise InvalidArrayError(f"fps must be a positive, finite frame rate (frames per second), got {fps!r}")
    return source, float(fps)


def _crop_picks(frames: np.ndarray, picks: list[int], layout: Layout) -> np.ndarray:
    """layout.crop_frames of frames[picks] (uint8 (len(picks), 224, 224, 3)), _CHUNK frames at a time."""
    if not picks:
        return layout.crop_frames(frames[:0])
    return np.concatenate([layout.crop_frames(frames[picks[i:i + _CHUNK]]) for i in range(0, len(picks), _CHUNK)])
