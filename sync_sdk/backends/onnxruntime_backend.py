"""ONNX Runtime backend: the three exported graphs of an export directory (no torch).

Sessions are created once per stage and reused. The CPU provider is used unless a GPU
provider is asked for (or, with `providers=None`, CUDA is available). Precision variants
(all with float32 inputs/outputs): `fp32`, `fp16` (mixed precision: normalisation, softmax and
the logits stay float32; meant for GPU providers, on CPU it measures drift) and `int8`
(dynamic quantisation of the linear layers, per channel: the fast CPU variant, opt-in).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError, InputError
from sync_sdk.weights.manifest import PRECISIONS, STAGES, Manifest, read_manifest

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendError("the ONNX Runtime backend needs onnxruntime (pip install onnxruntime)") from e
    return onnxruntime


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Full provider names, CPU appended as the fallback; None = CUDA when available, else CPU."""
    ort = _import_ort()
    available = ort.get_available_providers()
    if providers is None:
        providers = ["cuda"] if "CUDAExecutionProvider" in available else ["cpu"]
    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    missing = [p for p in names if p not in available]
    if missing:
        raise BackendError(f"ONNX Runtime providers {missing} are not available here "
                           f"(available: {available})")
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


def session_options(threads: int | None = None, cpu: bool = True):
    """SessionOptions with all graph optimisations; `threads` = intra-op threads (None = ORT's default);
    cpu: the sessions run on the CPU provider.

    On the CPU, memory patterns are off: each plans one block for a whole run, which the CPU arena then
    keeps (+15 MB with one video segment a call, as the SDK runs them on a CPU). The arena stays on: it
    keeps only what the largest run needed at once and reuses it, where freeing every run's tensors
    leaves the process heap fragmented (peak RSS varying by +-30 MB from run to run)."""
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_mem_pattern = not cpu
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: fp16 graphs on CPU log harmless constant-folding notes
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return opts


class OnnxRuntimeBackend:
    """Backend protocol over ONNX Runtime sessions; NumPy float32 in and out.

    encode_audio (N,1,128,66) -> (N,6,a_dim); encode_video (N,16,3,224,224) -> (N,8,v_dim);
    head (B,S*8,v_dim), (B,S*6,a_dim) -> (B,num_classes).
    """

    def __init__(self, sessions: dict, config: ModelConfig, io: dict[str, dict], precision: str,
                 model_id: str = "") -> None:
        self.sessions = sessions
        self.config = config
        self.io = io
        self.precision = precision
        self.model_id = model_id
        self.providers = sessions["head"].get_providers()
        device = {v: k for k, v in PROVIDER_ALIASES.items()}.get(self.providers[0], self.providers[0])
        self.name = f"onnxruntime-{precision}-{device}"
        self.device = device
        self.device_arrays = False

    @classmethod
    def from_dir(cls, export_dir: str | Path, providers: Sequence[str] | None = None,
                 threads: int | None = None, precision: str | None = None) -> "OnnxRuntimeBackend":
        """Load the three graphs of `export_dir` after checking their sha256 against the manifest.

        precision: "fp32" | "fp16" | "int8"; None = the precision the export was built for when
        it has ONNX graphs of it, else fp32. providers: names or aliases "cpu", "cuda", "tensorrt".
        """
        manifest = read_manifest(export_dir)
        precision = precision or _default_precision(manifest)
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        ort = _import_ort()
        names = resolve_providers(providers)
        opts = session_options(threads, cpu=names[0] == "CPUExecutionProvider")
        sessions = {}
        for stage in STAGES:
            path, _ = manifest.verified_file(stage, precision)
            try:
                sessions[stage] = ort.InferenceSession(str(path), sess_options=opts, providers=names)
            except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
                raise BackendError(f"{path}: ONNX Runtime cannot load it ({e})") from e
        io = {s: manifest.stage_io(s) for s in STAGES}
        return cls(sessions, manifest.config, io, precision, manifest.model_id)

    def _run(self, stage: str, *arrays: np.ndarray) -> np.ndarray:
        spec = self.io[stage]
        feeds = {}
        for arr, inp in zip(arrays, spec["inputs"]):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            _check_shape(stage, inp, arr.shape)
            feeds[inp["name"]] = arr
        return self.sessions[stage].run([spec["outputs"][0]["name"]], feeds)[0]

    def encode_audio(self, aud: np.ndarray) -> np.ndarray:
        """aud (N, 1, 128, 66) float32 log-mel -> (N, 6, a_dim)."""
        return self._run("audio_encoder", aud)

    def encode_video(self, vid: np.ndarray) -> np.ndarray:
        """vid (N, 16, 3, 224, 224) float32 frames -> (N, 8, v_dim)."""
        return self._run("visual_encoder", vid)

    def head(self, vfeat: np.ndarray, afeat: np.ndarray) -> np.ndarray:
        """vfeat (B, S*8, v_dim), afeat (B, S*6, a_dim) -> logits (B, num_classes)."""
        return self._run("head", vfeat, afeat)


def _default_precision(manifest: Manifest) -> str:
    return manifest.precision if manifest.precision in manifest.precisions("onnx") else "fp32"


def _check_shape(stage: str, spec: dict, shape: tuple) -> None:
    want = spec["shape"]
    ok = len(shape) == len(want) and all(isinstance(w, str) or w == s for w, s in zip(want, shape))
    if not ok or (shape and shape[0] == 0):
        raise InputError(f"{stage}: input {spec['name']!r} has shape {tuple(shape)}, expected "
                         f"{tuple(want)} (named axes are free, at least 1)")
