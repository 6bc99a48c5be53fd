"""Named video presets: how frames become 224x224 model inputs outside the sync-model path.

A preset is a frame size of the media decoder (`frame_size`, see sync_sdk.media.FRAME_SIZES), a crop
to 224 x 224 and a normalisation. Two presets (`PRESETS`):
- "synchformer": the official sync-model test transform (SPEC 1.3/1.6): frames with shortest side 256
  ("short256", as media.read_clip), centre crop 224, fp16 lookup table (inputs.cpu.VIDEO_LUT).
- "av-benchmark": the DeSync / conditioning transform of hkchengrex/av-benchmark and MMAudio-style
  pipelines: frames at 25 fps in their native size ("native": FFmpeg's fps filter), shortest side
  resized to 224 (antialiased bicubic, media.resize_short_crop), centre crop 224, float32
  (u/255 - 0.5)/0.5. Its audio is media.load_audio_16k (torchaudio's sinc resampler).

Read a file's crops with media.read_video_crops(path, preset, max_frames).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.inputs.cpu import VIDEO_LUT
from sync_sdk.media import centre_crop, resize_short_crop


@dataclass(frozen=True)
class VideoPreset:
    """name; frame_size: the media decoder's frame size the preset's frames are decoded at."""

    name: str
    frame_size: str

    def crop_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) frames (at shortest side 256 for "synchformer", any size for "av-benchmark")
        -> uint8 (T, 224, 224, 3) crops. Raises InputError for other arrays."""
        return centre_crop(frames) if self.name == "synchformer" else resize_short_crop(frames)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (..., 224, 224, 3) -> float32 (..., 3, 224, 224) model input."""
        lut = VIDEO_LUT if self.name == "synchformer" else AV_BENCHMARK_LUT
        return np.moveaxis(lut[crops], -1, -3)


PRESETS = {"synchformer": VideoPreset("synchformer", "short256"),
           "av-benchmark": VideoPreset("av-benchmark", "native")}

# float32 (u / 255 - 0.5) / 0.5, as ToDtype(float32, scale=True) + Normalize(0.5, 0.5)
AV_BENCHMARK_LUT = ((np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(0.5))
                    / np.float32(0.5)).astype(np.float32)


def get_preset(name: str | VideoPreset) -> VideoPreset:
    """The preset of a name in PRESETS (a VideoPreset is returned as it is). Raises InputError."""
    if isinstance(name, VideoPreset):
        return name
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
