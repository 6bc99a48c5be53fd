"""Test helpers: a tiny-config engine with seeded random weights (torch backend), synthetic media."""
from __future__ import annotations

import numpy as np

from sync_sdk.config import ModelConfig


def tiny_state_dict(variant: str = "sync", seed: int = 0, gain: float = 3.0) -> tuple[dict, ModelConfig]:
    """Seeded random float32 weights for the tiny config: norms 1, biases 0, other tensors
    N(0, gain / sqrt(fan-in)); gain 3 makes the logits depend strongly on the input (windows differ
    by ~2 in logit), so equality tests at 1e-5 mean something."""
    from sync_sdk.model import build_model
    config = ModelConfig.named("tiny").with_variant(variant)
    rng = np.random.default_rng(seed)
    sd = {}
    for k, v in build_model(config, device="meta").state_dict().items():
        shape = tuple(v.shape)
        if len(shape) == 1:
            sd[k] = (np.ones if k.endswith("weight") else np.zeros)(shape, np.float32)
        else:
            sd[k] = rng.normal(0, gain / np.sqrt(np.prod(shape[1:])), shape).astype(np.float32)
    return sd, config


def tiny_backend(variant: str = "sync", seed: int = 0):
    import torch

    from sync_sdk.backends.torch_backend import TorchBackend
    from sync_sdk.model import build_model, load_weights
    torch.set_num_threads(1)
    sd, config = tiny_state_dict(variant, seed)
    return TorchBackend(load_weights(build_model(config), sd))


def tiny_engine(variant: str = "sync", **kwargs):
    from sync_sdk.engine import SyncEngine
    return SyncEngine(tiny_backend(variant), model_id=f"tiny-random-{variant}", **kwargs)


def media_arrays(duration_sec: float, seed: int = 3, size=(256, 320)):
    """(frames (T,H,W,3) uint8, 25, audio (N,) float32, 16000) of a synthetic clip."""
    from sync_sdk.synthetic import generate_clip
    clip = generate_clip(seed, duration_sec=duration_sec, size=size)
    return clip.frames, 25, clip.audio, 16000


def single_view_logits(encoder, vid: np.ndarray, aud: np.ndarray) -> np.ndarray:
    """Logits (B, num_classes) through the segment-encoding seam of B single-view windows: vid
    (B, S, 16, 3, 224, 224), aud (B, S, 1, 128, 66) with S = the model's n_segments."""
    from sync_sdk.inputs.views import View
    return encoder.views_logits([[View(0.0, 0.0, v, a)] for v, a in zip(vid, aud)])
