"""Build TensorRT engines from the exported ONNX graphs (only where `tensorrt` imports and a GPU exists).

Networks are strongly typed: the precision is the one written in the ONNX graph (the fp16
variant keeps normalisation, softmax and logits in float32), so no FP16 builder flag is used
(TensorRT 10.12+ / 11 dropped weak typing). Each engine has optimisation profiles for the
dynamic axis: encoders - one tuned for streaming (1 segment) and one for clips (opt 14 segments,
max `max_clips` x 14); head - one for 1..`max_clips` windows. A timing cache file is reused
and updated across builds.
"""
from __future__ import annotations

import logging
from pathlib import Path

from sync_sdk.errors import BackendError
from sync_sdk.weights.manifest import gpu_compute_capability

log = logging.getLogger(__name__)


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(compute capability "major.minor", GPU name), through CuPy, else torch.cuda."""
    try:
        return gpu_compute_capability(device)
    except BackendError:
        import torch
        if not torch.cuda.is_available():
            raise
        major, minor = torch.cuda.get_device_capability(device)
        return f"{major}.{minor}", torch.cuda.get_device_name(device)


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT imports and a CUDA device is visible."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the tensorrt package is not installed"
    try:
        cc, name = gpu_info(0)
    except Exception as e:  # no CuPy / torch.cuda, no driver, no device
        return False, f"no usable GPU ({e})"
    return True, f"TensorRT {trt.__version__} on {name} (compute capability {cc})"


def profiles(stage: str, n_segments: int, max_clips: int) -> list[tuple[int, int, int]]:
    """(min, opt, max) of the dynamic axis for each optimisation profile of a stage."""
    if stage == "head":
        return [(1, 1, max_clips)]
    return [(1, 1, 1), (1, n_segments, n_segments * max_clips)]


def build_engine(onnx_path: str | Path, engine_path: str | Path, io: dict,
                 ranges: list[tuple[int, int, int]], timing_cache: str | Path,
                 workspace_gib: float = 8.0) -> dict:
    """Build and write one engine; returns its manifest fields (TensorRT version, GPU, profiles)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # strongly typed is the only mode from TensorRT 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache_path = Path(timing_cache)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    for lo, opt, hi in ranges:
        profile = builder.create_optimization_profile()
        for spec in io["inputs"]:
            rest = tuple(spec["shape"][1:])
            profile.set_shape(spec["name"], (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)

    log.info("building %s (profiles %s)", engine_path, ranges)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}")
    Path(engine_path).write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    cc, gpu = gpu_info(0)
    return {"tensorrt_version": trt.__version__, "compute_capability": cc, "gpu": gpu,
            "profiles": [list(r) for r in ranges]}
