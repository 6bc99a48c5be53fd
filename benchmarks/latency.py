"""Latency of the exported model per stage and per 14-segment clip, against PyTorch eager FP32.

One process, same inputs for every backend: PyTorch eager FP32 (the official way of running the
model), ONNX Runtime fp32 and int8 (CPU provider; CUDA provider too where present, with fp16).
Sizes: `tiny` (ModelConfig "tiny") and `full` (the official sync model), both with seeded random
weights (speed does not depend on the weights). Each row is the median of `--repeats` runs after
one warm-up run (backends take turns, run by run), and states its ratio to PyTorch eager on the same measurement and the largest
relative difference of its output from the PyTorch output.

Full size on a 2-core CPU is slow (about 2.3 s per visual segment in PyTorch), so by default its
visual encoder is timed on one segment and its clip time is derived (audio 14 + 14 x visual 1 +
head, marked "derived"); `--full-clip` measures the clip instead.

    python benchmarks/latency.py                                  # tiny + full, 2 threads
    python benchmarks/latency.py --sizes tiny --repeats 5
    python benchmarks/latency.py --sizes full --full-repeats 3 --export-root /tmp/exports

SyncEngine section ("engine" in the JSON; --engine-sizes, --scan-sizes, default tiny): per backend, one
stream update (one new 0.32-s step: 1 audio + 1 visual segment encoded, the head over the cached window)
against engine.predict on one in-memory clip, with the ratio expected from the stage rows (1/14 of the
encoder work plus the head), and the scan throughput (video-seconds per second, decoding included) of a
--scan-sec synthetic file, hop 0.32 s, with the segment cache and without it.

Exports are cached under --export-root (one per size and seed). Writes
benchmarks/results/latency_cpu.json (latency_<gpu>.json when a CUDA provider ran).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sync_sdk.config import ModelConfig  # noqa: E402
from sync_sdk.weights.manifest import read_manifest  # noqa: E402

N_SEG = 14


@dataclass
class Row:
    size: str
    stage: str            # audio_encoder | visual_encoder | head | clip
    backend: str          # torch-eager | onnxruntime
    precision: str
    device: str
    batch: str            # what one run processes
    median_s: float
    runs_s: list = field(default_factory=list)
    ratio_vs_torch: float | None = None   # torch median / this median (> 1: faster than torch)
    max_rel_diff: float | None = None     # vs the torch output of the same inputs
    derived: bool = False


# ---------------------------------------------------------------------------- set-up
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_torch_model(size: str, seed: int):
    """Seeded random-weight torch model for "tiny" or "full" (the official sync config)."""
    from sync_sdk.export_onnx import random_state_dict
    from sync_sdk.model import build_model, load_weights
    model = build_model("tiny" if size == "tiny" else "sync")
    return load_weights(model, random_state_dict(model, seed))


def exporter_fingerprint() -> str:
    """Short hash of the exporter's sources: a cached export is reused only by the same exporter."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted((ROOT / "sync_sdk" / "export_onnx").glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def ensure_export(model, size: str, seed: int, root: Path, precisions: list[str]) -> Path:
    """Export dir for (size, seed, exporter) with fp32 and the asked variants; reused when it fits."""
    from sync_sdk.export_onnx import export_model
    out = root / f"{size}-seed{seed}-{exporter_fingerprint()}"
    variants = [p for p in precisions if p != "fp32"]
    try:
        m = read_manifest(out)
        if m.config == model.config and set(precisions) <= set(m.precisions("onnx")):
            return out
    except Exception:  # no or stale export: rebuild
        pass
    t = time.perf_counter()
    export_model(model, out, f"{size}-random-seed{seed}", precision="fp32", variants=variants,
                 backend="onnxruntime", say=lambda s: None)
    print(f"  exported {size} to {out} in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def make_inputs(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """One clip: vid (14,16,3,224,224) in [-1,1], aud (14,1,128,66) ~ N(0,1)."""
    rng = np.random.default_rng(seed)
    return {"vid": rng.uniform(-1, 1, (N_SEG, 16, 3, 224, 224)).astype(np.float32),
            "aud": rng.standard_normal((N_SEG, 1, 128, 66)).astype(np.float32)}


def backends(model, export_dir: Path, precisions: list[str], threads: int) -> list:
    """[torch eager, ORT CPU per precision, ORT CUDA per precision (when available)]."""
    import onnxruntime
    import torch

    from sync_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sync_sdk.backends.torch_backend import TorchBackend
    torch.set_num_threads(threads)
    out = [TorchBackend(model, "cpu")]
    out += [OnnxRuntimeBackend.from_dir(export_dir, providers=["cpu"], threads=threads, precision=p)
            for p in precisions if p != "fp16"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        out += [OnnxRuntimeBackend.from_dir(export_dir, providers=["cuda"], precision=p)
                for p in precisions if p != "int8"]
    return out


# ---------------------------------------------------------------------------- measurements
# Each measurement returns (fn, what one run processes); fn() runs it once on a backend.
def audio_encoder(be, x: dict):
    """Audio encoder on the clip's 14 segments."""
    return (lambda: be.encode_audio(x["aud"])), "14 segments"


def visual_encoder(be, x: dict, n: int = N_SEG):
    """Visual encoder on the first n segments of the clip."""
    return (lambda: be.encode_video(x["vid"][:n])), f"{n} segment{'s' * (n > 1)}"


def head(be, x: dict):
    """Sync head on one clip's features (computed by torch, the same for every backend)."""
    return (lambda: be.head(x["vfeat"], x["afeat"])), "1 clip"


def clip(be, x: dict):
    """Whole 14-segment clip: both encoders, then the head on their features."""
    def run():
        vf = be.encode_video(x["vid"]).reshape(1, N_SEG * 8, -1)
        af = be.encode_audio(x["aud"]).reshape(1, N_SEG * 6, -1)
        return be.head(vf, af)
    return run, "1 clip (14 segments)"


def interleaved(fns: list, repeats: int) -> list[tuple[float, list[float], np.ndarray]]:
    """(median s, runs, output) per fn: one warm-up each, then `repeats` rounds of one run per fn,
    so that a change of machine load hits every backend alike."""
    outs = [np.asarray(fn()) for fn in fns]
    runs = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            runs[i].append(time.perf_counter() - t)
    return [(statistics.median(r), r, o) for r, o in zip(runs, outs)]


def rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def bench_size(size: str, args) -> list[Row]:
    """Every measurement of one model size on every backend (the torch backend first)."""
    print(f"[{size}] building and exporting", flush=True)
    model = build_torch_model(size, args.seed)
    export_dir = ensure_export(model, size, args.seed, Path(args.export_root), args.precisions)
    bes = backends(model, export_dir, args.precisions, args.threads)
    x = make_inputs(model.config, args.seed + 1)
    full = size == "full"
    # head inputs: the torch features of the clip (full size: segment 0's, repeated, to save ~30 s)
    vfeat = bes[0].encode_video(x["vid"][:1 if full else N_SEG])
    x["vfeat"] = np.resize(vfeat, (N_SEG, *vfeat.shape[1:])).reshape(1, N_SEG * 8, -1)
    x["afeat"] = bes[0].encode_audio(x["aud"]).reshape(1, N_SEG * 6, -1)
    repeats = args.full_repeats if full else args.repeats
    plan = [("audio_encoder", audio_encoder, {}),
            ("visual_encoder", visual_encoder, {"n": 1} if full and not args.full_clip else {}),
            ("head", head, {})]
    if not full or args.full_clip:
        plan.append(("clip", clip, {}))
    rows = []
    for stage, measurement, kw in plan:
        fns, batches = zip(*(measurement(be, x, **kw) for be in bes))
        results = interleaved(list(fns), repeats)
        torch_median, torch_out = results[0][0], results[0][2]
        for be, batch, (median, runs, out) in zip(bes, batches, results):
            backend, device = be.name.split("-")[0], be.name.split("-")[-1]
            row = Row(size, stage, "torch-eager" if backend == "torch" else backend,
                      getattr(be, "precision", "fp32"), device, batch, median, runs,
                      ratio_vs_torch=torch_median / median, max_rel_diff=rel_diff(out, torch_out))
            rows.append(row)
            print(f"  {stage:15s} {be.name:24s} {batch:22s} {median:9.4f} s  x{row.ratio_vs_torch:5.2f}"
                  f"  rel.diff {row.max_rel_diff:.1e}", flush=True)
    if full and not args.full_clip:
        rows += derived_clip_rows(rows, size)
    return rows


def derived_clip_rows(rows: list[Row], size: str) -> list[Row]:
    """Clip time per backend = audio (14 segments) + 14 x visual (1 segment) + head."""
    out, torch_s = [], None
    for r in [r for r in rows if r.stage == "audio_encoder"]:
        same = {q.stage: q for q in rows if (q.backend, q.precision, q.device) == (r.backend, r.precision, r.device)}
        s = same["audio_encoder"].median_s + N_SEG * same["visual_encoder"].median_s + same["head"].median_s
        torch_s = torch_s or s
        out.append(Row(size, "clip", r.backend, r.precision, r.device, "1 clip (14 segments)", s,
                       ratio_vs_torch=torch_s / s, derived=True))
    return out


# ---------------------------------------------------------------------------- engine: stream and scan
def engines(size: str, args) -> list:
    """A SyncEngine per backend of `backends` (same export, same threads)."""
    from sync_sdk.engine import SyncEngine
    model = build_torch_model(size, args.seed)
    export_dir = ensure_export(model, size, args.seed, Path(args.export_root), args.precisions)
    return [SyncEngine(be, model_id=f"{size}-random-seed{args.seed}")
            for be in backends(model, export_dir, args.precisions, args.threads)]


def stream_and_clip(engine, av, repeats: int) -> dict:
    """Median s of one stream update (one 0.32-s step after a full window: 1 audio + 1 visual segment
    encoded, head over the cached 14) and of engine.predict on one in-memory clip (14 segments).
    Both include their feature computation (log-mel, frame table), neither decodes."""
    engine.predict(av)  # warm-up
    clip_runs, update_runs = [], []
    stream = engine.stream()
    stream.push_video(av.frames[:122])
    stream.push_audio(av.audio[:78080])  # window 0 (segments 0..13)
    for k in range(1, repeats + 2):  # update 1 warms the one-segment shapes
        stream.push_video(av.frames[122 + 8 * (k - 1):122 + 8 * k])
        encoded = stream.cache_stats()["visual_segments_encoded"]
        t = time.perf_counter()
        new = stream.push_audio(av.audio[78080 + 5120 * (k - 1):78080 + 5120 * k])
        dt = time.perf_counter() - t
        assert len(new) == 1 and stream.cache_stats()["visual_segments_encoded"] == encoded + 1
        if k > 1:
            update_runs.append(dt)
            t = time.perf_counter()
            engine.predict(av)
            clip_runs.append(time.perf_counter() - t)
    return {"stream_update_s": statistics.median(update_runs), "engine_clip_s": statistics.median(clip_runs),
            "stream_update_runs_s": update_runs, "engine_clip_runs_s": clip_runs}


def scan_throughput(engine, path: Path, seconds: float) -> dict:
    """Wall time and video-seconds per second of engine.scan(path, hop 0.32 s), with the segment cache
    and without it (every window encodes its 14 segments); decoding included in both."""
    out = {}
    for cached in (True, False):
        engine.clear_cache()
        t = time.perf_counter()
        timeline = engine.scan(path, hop_sec=0.32, cache=cached)
        dt = time.perf_counter() - t
        st = engine.cache_stats()
        out["cached" if cached else "uncached"] = {
            "seconds": dt, "video_sec_per_sec": seconds / dt, "windows": len(timeline),
            "visual_segments_encoded": st["visual_segments_encoded"],
            "audio_segments_encoded": st["audio_segments_encoded"]}
    out["cached_speedup"] = out["uncached"]["seconds"] / out["cached"]["seconds"]
    return out


def scan_file(root: Path, seconds: float, seed: int) -> Path:
    """A synthetic mp4 of `seconds` (written once under the export root)."""
    from sync_sdk.synthetic import generate_clip, write_clip
    path = root / f"scan-{seconds:g}s-seed{seed}.mp4"
    if not path.is_file():
        write_clip(generate_clip(seed, duration_sec=seconds), path)
    return path


def engine_rows(size: str, args, stage_rows: list[Row]) -> list[dict]:
    """Per backend: stream update vs full clip (ratio, and the ratio expected from the stage rows:
    (audio 14 + visual 14) / 14 + head, over the clip), and the scan throughput cached vs uncached."""
    from sync_sdk.media import clip_from_arrays
    from sync_sdk.synthetic import generate_clip
    print(f"[{size}] engine: stream update vs clip" + (", scan" if size in args.scan_sizes else ""), flush=True)
    repeats = args.full_repeats if size == "full" else args.repeats
    g = generate_clip(args.seed, duration_sec=5.0 + 0.32 * (repeats + 2))
    av = clip_from_arrays(g.frames, g.fps, g.audio, g.sample_rate)
    path = scan_file(Path(args.export_root), args.scan_sec, args.seed) if size in args.scan_sizes else None
    out = []
    for eng in engines(size, args):
        be = eng.backend
        backend, device = be.name.split("-")[0], be.name.split("-")[-1]
        prec = getattr(be, "precision", "fp32")
        same = {r.stage: r.median_s for r in stage_rows
                if r.size == size and r.precision == prec and r.device == device
                and r.backend == ("torch-eager" if backend == "torch" else backend)}
        row = {"size": size, "backend": be.name, **stream_and_clip(eng, av, repeats)}
        row["update_over_clip"] = row["stream_update_s"] / row["engine_clip_s"]
        if {"audio_encoder", "head", "clip"} <= set(same):
            row["expected_update_over_clip"] = ((same["clip"] - same["head"]) / N_SEG + same["head"]) / same["clip"]
        if path is not None:
            row["scan"] = {"file_sec": args.scan_sec, **scan_throughput(eng, path, args.scan_sec)}
        out.append(row)
        scan = row.get("scan")
        print(f"  {be.name:24s} update {row['stream_update_s']:.4f} s  clip {row['engine_clip_s']:.4f} s  "
              f"ratio {row['update_over_clip']:.3f} (1/14 = {1 / N_SEG:.3f})"
              + (f"  scan {scan['cached']['video_sec_per_sec']:.2f} vs {scan['uncached']['video_sec_per_sec']:.2f}"
                 f" video-s/s (x{scan['cached_speedup']:.1f})" if scan else ""), flush=True)
    return out


def table(rows: list[Row]) -> str:
    lines = [f"{'size':5s} {'stage':15s} {'backend':12s} {'prec':5s} {'device':6s} {'batch':22s} "
             f"{'median s':>10s} {'vs torch':>9s} {'rel.diff':>9s}"]
    for r in rows:
        diff = "-" if r.max_rel_diff is None else f"{r.max_rel_diff:.1e}"
        lines.append(f"{r.size:5s} {r.stage:15s} {r.backend:12s} {r.precision:5s} {r.device:6s} "
                     f"{r.batch + (' *' if r.derived else ''):22s} {r.median_s:10.4f} "
                     f"{r.ratio_vs_torch:8.2f}x {diff:>9s}")
    return "\n".join(lines) + "\n(* derived: audio 14 + 14 x visual 1 segment + head)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", choices=("tiny", "full"), default=["tiny", "full"])
    p.add_argument("--precisions", nargs="+", choices=("fp32", "fp16", "int8"), default=["fp32", "int8"],
                   help="ONNX Runtime variants (fp16 runs on the CUDA provider only)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per row, tiny")
    p.add_argument("--full-repeats", type=int, default=2, help="timed runs per row, full size")
    p.add_argument("--full-clip", action="store_true", help="time the whole full-size clip (slow on CPU)")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-root", default=os.path.join(os.path.expanduser("~"), ".cache", "sync_sdk",
                                                           "bench_exports"))
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument("--engine-sizes", nargs="*", choices=("tiny", "full"), default=["tiny"],
                   help="sizes whose SyncEngine stream update vs clip is measured (full: slow on CPU)")
    p.add_argument("--scan-sizes", nargs="*", choices=("tiny", "full"), default=["tiny"],
                   help="sizes whose scan throughput, cached vs uncached, is measured")
    p.add_argument("--scan-sec", type=float, default=60.0, help="length of the scanned synthetic file (s)")
    args = p.parse_args(argv)
    if "fp32" not in args.precisions:
        args.precisions.insert(0, "fp32")

    import onnxruntime
    import torch
    rows, engine_results = [], []
    t0 = time.time()
    for size in args.sizes:
        rows += bench_size(size, args)
        if size in args.engine_sizes:
            engine_results += engine_rows(size, args, rows)
    print(table(rows))
    gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    name = f"latency_{torch.cuda.get_device_name(0).replace(' ', '_')}.json" if gpu and torch.cuda.is_available() \
        else "latency_cpu.json"
    out = args.out or ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "what": "per-stage and per-clip latency, PyTorch eager fp32 vs ONNX Runtime (same inputs, random weights)",
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": args.threads,
        "load_average_at_end": os.getloadavg(), "seconds_total": round(time.time() - t0, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "repeats": {"tiny": args.repeats, "full": args.full_repeats}, "warmup_runs": 1,
        "rows": [asdict(r) for r in rows],
        "engine": {"what": "SyncEngine per backend: one stream update (1 new audio + 1 visual segment, head "
                           "over the cached window) vs engine.predict on one in-memory clip (features + 14 "
                           "segments + head); scan of a synthetic file, hop 0.32 s, segment cache on vs off",
                   "rows": engine_results},
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
