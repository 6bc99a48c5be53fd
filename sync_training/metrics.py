"""The paper's metrics, NumPy only: offset Acc@1 and Acc@1 +-1 class; synchronizability accuracy
and ROC AUC."""
from __future__ import annotations

import numpy as np


def offset_accuracy(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """pred, target: class indices (N,) -> {"acc1", "acc1_pm1"} (fractions)."""
    pred, target = np.asarray(pred), np.asarray(target)
    return {"acc1": float(np.mean(pred == target)), "acc1_pm1": float(np.mean(np.abs(pred - target) <= 1))}


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of `score` for binary `label` (ties count one half)."""
    score, label = np.asarray(score, np.float64), np.asarray(label).astype(bool)
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks over ties
    _, start, counts = np.unique(allv, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def sync_accuracy(score: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> float:
    """Balanced accuracy (mean of the per-class recalls) of `score > threshold` for binary `label`."""
    score, label = np.asarray(score), np.asarray(label).astype(bool)
    pred = score > threshold
    return float(np.mean([np.mean(pred[label]), np.mean(~pred[~label])]))
