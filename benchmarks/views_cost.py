"""What the shift views cost (sync_sdk/runtime/views.py), against one window in the same run.

    python benchmarks/views_cost.py [--model synthetic-tiny] [--clips 8] [--scan-sec 30] [--repeats 3]

Rows, each the median of --repeats runs (the modes take turns within a run):
- inputs: the three views' model inputs of --clips 5.2-s H.264/AAC files, by `view_inputs` (one
  decode per file, one video mapping per video crop) and by one `prepare_inputs` call per view (a
  decode each); one view's `prepare_inputs` for scale;
- predict: `SyncEngine.predict` over the same files with the model's views and with one view;
- scan: `SyncEngine.scan` of a --scan-sec file, hop 0.32 s, with the views and with one view.
Prints a table and writes benchmarks/results/views_cost_cpu.json (seconds and ratios).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_sdk import synthetic  # noqa: E402
from sync_sdk.engine import SyncEngine  # noqa: E402
from sync_sdk.inputs.views import view_inputs  # noqa: E402
from sync_sdk.inputs.window import prepare_inputs  # noqa: E402

CLIP_SEC = 5.2
SEED = 970_000_000


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def each(files: list[Path], fn):
    """A callable that runs fn on every file, keeping no result."""
    def run():
        for f in files:
            fn(f)
    return run


def made_views(path: Path, shifts) -> list:
    """`view_inputs` with each video crop's float32 input made (once per crop, as the encoder would;
    view_inputs leaves them to be made a batch at a time)."""
    views = view_inputs(path, 0.0, 0.0, shifts)
    return [np.asarray(v.vid) for v in {id(v.vid): v for v in views}.values()] + views


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="synthetic-tiny")
    ap.add_argument("--clips", type=int, default=8, help="5.2-s files for the inputs and predict rows")
    ap.add_argument("--scan-sec", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "views_cost_cpu.json")
    args = ap.parse_args(argv)
    views = SyncEngine.from_pretrained(args.model, backend="onnxruntime", threads=args.threads)
    one = SyncEngine.from_pretrained(args.model, backend="onnxruntime", threads=args.threads, shift_views=[0.0])
    shifts = views.shift_views
    with tempfile.TemporaryDirectory(prefix="sync_sdk_views_") as tmp:
        files = [synthetic.write_clip(synthetic.generate_clip(SEED + i, duration_sec=CLIP_SEC), Path(tmp) / f"c{i}.mp4")
                 for i in range(args.clips)]
        long_file = synthetic.write_clip(synthetic.generate_clip(SEED - 1, duration_sec=args.scan_sec),
                                         Path(tmp) / "long.mp4")
        placed = [(v.shift_sec, v.start_sec) for v in view_inputs(files[0], 0.0, 0.0, shifts)]
        modes = {  # each result is dropped at once: holding 8 clips' inputs (~2 GB) would time the allocator
            "inputs: view_inputs (one decode)": each(files, lambda f: made_views(f, shifts)),
            "inputs: prepare_inputs per view": each(files, lambda f: [prepare_inputs(f, offset_sec=d, start_sec=s)
                                                                      for d, s in placed]),
            "inputs: one view": each(files, prepare_inputs),
            "predict: views": each(files, views.predict),
            "predict: one view": each(files, one.predict),
            "scan: views": lambda: (views.clear_cache(), views.scan(long_file)),
            "scan: one view": lambda: (one.clear_cache(), one.scan(long_file)),
        }
        for fn in modes.values():  # warm-up
            fn()
        runs = {name: [] for name in modes}
        for _ in range(args.repeats):
            for name, fn in modes.items():
                runs[name].append(timed(fn))
    sec = {name: statistics.median(t) for name, t in runs.items()}
    ratios = {"inputs: per-view decode / one decode": sec["inputs: prepare_inputs per view"] / sec["inputs: view_inputs (one decode)"],
              "inputs: views / one view": sec["inputs: view_inputs (one decode)"] / sec["inputs: one view"],
              "predict: views / one view": sec["predict: views"] / sec["predict: one view"],
              "scan: views / one view": sec["scan: views"] / sec["scan: one view"]}
    print(f"\nmodel {args.model}, views {list(shifts)} s, {args.clips} files of {CLIP_SEC} s, scan of "
          f"{args.scan_sec:.0f} s, {args.threads} threads, median of {args.repeats}")
    print(f"{'mode':<36}{'seconds':>9}")
    for name, s in sec.items():
        print(f"{name:<36}{s:>9.3f}")
    for name, r in ratios.items():
        print(f"{name:<36}{r:>8.2f}x")
    out = {"model": args.model, "shift_views_sec": list(shifts), "clips": args.clips, "clip_sec": CLIP_SEC,
           "scan_sec": args.scan_sec, "threads": args.threads, "repeats": args.repeats, "machine": platform.processor()
           or platform.machine(), "seconds": sec, "runs": runs, "ratios": ratios, "view_placement": placed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
