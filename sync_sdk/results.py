"""What the engine returns: one window's offset prediction (SyncResult) and a scan's Timeline.

Offsets are in seconds on the 21-class grid (class k <-> -2.0 + 0.2 k s), or continuous when refined
(runtime/refine.py); positive = the audio leads the video. Window times are media seconds of the
window's 5-s crop start.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sync_sdk.geometry import IN_SYNC_CLASS, NUM_OFFSET_CLASSES, class_to_offset

TOPK = 5
CSV_FIELDS = ("window", "start_sec", "end_sec", "offset_sec", "class_index", "confidence", "in_sync",
              "in_sync_tolerant", "views", "flags")
FINE_FIELDS = ("class_offset_sec", "offset_low_sec", "offset_high_sec")  # CSV columns of refined windows


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float64 for the sum, returned as float32."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class SyncResult:
    """Offset prediction for one 5-s window.

    offset_sec: predicted offset (s), positive = audio leads video: the class's grid value, or with
    refine the continuous offset (fine_offset_sec); class_offset_sec: always the class's grid value;
    class_index: 0..20 (10 = in sync); offset_interval_sec: (low, high) s around a refined offset
    (about 90 % coverage on synthetic clips, benchmarks/fine_offset.py), None unless refined;
    probs: (21,) softmax probabilities; logits: (21,) raw head output; topk: the TOPK most likely
    (offset_sec, prob) pairs, best first; start_sec: media time of the window's crop start.
    views: the (shift_sec, video_start_sec) of each shift view the answer combines (at a media's
    edges a view whose audio lies outside is moved or left out, so the views can differ between calls).
    flags: what the window's media lacks, "silent_audio" and/or "static_video": with either, the
    answer rests on no evidence (`has_evidence` is False) whatever its confidence.
    """

    class_index: int
    probs: np.ndarray
    logits: np.ndarray
    start_sec: float = 0.0
    source: str | None = None
    topk: tuple[tuple[float, float], ...] = field(default=())
    views: tuple[tuple[float, float], ...] = field(default=())
    flags: tuple[str, ...] = field(default=())
    fine_offset_sec: float | None = None
    offset_interval_sec: tuple[float, float] | None = None

    @classmethod
    def from_logits(cls, logits: np.ndarray, start_sec: float = 0.0, source: str | None = None,
                    k: int = TOPK, views=(), flags=()) -> "SyncResult":
        """Build from (21,) offset logits; views: (shift_sec, video_start_sec) pairs; flags: names."""
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if logits.shape != (NUM_OFFSET_CLASSES,):
            raise ValueError(f"expected {NUM_OFFSET_CLASSES} offset logits, got shape {logits.shape}")
        probs = softmax(logits)
        order = np.argsort(-probs, kind="stable")[:k]
        topk = tuple((class_to_offset(int(i)), float(probs[i])) for i in order)
        return cls(class_index=int(order[0]), probs=probs, logits=logits, start_sec=float(start_sec),
                   source=source, topk=topk, views=tuple(sorted((float(d), float(v)) for d, v in views)),
                   flags=tuple(flags))

    def with_fine(self, fine: tuple[float, float, float]) -> "SyncResult":
        """This result refined: fine = (offset_sec, low_sec, high_sec) (runtime/refine.py `fit`)."""
        return replace(self, fine_offset_sec=float(fine[0]), offset_interval_sec=(float(fine[1]), float(fine[2])))

    @property
    def offset_sec(self) -> float:
        """The refined offset (s) when there is one, else the class's grid value."""
        return self.class_offset_sec if self.fine_offset_sec is None else self.fine_offset_sec

    @property
    def class_offset_sec(self) -> float:
        """The grid value (s) of class_index."""
        return class_to_offset(self.class_index)

    @property
    def refined(self) -> bool:
        """offset_sec is the continuous refined offset (predict / scan with refine=True)."""
        return self.fine_offset_sec is not None

    @property
    def confidence(self) -> float:
        """Probability of the predicted class."""
        return float(self.probs[self.class_index])

    @property
    def has_evidence(self) -> bool:
        """Both streams carry something to match (no flags); False: the offset means nothing."""
        return not self.flags

    @property
    def in_sync(self) -> bool:
        """The predicted class is 0.0 s (also when refined: thresholds on the continuous offset_sec are the
        caller's)."""
        return self.class_index == IN_SYNC_CLASS

    @property
    def in_sync_tolerant(self) -> bool:
        """The predicted class is within one class (+-0.2 s) of 0.0 s."""
        return abs(self.class_index - IN_SYNC_CLASS) <= 1

    def to_dict(self) -> dict:
        """JSON-ready dict (probs as a list of 21 floats, index = class); a refined result adds
        class_offset_sec and offset_interval_sec [low, high]."""
        out = {
            "source": self.source,
            "start_sec": round(self.start_sec, 6),
            "offset_sec": self.offset_sec,
            "class_index": self.class_index,
            "confidence": self.confidence,
            "in_sync": self.in_sync,
            "in_sync_tolerant": self.in_sync_tolerant,
            "has_evidence": self.has_evidence,
            "flags": list(self.flags),
            "views": [{"shift_sec": d, "video_start_sec": round(v, 6)} for d, v in self.views],
            "topk": [{"offset_sec": o, "prob": p} for o, p in self.topk],
            "probs": [float(p) for p in self.probs],
        }
        if self.refined:
            out.update(class_offset_sec=self.class_offset_sec, offset_interval_sec=list(self.offset_interval_sec))
        return out

    def __repr__(self) -> str:
        digits = 3 if self.refined else 1
        return (f"SyncResult(offset_sec={self.offset_sec:+.{digits}f}, confidence={self.confidence:.3f}, "
                f"in_sync={self.in_sync}, start_sec={self.start_sec:.2f})")


