"""Attribution figure (matplotlib, imported only here, only when a plot is asked for).

Rows: (1) audio and visual segment scores over media time, (2) the spectral map (mel band x time),
(3) the spatial map laid over the centre frames of the segments the patch trials corrupted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sync_sdk.extras import require_module
from sync_sdk.geometry import CROP_SIZE

MAX_FRAMES = 4


def plot_attribution(attr, path: str | Path, events_sec=None, title: str | None = None) -> Path:
    """Write the Attribution `attr` as an image (format from the suffix: png, pdf, svg).

    events_sec: media times (s) to mark on the timeline (e.g. known cues)."""
    FigureCanvasAgg = require_module("matplotlib.backends.backend_agg", "plot", "plotting").FigureCanvasAgg
    Figure = require_module("matplotlib.figure", "plot", "plotting").Figure
    frames = [] if attr.spatial is None or attr.frames is None else list(attr.frames)
    segs = list(attr.spatial_segments)
    if len(frames) > MAX_FRAMES:  # patch trials over every segment: show a few, evenly spread
        pick = np.linspace(0, len(frames) - 1, MAX_FRAMES).round().astype(int)
        frames, segs = [frames[i] for i in pick], [segs[i] for i in pick]
    rows = 1 + (attr.spectral is not None) + bool(frames)
    ncols = max(1, len(frames))
    fig = Figure(figsize=(max(9, 3 * ncols), 3.2 * rows), constrained_layout=True)
    FigureCanvasAgg(fig)
    spec = fig.add_gridspec(rows, ncols)
    t = np.asarray(attr.segment_times)
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.32

    ax = fig.add_subplot(spec[0, :])
    ax.axhline(0.0, color="0.7", lw=1)
    if attr.audio is not None:
        ax.plot(t, attr.audio, "o-", color="tab:orange", label="audio segments")
    if attr.video is not None:
        ax.plot(t, attr.video, "s-", color="tab:blue", label="visual segments")
    for e in events_sec if events_sec is not None else []:
        ax.axvline(e, color="tab:green", ls="--", lw=1)
    ax.set_xlim(t[0] - step, t[-1] + step)
    ax.set_xlabel("segment centre (s)")
    ax.set_ylabel(f"score ({attr.measure})")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"evidence for {attr.base.offset_sec:+.1f} s (p={attr.base.confidence:.2f}); "
                          f"{attr.method}, trials {attr.trials}")
    row = 1
    if attr.spectral is not None:
        ax = fig.add_subplot(spec[row, :])
        edges = attr.band_edges or [0, attr.spectral.shape[0]]
        im = ax.imshow(attr.spectral, aspect="auto", origin="lower", cmap="magma",
                       extent=(t[0] - step / 2, t[-1] + step / 2, edges[0], edges[-1]))
        ax.set_xlabel("segment centre (s)")
        ax.set_ylabel("mel bin")
        ax.set_title("time-frequency cells")
        fig.colorbar(im, ax=ax)
        row += 1
    if frames:
        vmax = float(np.abs(attr.spatial).max()) or 1.0
        for i, (frame, seg) in enumerate(zip(frames, segs)):
            ax = fig.add_subplot(spec[row, i])
            ax.imshow(frame)
            ax.imshow(attr.spatial, cmap="inferno", alpha=0.5, vmin=0, vmax=vmax,
                      extent=(0, CROP_SIZE, CROP_SIZE, 0), interpolation="nearest")
            ax.set_title(f"segment {seg} ({t[seg]:.2f} s)", fontsize=9)
            ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
