"""Preprocessing speed on CPU: sync_sdk (PyAV + NumPy) against the official route, in one process.

Input: a generated 60-s 1280x720 30-fps H.264 (libx264 defaults) + 44.1-kHz stereo AAC file, cached under
the temp dir. Measured, as video-seconds prepared per wall-second:
  sync_sdk  whole file: one streaming decode (iter_clips, 5-s chunks), prepare_inputs for each of the 12
            5-s windows; one window: prepare_inputs(path, start_sec=30) (seek, decode 5 s).
  official  example.py's route: the ffmpeg CLI re-encode to 25 fps / 256 / 16 kHz (its exact filter
            string, default codecs), then the whole result read back as torchvision.read_video does
            (PyAV, every frame to rgb24, mean of channels) and the same transforms per window. Its
            first full decode (only to read fps and size) and its .wav extraction are not counted.
Wall and CPU seconds (this process + ffmpeg) are reported; CPU time is the steadier figure on a shared
machine. Writes benchmarks/results/preprocess_cpu.json. Needs the ffmpeg CLI (`apt-get install -y ffmpeg`);
without it only sync_sdk is measured.

    python benchmarks/preprocess.py [--repeats 2] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sync_sdk.geometry import (  # noqa: E402
    SEG_FRAMES,
    SEG_SAMPLES,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    crop_offsets,
    official_window,
    window_segment_starts,
)
from sync_sdk.inputs.cpu import log_mel, video_input  # noqa: E402
from sync_sdk.inputs.window import prepare_inputs  # noqa: E402
from sync_sdk.media import iter_clips  # noqa: E402

SECONDS, WIDTH, HEIGHT, FPS, SAMPLE_RATE = 60, 1280, 720, 30, 44100
ONE_WINDOW_START = 30.0
FFMPEG_FILTER = ("fps=25,scale=iw*256/'min(iw,ih)':ih*256/'min(iw,ih)',"
                 "crop='trunc(iw/2)'*2:'trunc(ih/2)'*2")


def make_input(path: Path) -> Path:
    """The benchmark file: moving gradients, a textured background, a box that moves and clicks."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    texture = rng.random((HEIGHT, WIDTH), dtype=np.float32) * 24
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        aus = out.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        for i in range(SECONDS * FPS):
            t = i / FPS
            img = np.stack([(xx * 0.2 + 60 * t) % 256, (yy * 0.3 + 40 * np.sin(t)) % 256,
                            ((xx + yy) * 0.1 + texture) % 256], axis=-1).astype(np.uint8)
            x = int((WIDTH - 200) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 3)))
            img[300:500, x:x + 200] = 255
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode())
        t = np.arange(SECONDS * SAMPLE_RATE) / SAMPLE_RATE
        clicks = (np.sin(2 * np.pi * t / 3) > 0.99) * np.sin(2 * np.pi * 2000 * t)  # when the box turns
        tone = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.3 * clicks
        pcm = np.stack([tone, 0.5 * tone]).astype(np.float32)
        for k in range(0, pcm.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, k:k + 1024]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = SAMPLE_RATE, k
            out.mux(aus.encode(frame))
        out.mux(aus.encode())
    tmp.rename(path)
    return path


# ------------------------------------------------------------------ sync_sdk route
def ours_whole(path: Path) -> int:
    """All 12 non-overlapping 5-s windows from one streaming decode; returns the number of windows."""
    n = 0
    for clip in iter_clips(path, chunk_sec=5.0):
        if len(clip.frames) == WINDOW_FRAMES and len(clip.audio) == WINDOW_SAMPLES:
            prepare_inputs(clip, start_sec=clip.start_sec)
            n += 1
    return n


def ours_one(path: Path) -> None:
    prepare_inputs(path, start_sec=ONE_WINDOW_START)


# ------------------------------------------------------------------ official route
def official_decode(path: Path, out_dir: Path):
    """ffmpeg re-encode (example.py's command), then read_video's full decode of the result."""
    new = out_dir / "reencoded_25fps_256side_16000hz.mp4"
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "panic", "-y", "-i", str(path), "-vf", FFMPEG_FILTER,
           "-ar", "16000", str(new)]
    subprocess.run(cmd, check=True)
    with av.open(str(new)) as c:  # as torchvision.io.read_video(pts_unit='sec') decodes
        c.seek(0, stream=c.streams.video[0])
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(new)) as c:
        c.seek(0, stream=c.streams.audio[0])
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1).mean(axis=0)
    return frames, audio


def official_window_inputs(frames, audio, start_sec: float):
    """The test transform on fully decoded arrays (same arithmetic as prepare_inputs)."""
    v0, a0 = official_window(0.0, start_sec)
    top, left = crop_offsets(*frames.shape[1:3])
    crop = frames[v0:v0 + WINDOW_FRAMES, top:top + 224, left:left + 224]
    v_starts, a_starts = window_segment_starts(0, 0)
    vid = video_input(np.stack([crop[s:s + SEG_FRAMES] for s in v_starts]))
    aud = log_mel(np.stack([audio[a0 + s:a0 + s + SEG_SAMPLES] for s in a_starts]))
    return vid, aud