@dataclass(frozen=True)
class Timeline:
    """Predictions of a scan: one SyncResult per window, windows `hop_sec` apart on the 0.32-s grid.

    window_sec: length of each window's crop (5.0 s); duration_sec: media length scanned.
    """

    windows: tuple[SyncResult, ...]
    hop_sec: float
    window_sec: float = 5.0
    source: str | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self):
        return iter(self.windows)

    def __getitem__(self, i: int) -> SyncResult:
        return self.windows[i]

    @property
    def start_sec(self) -> np.ndarray:
        return np.array([w.start_sec for w in self.windows], dtype=np.float64)

    @property
    def offset_sec(self) -> np.ndarray:
        return np.array([w.offset_sec for w in self.windows], dtype=np.float64)

    @property
    def confidence(self) -> np.ndarray:
        return np.array([w.confidence for w in self.windows], dtype=np.float64)

    @property
    def probs(self) -> np.ndarray:
        """(n_windows, 21) probabilities."""
        return np.stack([w.probs for w in self.windows]) if self.windows else np.zeros((0, 21), np.float32)

    def summary(self) -> dict:
        """Whole-file verdict over the windows with evidence (`has_evidence`): the class with the highest
        mean probability (offset_sec; its mean probability, mean_prob), or offset_sec None when no
        window has evidence. n_flagged counts the windows without."""
        if not self.windows:
            return {"n_windows": 0}
        used = [w for w in self.windows if w.has_evidence]
        out = {"n_windows": len(self.windows), "n_flagged": len(self.windows) - len(used)}
        if not used:
            return {**out, "offset_sec": None, "mean_prob": None}
        mean = np.stack([w.probs for w in used]).mean(axis=0)
        k = int(np.argmax(mean))
        return {
            **out,
            "offset_sec": class_to_offset(k),
            "mean_prob": float(mean[k]),
            "median_window_offset_sec": float(np.median([w.offset_sec for w in used])),
            "fraction_in_sync": float(np.mean([w.in_sync for w in used])),
            "fraction_in_sync_tolerant": float(np.mean([w.in_sync_tolerant for w in used])),
        }

    @property
    def fields(self) -> tuple[str, ...]:
        """The CSV columns: CSV_FIELDS, and FINE_FIELDS when the windows are refined."""
        return CSV_FIELDS + (FINE_FIELDS if any(w.refined for w in self.windows) else ())

    def rows(self) -> list[dict]:
        """One flat dict per window with the `fields`."""
        rows = [{
            "window": i, "start_sec": round(w.start_sec, 6), "end_sec": round(w.start_sec + self.window_sec, 6),
            "offset_sec": w.offset_sec, "class_index": w.class_index, "confidence": round(w.confidence, 6),
            "in_sync": w.in_sync, "in_sync_tolerant": w.in_sync_tolerant,
            "views": " ".join(f"{d:+.1f}" for d, _ in w.views), "flags": " ".join(w.flags),
        } for i, w in enumerate(self.windows)]
        if FINE_FIELDS[0] in self.fields:
            for row, w in zip(rows, self.windows):
                low, high = w.offset_interval_sec or (None, None)
                row.update(class_offset_sec=w.class_offset_sec, offset_low_sec=low, offset_high_sec=high)
        return rows

    def to_dict(self, probs: bool = False) -> dict:
        """JSON-ready dict: source, hop, summary and the windows (with the 21 probs if asked)."""
        windows = self.rows()
        if probs:
            for row, w in zip(windows, self.windows):
                row["probs"] = [float(p) for p in w.probs]
        return {"source": self.source, "hop_sec": self.hop_sec, "window_sec": self.window_sec,
                "summary": self.summary(), "windows": windows}

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV text with a header row (`fields`); written to `path` when given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_json(self, path: str | Path | None = None, probs: bool = False) -> str:
        text = json.dumps(self.to_dict(probs=probs), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text
