"""GPU check: the GPU tests, then the latency benchmark, on one CUDA card; writes one JSON file.

On a GPU machine with Python 3.12, torch (CUDA), CuPy and nvcc but no PyAV (wheel in ../shared/wheels,
carried in a git-ignored .whl/ folder):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/av-*.whl
    PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out "$OUT"

1. tests: pytest on tests/test_gpu.py (kernels vs NumPy, torch-CUDA backend vs PyTorch FP32 logits,
   stream vs predict), test_gpu_host.py, test_gpu_plan.py, test_kernels_compile.py (junit XML beside).
2. latency, full-size sync model with random weights (no checkpoint on the machine), batch 1, one
   14-segment window, from decoded frames (T, 256, 454, 3) uint8 and 16-kHz PCM in host memory to the
   offset class (a Python int):
   - official route: inputs prepared on the CPU with torch as the official transforms do (centre crop,
     segments, uint8 -> fp16 / 255, (x - 0.5) / 0.5 in fp16, torchaudio MelSpectrogram, log, pad,
     AST norm), copied to the GPU, PyTorch eager under torch.autocast('cuda') (fp16), FP32 weights;
   - ours: GpuFeatures (pinned upload of the crop window, kernels/*.cu + cuFFT) feeding the
     TorchCudaBackend (FP16 weights, CUDA graphs) on one stream;
   - stream update: one new segment (16 frames + 10240 samples) -> features -> both encoders at N=1
     -> SegmentCache ring on the device -> head over 14 cached segments -> offset class;
   plus per-stage times, kernel-only device times, and the logits of both routes against PyTorch FP32.
TensorRT is not used here (the TensorRT backend belongs to the exporter); the JSON says whether it
is installed. Median of --runs timed runs after 3 warm-ups, wall clock, each run ending on the host.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEST_FILES = ["tests/test_gpu.py", "tests/test_gpu_host.py", "tests/test_gpu_plan.py",
              "tests/test_kernels_compile.py"]
N_SEG = 14
VSTARTS = 2 + 8 * np.arange(N_SEG)        # segment s of the window starting at frame 0 / sample 0
ASTARTS = 1280 + 5120 * np.arange(N_SEG)
AST_MEAN, AST_STD = -4.2677393, 4.5689974


# ------------------------------------------------------------------------------------------- tests
def run_tests(out: Path, timeout: int) -> dict:
    xml = out / "gpu_tests.xml"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", *TEST_FILES], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    result = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
              "output_tail": proc.stdout[-3000:] + proc.stderr[-1000:]}
    if xml.is_file():
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        result.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
        bad = []
        for case in suite.iter("testcase"):
            for tag in ("failure", "error"):
                node = case.find(tag)
                if node is not None:
                    bad.append({"test": f"{case.get('classname')}::{case.get('name')}",
                                "message": (node.get("message") or "")[:500]})
        result["failed"] = bad
    return result


# ------------------------------------------------------------------------------------------- inputs
def synthetic_clip(n_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """frames (T, 256, 454, 3) uint8 (moving gradients + noise), pcm (T * 640,) float32 (tones + noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:454]
    frames = np.empty((n_frames, 256, 454, 3), np.uint8)
    for t in range(n_frames):
        for c in range(3):
            frames[t, :, :, c] = (x * (c + 1) + y * 2 + 7 * t * (c + 1)) % 256
    frames ^= rng.integers(0, 16, frames.shape, dtype=np.uint8)
    n = n_frames * 640
    tt = np.arange(n) / 16000.0
    pcm = 0.2 * np.sin(2 * np.pi * 440 * tt) * (np.sin(2 * np.pi * 1.5 * tt) > 0) + 0.02 * rng.standard_normal(n)
    return frames, pcm.astype(np.float32)


def official_inputs(frames: np.ndarray, pcm: np.ndarray, mel):
    """The official test transform on the CPU with torch, then .to('cuda'): (1,14,16,3,224,224) fp16,
    (1,14,1,128,66) fp32. `mel`: torchaudio MelSpectrogram, or None to use sync_sdk.inputs.cpu.log_mel."""
    import torch

    from sync_sdk.inputs.gpu_plan import centre_crop_offsets
    v = torch.from_numpy(frames).permute(0, 3, 1, 2)                    # (T, 3, H, W) as read_video TCHW
    top, left = centre_crop_offsets(v.shape[2], v.shape[3])
    v = v[:, :, top:top + 224, left:left + 224][:125]                   # RGBSpatialCrop, 5-s crop
    a = torch.from_numpy(pcm)[:80000]
    vid = torch.stack([v[s:s + 16] for s in VSTARTS.tolist()])          # GenerateMultipleSegments
    aud = torch.stack([a[s:s + 10240] for s in ASTARTS.tolist()])
    vid = vid.half() / 255.0                                            # RGBToHalfToZeroOne
    vid = (vid - torch.tensor(0.5, dtype=torch.half)) / torch.tensor(0.5, dtype=torch.half)  # RGBNormalize
    if mel is not None:
        spec = torch.log(mel(aud) + 1e-6)                               # AudioMelSpectrogram, AudioLog
        spec = torch.nn.functional.pad(spec, (0, 66 - spec.shape[-1]))  # PadOrTruncate(66)
        spec = (spec - AST_MEAN) / (2 * AST_STD)                        # AudioNormalizeAST
    else:
        from sync_sdk.inputs.cpu import log_mel
        spec = torch.from_numpy(log_mel(aud.numpy()))[:, 0]
    return vid[None].to("cuda"), spec[:, None][None].to("cuda")


