"""The av-benchmark resize (media/resize.py) against torch's own uint8 kernel, in the same run.

    python benchmarks/resize.py [--frames 16] [--repeats 5]

For frames of 1280x720, 1920x1080, 640x360 and 480x640 (portrait): `resize_short_crop` (NumPy,
torchvision's uint8 Resize(224, BICUBIC) + CenterCrop(224) bit for bit) and
torch.nn.functional.interpolate(uint8, mode="bicubic", antialias=True) + the crop, which is what
torchvision runs on uint8 frames on the CPU (one thread each: the SDK's resize is single-threaded).
Each row: median ms per frame over --repeats, the ratio ours / torch, and whether the outputs are
identical. Prints a table and writes benchmarks/results/resize_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_sdk.geometry import CROP_SIZE, crop_offsets  # noqa: E402
from sync_sdk.media.resize import resize_short_crop, resized_size  # noqa: E402

SIZES = ((720, 1280), (1080, 1920), (360, 640), (640, 480))  # (H, W)


def torch_resize_crop(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, 224, 224, 3) with torch's native uint8 antialiased bicubic kernel."""
    import torch
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    nh, nw = resized_size(*frames.shape[1:3])
    y = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True)
    top, left = crop_offsets(nh, nw, CROP_SIZE)
    return y[:, :, top:top + CROP_SIZE, left:left + CROP_SIZE].permute(0, 2, 3, 1).numpy()


def per_frame_ms(fn, frames: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(frames)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / len(frames), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "resize_cpu.json")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for h, w in SIZES:
        frames = rng.integers(0, 256, (args.frames, h, w, 3), dtype=np.uint8)
        ours_ms, ours = per_frame_ms(resize_short_crop, frames, args.repeats)
        torch_ms, ref = per_frame_ms(torch_resize_crop, frames, args.repeats)
        rows.append({"height": h, "width": w, "ours_ms_per_frame": round(ours_ms, 2),
                     "torch_ms_per_frame": round(torch_ms, 2), "ratio_ours_to_torch": round(ours_ms / torch_ms, 2),
                     "identical": bool(np.array_equal(ours, ref))})
    print(f"{'frame':>10} {'ours ms':>8} {'torch ms':>9} {'ours/torch':>10} identical")
    for r in rows:
        print(f"{r['width']:>5}x{r['height']:<4} {r['ours_ms_per_frame']:>8} {r['torch_ms_per_frame']:>9} "
              f"{r['ratio_ours_to_torch']:>10} {r['identical']}")
    result = {"benchmark": "resize", "frames": args.frames, "repeats": args.repeats, "rows": rows,
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                          "load_avg_1_5_15": list(os.getloadavg())}}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