def official_whole(path: Path, out_dir: Path) -> int:
    frames, audio = official_decode(path, out_dir)
    n = 0
    for k in range(SECONDS // 5):
        if (k + 1) * WINDOW_FRAMES <= len(frames) and (k + 1) * WINDOW_SAMPLES <= len(audio):
            official_window_inputs(frames, audio, 5.0 * k)
            n += 1
    return n


def official_one(path: Path, out_dir: Path) -> None:
    frames, audio = official_decode(path, out_dir)
    official_window_inputs(frames, audio, ONE_WINDOW_START)


# ------------------------------------------------------------------ harness
def best_of(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process's threads and its child processes), each the best of
    `repeats` runs. CPU time is the steadier figure on a shared machine."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, w = os.times(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w)
        t1 = os.times()
        cpus.append(sum(t1[:4]) - sum(t0[:4]))  # user, system, children_user, children_system
    return min(walls), min(cpus)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    ffmpeg = shutil.which("ffmpeg")
    ffv = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0] if ffmpeg else None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "av": av.__version__,
            "ffmpeg_cli": ffv, "load_avg_1min_at_start": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs per measurement")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "sync_sdk_bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "preprocess_cpu.json")
    args = ap.parse_args()

    t = time.perf_counter()
    path = make_input(args.cache_dir / f"bench_{SECONDS}s_{WIDTH}x{HEIGHT}_{FPS}fps_{SAMPLE_RATE}hz.mp4")
    print(f"input: {path} ({path.stat().st_size / 1e6:.1f} MB, ready in {time.perf_counter() - t:.1f} s)")
    info = machine()
    print(f"machine: {info['cpu_count']} x {info['cpu_model']}, load {info['load_avg_1min_at_start']}")

    def measure(whole, one) -> dict:
        r = {}
        r["whole_sec"], r["whole_cpu_sec"] = best_of(whole, args.repeats)
        r["one_window_sec"], r["one_window_cpu_sec"] = best_of(one, args.repeats)
        return r

    res = {"ours": measure(lambda: ours_whole(path), lambda: ours_one(path)), "official": None}
    if shutil.which("ffmpeg") is None:
        print("ffmpeg CLI not found: the official route needs it. Install it with `apt-get install -y ffmpeg`.")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            res["official"] = measure(lambda: official_whole(path, Path(tmp)), lambda: official_one(path, Path(tmp)))
            frames, audio = official_decode(path, Path(tmp))
            vid_o, aud_o = official_window_inputs(frames, audio, ONE_WINDOW_START)
            vid, aud = prepare_inputs(path, start_sec=ONE_WINDOW_START)
            res["agreement_one_window"] = {  # the re-encode is lossy: close, not equal
                "vid_mean_abs_diff": float(np.abs(vid - vid_o).mean()),
                "aud_mean_abs_diff": float(np.abs(aud - aud_o).mean())}

    rows = [("sync_sdk (PyAV + NumPy)", res["ours"])] + ([("official (ffmpeg + read back)", res["official"])]
                                                          if res["official"] else [])
    print(f"\n{'route':30s} {'one 5-s window':>17s} {'whole 60 s':>17s} {'video-s per s':>14s}")
    print(f"{'':30s} {'wall s (cpu s)':>17s} {'wall s (cpu s)':>17s} {'(whole, wall)':>14s}")
    for name, r in rows:
        r["video_sec_per_sec_whole"] = SECONDS / r["whole_sec"]
        r["video_sec_per_sec_one_window"] = 5.0 / r["one_window_sec"]
        one, whole = f"{r['one_window_sec']:.2f} ({r['one_window_cpu_sec']:.2f})", \
            f"{r['whole_sec']:.2f} ({r['whole_cpu_sec']:.2f})"
        print(f"{name:30s} {one:>17s} {whole:>17s} {r['video_sec_per_sec_whole']:14.2f}")
    if res["official"]:
        o, u = res["official"], res["ours"]
        res["speedup"] = {k: o[k] / u[k] for k in ("whole_sec", "whole_cpu_sec", "one_window_sec",
                                                   "one_window_cpu_sec")}
        sp = res["speedup"]
        one = f"{sp['one_window_sec']:.1f}x ({sp['one_window_cpu_sec']:.1f}x)"
        whole = f"{sp['whole_sec']:.1f}x ({sp['whole_cpu_sec']:.1f}x)"
        print(f"{'speed-up (official / sync_sdk)':30s} {one:>17s} {whole:>17s}")
        print(f"agreement on the window at {ONE_WINDOW_START} s: {res['agreement_one_window']}")
    res.update(machine=info, repeats=args.repeats, input={
        "seconds": SECONDS, "size": [WIDTH, HEIGHT], "fps": FPS, "video": "h264 (libx264 defaults)",
        "audio": f"aac {SAMPLE_RATE} Hz stereo", "one_window_start_sec": ONE_WINDOW_START})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