def random_model(name: str, seed: int = 0):
    """build_model(name) on the GPU, FP32, eval, with random weights (`randomise`)."""
    import torch

    from sync_sdk.model import build_model
    torch.manual_seed(seed)
    return randomise(build_model(name, device="cuda"))


def randomise(model, std: float = 0.02):
    """Every parameter N(0, std), LayerNorm scales N(1, std): a stand-in for trained weights."""
    import torch
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
                m.weight.normal_(1.0, std)
    return model.eval()


# ------------------------------------------------------------------------------------------- timing
def timed(fn, runs: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    q = np.percentile(ts, [10, 50, 90])
    return {"median_ms": round(float(q[1]), 3), "p10_ms": round(float(q[0]), 3),
            "p90_ms": round(float(q[2]), 3), "min_ms": round(float(min(ts)), 3), "runs": runs}


def device_ms(stream, fn, runs: int = 20) -> float:
    """Median device time (CUDA events on `stream`) of fn()."""
    import cupy as cp
    fn()
    times = []
    for _ in range(runs):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return round(float(np.median(times)), 4)


# ------------------------------------------------------------------------------------------- benchmark
def benchmark(runs: int) -> dict:
    import cupy as cp
    import torch

    from sync_sdk.backends.torch_cuda_backend import TorchCudaBackend
    from sync_sdk.inputs.gpu import GpuFeatures
    from sync_sdk.runtime.cache import SegmentCache

    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 reference without TF32
    torch.backends.cudnn.allow_tf32 = False
    try:
        import torchaudio
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=1024, win_length=400,
                                                   hop_length=160, n_mels=128)
        mel_impl = f"torchaudio {torchaudio.__version__} (CPU)"
    except ImportError:
        mel, mel_impl = None, "sync_sdk.inputs.cpu.log_mel (NumPy, CPU): torchaudio missing"

    n_updates = min(runs, 15)
    frames, pcm = synthetic_clip(18 + 8 * (N_SEG + 3 + n_updates))
    model = random_model("sync")
    res: dict = {"model": "sync (full size, random weights: randomise())", "batch": 1, "segments": N_SEG,
                 "frames_shape": list(frames.shape), "official_mel": mel_impl,
                 "torch_cpu_threads": torch.get_num_threads()}

    # --- official route: CPU preparation + eager autocast fp16
    def official():
        vid, aud = official_inputs(frames, pcm, mel)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            logits = model(vid, aud)
        return int(logits.argmax())

    t0 = time.perf_counter()
    vid, aud = official_inputs(frames, pcm, mel)
    with torch.no_grad():
        fp32 = model(vid.float(), aud).float().cpu().numpy()[0]
        with torch.autocast("cuda", dtype=torch.float16):
            auto = model(vid, aud).float().cpu().numpy()[0]
    res["official"] = timed(official, runs)
    res["official_prep_only"] = timed(lambda: official_inputs(frames, pcm, mel), runs)

    # --- ours: GPU features + torch-CUDA FP16 backend with CUDA graphs, one stream
    feats = GpuFeatures(video_dtype="float16")
    backend = TorchCudaBackend(copy.deepcopy(model), precision="fp16", stream=feats.stream)

    def ours_logits():
        with feats.stream:
            v = feats.video_segments(frames, VSTARTS)
            a = feats.log_mel_segments(pcm, ASTARTS)
            vf, af = backend.encode_video(v), backend.encode_audio(a)
            return backend.head(vf.reshape(1, N_SEG * 8, -1), af.reshape(1, N_SEG * 6, -1))

    def ours():
        with feats.stream:
            return int(ours_logits().argmax())

    with feats.stream:  # read back on the stream that made them
        ours_l = cp.asnumpy(ours_logits())[0]
    res["ours"] = timed(ours, runs)
    res["speedup_vs_official"] = round(res["official"]["median_ms"] / res["ours"]["median_ms"], 2)
    res["logits"] = {
        "max_abs_logit_fp32": round(float(np.abs(fp32).max()), 4),
        "ours_vs_fp32_max_abs": round(float(np.abs(ours_l - fp32).max()), 5),
        "official_autocast_vs_fp32_max_abs": round(float(np.abs(auto - fp32).max()), 5),
        "argmax_fp32": int(fp32.argmax()), "argmax_ours": int(ours_l.argmax()),
        "argmax_official_autocast": int(auto.argmax()),
    }

    # --- stages of our route (each ends with a stream sync)
    with feats.stream:
        v_dev = feats.video_segments(frames, VSTARTS).copy()
        a_dev = feats.log_mel_segments(pcm, ASTARTS).copy()
        vf, af = backend.encode_video(v_dev), backend.encode_audio(a_dev)
    sync = feats.stream.synchronize

    def stage(fn):
        def run():
            with feats.stream:
                fn()
            sync()
        return timed(run, runs)

    res["ours_stages"] = {
        "features_from_host": stage(lambda: (feats.video_segments(frames, VSTARTS),
                                             feats.log_mel_segments(pcm, ASTARTS))),
        "encode_video_14": stage(lambda: backend.encode_video(v_dev)),
        "encode_audio_14": stage(lambda: backend.encode_audio(a_dev)),
        "head": stage(lambda: backend.head(vf.reshape(1, -1, vf.shape[-1]), af.reshape(1, -1, af.shape[-1]))),
    }
    frames_dev, pcm_dev = cp.asarray(frames[:130]), cp.asarray(pcm)
    with feats.stream:
        res["kernels_device_ms"] = {
            "log_mel_14_segments": device_ms(feats.stream, lambda: feats.log_mel_segments(pcm_dev, ASTARTS)),
            "video_14_segments_fp16": device_ms(feats.stream, lambda: feats.video_segments(frames_dev, VSTARTS)),
            "video_14_segments_resize_1080p": _resize_ms(feats),
        }

    # --- stream update: one new segment, both encoders at N=1, head over the cached ring
    cache = SegmentCache(capacity=2 * N_SEG)

    def window(g_last: int):
        segs = range(g_last - N_SEG + 1, g_last + 1)
        with feats.stream:
            vfe = cache.fetch("video", [("bench", "video", g) for g in segs], lambda pos: backend.encode_video(
                feats.video_segments(frames, [2 + 8 * segs[p] for p in pos])))
            afe = cache.fetch("audio", [("bench", "audio", g) for g in segs], lambda pos: backend.encode_audio(
                feats.log_mel_segments(pcm, [1280 + 5120 * segs[p] for p in pos])))
            return int(backend.head(vfe.reshape(1, N_SEG * 8, -1), afe.reshape(1, N_SEG * 6, -1)).argmax())

    window(N_SEG - 1)  # fill the ring (segments 0..13)
    next_g = iter(range(N_SEG, N_SEG + 3 + n_updates))
    res["stream_update"] = timed(lambda: window(next(next_g)), n_updates, warmup=3)
    res["stream_update"]["encoded"] = {k: cache.stats().get(k) for k in ("audio_segments_encoded",
                                                                          "visual_segments_encoded")}
    res["targets"] = {"speedup_at_least_3x": res["speedup_vs_official"] >= 3.0,
                      "stream_update_under_3ms": res["stream_update"]["median_ms"] < 3.0}
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def _resize_ms(feats) -> float:
    import cupy as cp
    big = cp.asarray(np.random.default_rng(1).integers(0, 256, (130, 1080, 1920, 3), dtype=np.uint8))
    return device_ms(feats.stream, lambda: feats.video_segments(big, VSTARTS, resize=True), runs=5)


