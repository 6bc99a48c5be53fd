"""The model inputs of a window's shift views (runtime/views.py says what a view is and how views combine).

A view with shift d first keeps the video crop and moves the audio crop by d; where that audio is
outside the media it keeps the audio crop and moves the video crop by -d instead; a view that fits
neither way is left out. The unshifted view must fit (its errors are the caller's).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sync_sdk.errors import ClipTooShortError, SilentAudioWarning, WindowOutOfRangeError
from sync_sdk.inputs.window import WindowVideo, decode_span, window_audio, window_flags, window_media
from sync_sdk.media.source import is_path, normalise_source


@dataclass
class View:
    """One view's model inputs: vid (S, 16, 3, 224, 224) float32, or a WindowVideo that makes it on
    demand (np.asarray(vid)), aud (S, 1, 128, 66); the video crop starts at start_sec and the audio
    crop shift_sec after where the caller's offset puts it; flags:
    what its media lacks (`window_flags`: "silent_audio", "static_video")."""

    shift_sec: float
    start_sec: float
    vid: np.ndarray | WindowVideo
    aud: np.ndarray
    flags: tuple[str, ...] = ()


def view_placements(start_sec: float, offset_sec: float, shifts: Sequence[float]
                    ) -> tuple[tuple[float, ...], list[list[tuple[float, float]]]]:
    """(the views' shifts, the unshifted first; per view, the (start_sec, offset_sec) placements to try in
    order: the audio moved by the shift, else the video moved by minus the shift)."""
    order = (0.0, *(d for d in shifts if d != 0.0))
    return order, [[(start_sec, offset_sec)] if d == 0.0 else
                   [(start, round(offset_sec + d, 6)) for start in (start_sec, round(start_sec - d, 6))]
                   for d in order]


def view_inputs(source, start_sec: float, offset_sec: float, shifts: Sequence[float]) -> list[View]:
    """The views of the window at start_sec (s) with the audio shifted by offset_sec (s), as
    `preprocess.prepare_inputs` makes them; the unshifted view first. A file is decoded once for all
    views, and views with one video crop share one `vid`: a WindowVideo, whose float32 input the
    encoder makes a batch at a time."""
    order, tries = view_placements(start_sec, offset_sec, shifts)
    source = normalise_source(source)
    if is_path(source):
        source = decode_span(source, [(off, start) for placements in tries for start, off in placements])
    vids: dict[float, WindowVideo] = {}
    out = []
    for d, candidates in zip(order, tries):
        for start, off in candidates:
            try:
                with warnings.catch_warnings():
                    if d != 0.0:  # the unshifted view has said so already
                        warnings.simplefilter("ignore", SilentAudioWarning)
                    frames, audio = window_media(source, offset_sec=off, start_sec=start)
            except (WindowOutOfRangeError, ClipTooShortError):
                if d == 0.0:
                    raise
                continue
            if start not in vids:
                vids[start] = WindowVideo(frames)
            out.append(View(d, start, vids[start], window_audio(audio), window_flags(frames, audio)))
            break
    return out
