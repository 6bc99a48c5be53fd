"""Timeline plot (matplotlib, imported only here and only when a plot is asked for)."""
from __future__ import annotations

from pathlib import Path

from sync_sdk.extras import require_module
from sync_sdk.results import Timeline


def plot_timeline(timeline: Timeline, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG/PDF/SVG: predicted offset (s, positive = audio leads) and its probability over the
    window centre times (s). Needs matplotlib (pip install 'sync-sdk[plot]')."""
    require_module("matplotlib", "plot", "plotting").use("Agg", force=False)
    import matplotlib.pyplot as plt
    centre = timeline.start_sec + timeline.window_sec / 2
    fig, (ax_off, ax_conf) = plt.subplots(2, 1, sharex=True, figsize=(9, 5), constrained_layout=True)
    ax_off.axhline(0.0, color="0.7", lw=1)
    ax_off.step(centre, timeline.offset_sec, where="mid", color="tab:blue")
    ax_off.plot(centre, timeline.offset_sec, ".", color="tab:blue", ms=4)
    ax_off.set_ylim(-2.1, 2.1)
    ax_off.set_ylabel("offset (s)\n+ = audio leads")
    ax_conf.plot(centre, timeline.confidence, color="tab:orange")
    ax_conf.set_ylim(0, 1.02)
    ax_conf.set_ylabel("probability")
    ax_conf.set_xlabel("window centre (s)")
    summary = timeline.summary()
    ax_off.set_title(title or f"{timeline.source or 'scan'}: {summary['offset_sec']:+.1f} s overall "
                              f"({summary['n_windows']} windows, hop {timeline.hop_sec:.2f} s)")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