# ------------------------------------------------------------------------------------------- main
def environment() -> dict:
    import cupy as cp
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cupy": cp.__version__, "card": torch.cuda.get_device_name(0),
           "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
           "driver": cp.cuda.runtime.driverGetVersion()}
    try:
        import tensorrt
        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["nvidia_smi"] = None
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", str(REPO / "benchmarks" / "results")),
                    help="folder for gpu_check_<card>.json and gpu_tests.xml (default $OUT or benchmarks/results)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per measurement (default 20)")
    ap.add_argument("--skip-tests", action="store_true", help="only the benchmark")
    ap.add_argument("--test-timeout", type=int, default=240, help="seconds for the pytest run (default 240)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = {"script": "benchmarks/gpu_check.py", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment(),
              "tensorrt_note": "TensorRT is not exercised by this script: measured path = CuPy kernels + "
                               "PyTorch-CUDA FP16 backend with CUDA graphs"}
    card = report["environment"]["card"]
    path = out / f"gpu_check_{re.sub(r'[^a-z0-9]+', '_', card.lower()).strip('_')}.json"
    if not args.skip_tests:
        try:
            report["tests"] = run_tests(out, args.test_timeout)
        except subprocess.TimeoutExpired:
            report["tests"] = {"returncode": None, "error": f"pytest exceeded {args.test_timeout} s"}
        path.write_text(json.dumps(report, indent=2))  # keep the test results if the benchmark dies
        print(json.dumps(report["tests"], indent=2)[:4000], flush=True)
    report["benchmark"] = benchmark(args.runs)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["benchmark"], indent=2))
    print(f"wrote {path}")
    tests_ok = args.skip_tests or report["tests"].get("returncode") == 0
    return 0 if tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
