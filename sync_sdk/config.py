"""Model hyper-parameters (torch-free, so the runtime can read them from an export manifest).

Fixed by the official architecture (never configurable): 128 mel bins x 66 frames per audio
segment, 16 frames of 224x224 per visual segment, AST patch 16 with stride 10 (12x6 grid),
Motionformer tubelet 2x16x16 (8x14x14 grid), 21 offset classes. The head sees
`n_segments` segments: 8 visual + 6 audio tokens each, plus OFF and MOD tokens.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sync_sdk.errors import CheckpointError
from sync_sdk.geometry import AUDIO_TOKENS_PER_SEGMENT, N_SEGMENTS, VIDEO_TOKENS_PER_SEGMENT

VARIANTS = ("sync", "synchronizability")


@dataclass(frozen=True)
class ModelConfig:
    """Widths/depths of the three parts and the head's segment count.

    a_*: AST audio encoder (and its frequency aggregation layer, same width / MLP size).
    v_*: Motionformer visual encoder (and its spatial aggregation layer).
    h_*: GlobalTransformer sync head; pos_emb_rows = 2 + 14 * n_segments.
    """

    variant: str = "sync"
    n_segments: int = N_SEGMENTS
    a_dim: int = 768
    a_depth: int = 12
    a_heads: int = 12
    a_mlp: int = 3072
    v_dim: int = 768
    v_depth: int = 12
    v_heads: int = 12
    v_mlp: int = 3072
    h_dim: int = 768
    h_depth: int = 3
    h_heads: int = 8

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")

    @property
    def num_classes(self) -> int:
        """21 offset classes for `sync`, 2 (index 1 = synchronizable) for `synchronizability`."""
        return 21 if self.variant == "sync" else 2

    @property
    def pos_emb_rows(self) -> int:
        return 2 + (VIDEO_TOKENS_PER_SEGMENT + AUDIO_TOKENS_PER_SEGMENT) * self.n_segments

    def with_variant(self, variant: str) -> "ModelConfig":
        """Same widths, other head; the synchronizability head sees 13 segments officially."""
        n_seg = self.n_segments
        if variant != self.variant:
            n_seg = 13 if variant == "synchronizability" and n_seg == 14 else n_seg
            n_seg = 14 if variant == "sync" and n_seg == 13 else n_seg
        return replace(self, variant=variant, n_segments=n_seg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    @classmethod
    def named(cls, name: str) -> "ModelConfig":
        """`sync` (official full size), `synchronizability` (full size, 13 segments), `tiny` (ours)."""
        if name not in NAMED_CONFIGS:
            raise ValueError(f"unknown model config {name!r}; expected one of {sorted(NAMED_CONFIGS)}")
        return NAMED_CONFIGS[name]

    @classmethod
    def from_reference_json(cls, path: str | Path, variant: str = "sync") -> "ModelConfig":
        """Read a reference folder's `config.json` (official config terms + backbone overrides)."""
        try:
            ref = json.loads(Path(path).read_text())
            over = ref["overrides_of_hardcoded_backbone_configs"]
            a = next(v for k, v in over.items() if k.startswith("afeat"))
            v = next(v for k, v in over.items() if k.startswith("vfeat"))
            key = "model_sync" if variant == "sync" else "model_synchronizability"
            tr = ref[key]["params"]["transformer"]["params"]
            rows = tr["pos_emb_cfg"]["params"]["block_shape"][0]
        except (OSError, KeyError, StopIteration, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not a reference config.json ({e!r})") from e
        n_seg = (rows - 2) // (VIDEO_TOKENS_PER_SEGMENT + AUDIO_TOKENS_PER_SEGMENT)
        return cls(
            variant=variant, n_segments=n_seg,
            a_dim=a["hidden_size"], a_depth=a["num_hidden_layers"], a_heads=a["num_attention_heads"],
            a_mlp=a["intermediate_size"],
            v_dim=v["EMBED_DIM"], v_depth=v["DEPTH"], v_heads=v["NUM_HEADS"], v_mlp=4 * v["EMBED_DIM"],
            h_dim=tr["n_embd"], h_depth=tr["n_layer"], h_heads=tr["n_head"],
        )


NAMED_CONFIGS = {
    "sync": ModelConfig(),
    "synchronizability": ModelConfig(variant="synchronizability", n_segments=13),
    "tiny": ModelConfig(a_dim=48, a_depth=2, a_heads=4, a_mlp=192, v_dim=64, v_depth=2, v_heads=4,
                        v_mlp=256, h_dim=32, h_depth=2, h_heads=4),
}
