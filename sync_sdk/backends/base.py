"""The backend protocol: what a backend declares about itself and the three stages of the exported model.

| attribute      | meaning                                                                       |
| name           | what runs, e.g. "onnxruntime-fp32-cpu", "torch-cuda-fp16"                      |
| config         | the ModelConfig of the weights (variant, widths, n_segments)                   |
| precision      | "fp32" | "fp16" | "bf16" | "int8": the arithmetic inside the stages            |
| device         | where it runs: "cpu", a CUDA device index or a torch.device (str() names it)   |
| device_arrays  | True: also takes CuPy arrays and then returns CuPy arrays (data stays on GPU)  |
| model_id       | the weights' name as the export or checkpoint gives it ("" when unknown)       |

| stage          | input                                         | output              |
| encode_audio   | (N, 1, 128, 66) float32 log-mel segments      | (N, 6, a_dim)       |
| encode_video   | (N, 16, 3, 224, 224) float32 frame segments   | (N, 8, v_dim)       |
| head           | (B, S*8, v_dim) visual, (B, S*6, a_dim) audio | (B, num_classes)    |

Features are the encoders' own outputs (before vproj/aproj): the projections belong to the head.
Arrays are NumPy on CPU backends; a backend with device_arrays returns CuPy arrays for CuPy inputs.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError

DECLARED = ("name", "config", "precision", "device", "device_arrays", "model_id")
STAGE_METHODS = ("encode_audio", "encode_video", "head")


@runtime_checkable
class Backend(Protocol):
    name: str
    config: ModelConfig
    precision: str
    device: Any
    device_arrays: bool
    model_id: str

    def encode_audio(self, aud: np.ndarray) -> np.ndarray: ...

    def encode_video(self, vid: np.ndarray) -> np.ndarray: ...

    def head(self, vfeat: np.ndarray, afeat: np.ndarray) -> np.ndarray: ...


def check_backend(backend: Any) -> Backend:
    """`backend` itself when it declares every attribute and stage of the protocol, else BackendError."""
    missing = [a for a in DECLARED + STAGE_METHODS if not hasattr(backend, a)]
    if missing:
        raise BackendError(f"{type(backend).__name__} does not implement the backend protocol: it lacks "
                           f"{missing} (see sync_sdk.backends.base.Backend)")
    return backend
