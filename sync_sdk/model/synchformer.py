"""Synchformer: the two segment encoders, the projections and the sync head.

Its `state_dict()` and `load_state_dict()` use the official names and order (checkpoint files,
`expected_shapes`, training checkpoints); its modules and `named_parameters()` use ours. The hooks
below translate with `state_dict_rules.to_official_names` / `to_module_names`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sync_sdk.config import ModelConfig
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
from sync_sdk.model.audio import AST
from sync_sdk.model.head import GlobalTransformer
from sync_sdk.model.visual import MotionFormer
from sync_sdk.weights.state_dict_rules import to_module_names, to_official_names


def _own_keys(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Pop the entries under `prefix` from `state_dict`, returned without the prefix."""
    return {k[len(prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}


def _save_official(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: module names -> official names and order (q, k, v as views of `qkv`).

    `state_dict(keep_vars=True)` (the Parameter objects, which torch.jit.trace and the TorchScript
    ONNX exporter look up) keeps the module names: those parameters exist under no other name.
    """
    if any(isinstance(v, nn.Parameter) for k, v in state_dict.items() if k.startswith(prefix)):
        return
    state_dict.update({prefix + k: v for k, v in to_official_names(_own_keys(state_dict, prefix)).items()})


def _load_official(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: official names -> module names (q, k, v concatenated into `qkv`)."""
    own = to_module_names(_own_keys(state_dict, prefix), lambda parts: torch.cat(parts, 0))
    state_dict.update({prefix + k: v for k, v in own.items()})


class Synchformer(nn.Module):
    """Inference model; `state_dict()` equals the official one (names, order, shapes) for the same config.

    Shapes: B clips, S segments per clip (config.n_segments), N = any number of segments.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.vfeat_extractor = MotionFormer(c.v_dim, c.v_depth, c.v_heads, c.v_mlp)
        self.afeat_extractor = AST(c.a_dim, c.a_depth, c.a_heads, c.a_mlp)
        self.vproj = nn.Linear(c.v_dim, c.h_dim)
        self.aproj = nn.Linear(c.a_dim, c.h_dim)
        head_name = "off_head" if c.variant == "sync" else "sync_head"
        self.transformer = GlobalTransformer(c.h_dim, c.h_depth, c.h_heads, c.pos_emb_rows, c.num_classes,
                                             head_name)
        self.register_state_dict_post_hook(_save_official)
        self.register_load_state_dict_pre_hook(_load_official)

    def encode_audio(self, aud: torch.Tensor) -> torch.Tensor:
        """aud (N, 1, 128, 66) log-mel -> afeat (N, 6, a_dim)."""
        return self.afeat_extractor(aud)

    def encode_video(self, vid: torch.Tensor) -> torch.Tensor:
        """vid (N, 16, 3, 224, 224) normalised RGB -> vfeat (N, 8, v_dim)."""
        return self.vfeat_extractor(vid)

    def head_tokens(self, vfeat: torch.Tensor, afeat: torch.Tensor) -> torch.Tensor:
        """vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim) -> tokens after ln_f (B, 2 + 14*S, h_dim)."""
        return self.transformer.tokens(self.vproj(vfeat), self.aproj(afeat))

    def head(self, vfeat: torch.Tensor, afeat: torch.Tensor) -> torch.Tensor:
        """vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim) -> logits (B, num_classes); projections inside."""
        return self.transformer(self.vproj(vfeat), self.aproj(afeat))

    def forward(self, vid: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """vid (B, S, 16, 3, 224, 224), aud (B, S, 1, 128, 66) -> logits (B, num_classes)."""
        c = self.config
        vfeat = self.encode_video(vid.reshape(-1, *vid.shape[2:]))
        afeat = self.encode_audio(aud.reshape(-1, *aud.shape[2:]))
        vfeat = vfeat.reshape(-1, c.n_segments * VIDEO_TOKENS_PER_SEGMENT, c.v_dim)
        afeat = afeat.reshape(-1, c.n_segments * AUDIO_TOKENS_PER_SEGMENT, c.a_dim)
        return self.head(vfeat, afeat)
