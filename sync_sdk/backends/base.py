"""The backend protocol: the three stages of the exported model.

| stage          | input                                        | output              |
| encode_audio   | (N, 1, 128, 66) float32 log-mel segments     | (N, 6, a_dim)       |
| encode_video   | (N, 16, 3, 224, 224) float32 frame segments  | (N, 8, v_dim)       |
| head           | (B, S*8, v_dim) visual, (B, S*6, a_dim) audio | (B, num_classes)    |

Features are the encoders' own outputs (before vproj/aproj): the projections belong to the head.
Arrays are NumPy on CPU backends. GPU backends set `device_arrays = True`: they also accept CuPy
arrays and then return CuPy arrays (the data stays on the device).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from sync_sdk.config import ModelConfig


@runtime_checkable
class Backend(Protocol):
    name: str
    config: ModelConfig

    def encode_audio(self, aud: np.ndarray) -> np.ndarray: ...

    def encode_video(self, vid: np.ndarray) -> np.ndarray: ...

    def head(self, vfeat: np.ndarray, afeat: np.ndarray) -> np.ndarray: ...
