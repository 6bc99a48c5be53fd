"""Shift views: one answer from a window and from copies of it with the audio shifted by whole classes.

A view with shift d (s, a multiple of 0.2) pairs the video crop with the audio crop d seconds later,
so a clip whose audio leads by O looks offset by O + d to it: one class higher for d = +0.2, one lower
for d = -0.2. The offset answer combines the views' 21-class probabilities (`combine`: candidates
|O| <= 2 s, each view's evidence over the candidates it covers); the synchronizability answer is the
mean of the views' log-odds. Views let a head that is weak at some offsets answer from a neighbouring
class where it is strong, and act as an ensemble otherwise.

The official models answer with one view, the default; a model folder asks for more in an
`inference.json` beside its checkpoint or export: {"shift_views_sec": [-0.2, 0.0, 0.2]}.

The views' model inputs are made by inputs/views.py (`view_inputs`, for predict and the Ray batch). Scan
and stream (`SegmentEncoder.window_logits`) encode each segment's audio once per view and leave out
a window's views whose audio lies outside the media; offset search adds the views to its shifts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from sync_sdk.errors import InputError
from sync_sdk.geometry import MODEL_RANGE_SEC, NUM_OFFSET_CLASSES, OFFSET_STEP_SEC
from sync_sdk.results import softmax
from sync_sdk.weights.manifest import INFERENCE_FILE

SINGLE_VIEW = (0.0,)
MAX_SHIFT_SEC = 1.0
ROBUST = 0.05  # weight of the uniform distribution mixed into each view's or shift's probabilities
_HALF = (NUM_OFFSET_CLASSES - 1) // 2  # class of residual 0


def check_views(shifts: Sequence[float]) -> tuple[float, ...]:
    """Validated shifts (s): distinct multiples of 0.2 within +-1 s, 0 among them; sorted."""
    out = tuple(sorted({round(float(d), 6) for d in shifts}))
    steps = np.asarray(out) / OFFSET_STEP_SEC
    if 0.0 not in out or not np.allclose(steps, np.round(steps), atol=1e-6) or max(map(abs, out)) > MAX_SHIFT_SEC:
        raise InputError(f"shift views must be distinct multiples of {OFFSET_STEP_SEC} s within "
                         f"+-{MAX_SHIFT_SEC} s and include 0, got {list(shifts)}")
    return out


def parse_views(text: str) -> tuple[float, ...]:
    """Shifts from a command line: comma-separated seconds, e.g. "-0.2,0,0.2" (validated: check_views)."""
    try:
        shifts = [float(x) for x in text.split(",")]
    except ValueError as e:
        raise InputError(f"shift views: comma-separated seconds such as -0.2,0,0.2, got {text!r}") from e
    return check_views(shifts)


def read_views(*folders: Path | None) -> tuple[float, ...]:
    """The shift views of the first of `folders` holding an inference.json; SINGLE_VIEW if none does."""
    for folder in folders:
        path = None if folder is None else Path(folder) / INFERENCE_FILE
        if path is not None and path.is_file():
            try:
                return check_views(json.loads(path.read_text())["shift_views_sec"])
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{path}: expected {{\"shift_views_sec\": [..]}} with shifts in seconds: {e}") from e
    return SINGLE_VIEW


def combine(shifts: np.ndarray, probs: np.ndarray, max_offset_sec: float | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets (M,), posterior (M,), coverage (M,)) from per-shift (K,) shifts and (K, 21) probabilities.

    Candidate O's evidence = sum over the shifts k covering it of log(21 q_k(class of O + d_k)),
    q = (1 - ROBUST) p + ROBUST / 21; posterior = softmax of the evidence over the covered candidates
    (|O| <= max_offset_sec when given); coverage = number of shifts covering each candidate."""
    steps = np.rint(np.asarray(shifts, np.float64) / OFFSET_STEP_SEC).astype(int)
    if not np.allclose(steps * OFFSET_STEP_SEC, shifts, atol=1e-6):
        raise InputError(f"shifts must be multiples of {OFFSET_STEP_SEC} s, got {list(shifts)}")
    n_cls = NUM_OFFSET_CLASSES
    q = (1 - ROBUST) * np.asarray(probs, np.float64) + ROBUST / n_cls
    evidence = np.log(n_cls * q)
    lo, hi = int((-steps).min()) - _HALF, int((-steps).max()) + _HALF
    total = np.zeros(hi - lo + 1)
    count = np.zeros(hi - lo + 1, int)
    for d, ev in zip(steps, evidence):
        first = -d - _HALF - lo  # candidate index of this shift's class 0
        total[first:first + n_cls] += ev
        count[first:first + n_cls] += 1
    offsets = (np.arange(lo, hi + 1) * OFFSET_STEP_SEC).round(6)
    keep = count > 0
    if max_offset_sec is not None:
        keep &= np.abs(offsets) <= max_offset_sec + 1e-9
    post = np.exp(total[keep] - total[keep].max())
    return offsets[keep], post / post.sum(), count[keep]


def combine_views(variant: str, shifts: Sequence[float], logits: np.ndarray) -> np.ndarray:
    """One window's answer from its views' logits (V, classes): the unshifted logits alone as they
    are; else for the offset model the log-posterior (21,) over offsets -2..2 s, for the
    synchronizability model the logits (2,) = (0, mean log-odds)."""
    logits = np.asarray(logits, np.float64)
    if len(shifts) == 1:
        return logits[0].astype(np.float32)
    if variant == "synchronizability":
        return np.array([0.0, np.mean(logits[:, 1] - logits[:, 0])], np.float32)
    _, post, _ = combine(np.asarray(shifts), softmax(logits), MODEL_RANGE_SEC)
    return np.log(post).astype(np.float32)
