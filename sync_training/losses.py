"""Losses of the three training stages."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(v: torch.Tensor, a: torch.Tensor, logit_scale: torch.Tensor,
             a_extra: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over N paired segment embeddings v (N, D), a (N, D) (L2-normalised).

    Pair i is the positive of row/column i; every other segment in the batch (the same video's
    other segments and other videos') is a negative. a_extra (N, K, D): further negatives for
    visual segment i only (its own audio displaced in time). Mean of the video->audio and
    audio->video cross-entropies.
    """
    scale = logit_scale.exp()
    logits = scale * v @ a.t()
    target = torch.arange(len(v), device=v.device)
    v2a = logits
    if a_extra is not None:
        v2a = torch.cat([logits, scale * (a_extra @ v.unsqueeze(-1)).squeeze(-1)], 1)
    return 0.5 * (F.cross_entropy(v2a, target) + F.cross_entropy(logits.t(), target))


def classification(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy of logits (B, C) against class indices (B,), and the batch accuracy."""
    return F.cross_entropy(logits, target), float((logits.argmax(1) == target).float().mean())
