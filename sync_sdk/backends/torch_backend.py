"""PyTorch backend: the reference model behind the backend protocol (NumPy in and out).

The only backend that imports torch; every other backend is checked against it.
"""
from __future__ import annotations

import numpy as np
import torch

from sync_sdk.config import ModelConfig


class TorchBackend:
    """Runs `model.encode_audio` / `encode_video` / `head` in eval + inference mode, float32.

    encode_audio (N,1,128,66) -> (N,6,a_dim); encode_video (N,16,3,224,224) -> (N,8,v_dim);
    head (B,S*8,v_dim), (B,S*6,a_dim) -> (B,num_classes).
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: ModelConfig = model.config
        self.name = f"torch-{self.device.type}"
        self.precision = "fp32"
        self.device_arrays = False
        self.model_id = ""

    def _run(self, fn, *arrays: np.ndarray) -> np.ndarray:
        tensors = [torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device) for a in arrays]
        with torch.inference_mode():
            return fn(*tensors).float().cpu().numpy()

    def encode_audio(self, aud: np.ndarray) -> np.ndarray:
        """aud (N, 1, 128, 66) float32 log-mel -> (N, 6, a_dim)."""
        return self._run(self.model.encode_audio, aud)

    def encode_video(self, vid: np.ndarray) -> np.ndarray:
        """vid (N, 16, 3, 224, 224) float32 frames -> (N, 8, v_dim)."""
        return self._run(self.model.encode_video, vid)

    def head(self, vfeat: np.ndarray, afeat: np.ndarray) -> np.ndarray:
        """vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim) -> logits (B, num_classes)."""
        return self._run(self.model.head, vfeat, afeat)
