"""PyTorch reference model (imports torch): build it, load official weights into it.

    model = load_weights(build_model("sync"), state_dict)   # state_dict: name -> np.ndarray
    logits = model(vid, aud)                                 # (B,S,16,3,224,224), (B,S,1,128,66) -> (B,21)
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from sync_sdk.config import ModelConfig
from sync_sdk.model.synchformer import Synchformer
from sync_sdk.weights.state_dict_rules import check_keys, trim_pos_emb

__all__ = ["ModelConfig", "Synchformer", "build_model", "load_weights"]


def build_model(config: str | ModelConfig, device: str | torch.device = "cpu") -> Synchformer:
    """Model for a named config ("sync", "synchronizability", "tiny") or a ModelConfig, in eval mode.

    Parameters are uninitialised (zeros or torch defaults): load weights before use. On
    device "meta" nothing is allocated (for checking names and shapes).
    """
    if isinstance(config, str):
        config = ModelConfig.named(config)
    with torch.device(device):
        model = Synchformer(config)
    return model.eval()


def load_weights(model: Synchformer, state_dict: Mapping[str, np.ndarray]) -> Synchformer:
    """Strictly load float arrays by official name (positional table trimmed as officially); returns model.

    Raises CheckpointError naming the missing, unexpected and mis-shaped keys.
    """
    state_dict = trim_pos_emb(state_dict, model.config.pos_emb_rows)
    check_keys(state_dict, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in state_dict.items()})
    return model
