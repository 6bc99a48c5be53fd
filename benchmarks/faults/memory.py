"""Peak memory (max resident set size, MB) of the `sync-sdk` CLI with the bundled model (issue #27).

    python benchmarks/faults/memory.py [--long-sec 1200] [--short-sec 60] [--json OUT.json]
    measure_memory(work_dir)  # {"predict_peak_mb", "scan_peak_mb", "scan_long_over_short", ...}

Each figure is one fresh CLI process measured by `/usr/bin/time -v` ("Maximum resident set size"; where
it is missing, getrusage(RUSAGE_CHILDREN) of a wrapper process): `predict` of the 5.2-s demo clip with
the model's three shift views (its default) and with one, `scan` of that clip, and scans of a generated
short (1-min) and long (20-min) low-resolution file (96 x 96 H.264 at 25 fps and 16-kHz PCM in
Matroska, a 4-s pattern of flashes and beeps repeated; decoded to 256 x 256 frames like any square
video). scan_peak_mb is the largest of the three scans; scan_long_over_short is 1.0 when a scan's
memory does not grow with the file's length.

Where the memory went before issue #27 (predict 1.41 GB with three views, 660 MB with one; scan
887 MB): ONNX Runtime's CPU arena kept the memory-pattern block of the largest run (a batch of 14
video segments: ~750 MB) for the life of the process; predict held each view's video input as float32
(135 MB per video crop, and a concatenated copy); scan decoded 5.12 s at a time (a chunk decoded
ahead, the rolling span and its copy per chunk: ~150 MB at 256 x 256). Now video segments go to a CPU
backend one at a time and ONNX Runtime plans no memory patterns on the CPU (its arena holds ~35 MB),
predict makes float32 video inputs per encoder call from the uint8 frames (WindowVideo), and scan
decodes 1.28 s at a time into one reused frame buffer.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sync_sdk.synthetic import generate_clip, write_clip  # noqa: E402

CLI = "import sys; from sync_sdk.cli.main import main; sys.exit(main(sys.argv[1:]))"
# without /usr/bin/time: run the CLI in a child and report the children's peak RSS (KB) on stderr's last line
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")
TIME = "/usr/bin/time"
FPS, SAMPLE_RATE = 25, 16000
PATTERN_SEC = 4  # the generated files repeat this many seconds of frames and samples
TARGET_MB = 400.0  # issue #27: predict and scan of the bundled model within this


def write_test_media(path: Path, seconds: float, size: int = 96) -> Path:
    """A low-resolution test file of `seconds` s: size x size H.264 (ultrafast) at 25 fps and mono
    16-kHz PCM in Matroska; each second a white flash with a 0.1-s 1-kHz beep over a 220-Hz hum. A
    20-min file takes ~10 s to write."""
    yy, xx = np.mgrid[:size, :size]
    pictures = []
    for i in range(PATTERN_SEC * FPS):
        img = np.stack([(xx + 3 * i) % 64 * 3, (yy + 2 * i) % 64 * 3, np.full_like(xx, i * 7 % 256)], -1)
        pictures.append(np.full_like(img, 255) if i % FPS == 0 else img)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    second = 0.02 * np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1000 * t) * (t < 0.1)
    pcm = (second * 32767).astype(np.int16)[None, :]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as box:
        video = box.add_stream("libx264", rate=FPS)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency"}
        audio = box.add_stream("pcm_s16le", rate=SAMPLE_RATE)
        audio.layout = "mono"
        frames = [av.VideoFrame.from_ndarray(p.astype(np.uint8), format="rgb24") for p in pictures]
        for i in range(int(round(seconds * FPS))):
            frame = frames[i % len(frames)]
            frame.pts = i
            box.mux(video.encode(frame))
        box.mux(video.encode())
        for s in range(int(round(seconds))):
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, s * SAMPLE_RATE
            box.mux(audio.encode(frame))
        box.mux(audio.encode())
    return path


def cli_peak_mb(args: list[str], cwd: Path) -> float:
    """Peak RSS (MB) of one `sync-sdk ARGS` process; RuntimeError when the command fails."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    cli = [sys.executable, "-c", CLI, *args]
    timed = [TIME, "-v", *cli] if os.access(TIME, os.X_OK) else [sys.executable, "-c", WRAPPER, *cli]
    run = subprocess.run(timed, cwd=cwd, env=env, capture_output=True, text=True, errors="replace")
    if run.returncode != 0:
        raise RuntimeError(f"sync-sdk {' '.join(args)} failed ({run.returncode}): {run.stderr[-2000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    kb = int(found.group(1)) if found else int(run.stderr.strip().splitlines()[-1])
    return round(kb / 1024, 1)


def measure_memory(work_dir: str | Path, model: str = "synthetic-tiny", long_sec: float = 1200.0,
                   short_sec: float = 60.0) -> dict:
    """Peak RSS (MB) of predict and scan through the CLI (see the module doc), with the files' lengths
    (s) and the tool that measured them."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    clip = write_clip(generate_clip(0, offset_sec=0.6, duration_sec=5.2), work / "clip.mp4")
    short = write_test_media(work / "short.mkv", short_sec)
    long = write_test_media(work / "long.mkv", long_sec)
    model_args = ["--model", model]
    out = {
        "predict_peak_mb": cli_peak_mb(["predict", str(clip), *model_args], work),
        "predict_one_view_peak_mb": cli_peak_mb(["predict", str(clip), *model_args, "--shift-views", "0"], work),
        "scan_clip_peak_mb": cli_peak_mb(["scan", str(clip), *model_args, "--quiet"], work),
        "scan_short_peak_mb": cli_peak_mb(["scan", str(short), *model_args, "--quiet"], work),
        "scan_long_peak_mb": cli_peak_mb(["scan", str(long), *model_args, "--quiet"], work),
    }
    out["scan_peak_mb"] = max(out["scan_clip_peak_mb"], out["scan_short_peak_mb"], out["scan_long_peak_mb"])
    out["scan_long_over_short"] = round(out["scan_long_peak_mb"] / out["scan_short_peak_mb"], 3)
    out.update(long_sec=float(long_sec), short_sec=float(short_sec), model=model, target_mb=TARGET_MB,
               tool=TIME if os.access(TIME, os.X_OK) else "getrusage")
    return out


def table(result: dict) -> str:
    """One row per figure."""
    rows = [("predict, 3 views (MB)", result["predict_peak_mb"]),
            ("predict, 1 view (MB)", result["predict_one_view_peak_mb"]),
            ("scan, 5.2-s clip (MB)", result["scan_clip_peak_mb"]),
            (f"scan, {result['short_sec']:g}-s file (MB)", result["scan_short_peak_mb"]),
            (f"scan, {result['long_sec']:g}-s file (MB)", result["scan_long_peak_mb"]),
            ("scan long / short", result["scan_long_over_short"]),
            ("target (MB)", result["target_mb"])]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="synthetic-tiny")
    p.add_argument("--long-sec", type=float, default=1200.0, help="length of the long file (s, default 1200)")
    p.add_argument("--short-sec", type=float, default=60.0, help="length of the short file (s, default 60)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="memory_"))
    try:
        result = measure_memory(work, args.model, args.long_sec, args.short_sec)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
