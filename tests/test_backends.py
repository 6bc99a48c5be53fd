"""Backends: ONNX Runtime FP32 vs the PyTorch model and the reference outputs; export-dir checks."""
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import SHARED, reference_dir

from sync_sdk.config import ModelConfig
from sync_sdk.errors import BackendError, EngineMismatchError, InputError
from sync_sdk.weights.manifest import MANIFEST_NAME, check_engine, read_manifest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from sync_sdk.backends.onnxruntime_backend import OnnxRuntimeBackend, resolve_providers  # noqa: E402
from sync_sdk.backends.torch_backend import TorchBackend  # noqa: E402
from sync_sdk.export_onnx import export_model, random_state_dict  # noqa: E402
from sync_sdk.model import build_model, load_weights  # noqa: E402

QUIET = {"say": lambda s: None}


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to max |want|."""
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """(reference folder, torch model with its weights, fp32 export dir of that model)."""
    from sync_sdk.weights.checkpoint import load_checkpoint
    ref = reference_dir("SYNC_SDK_REFERENCE", SHARED / "reference" / "tiny_seed0")
    config = ModelConfig.from_reference_json(ref / "config.json")
    model = load_weights(build_model(config), load_checkpoint(ref / "state_dict.npz", config=config).state_dict)
    out = tmp_path_factory.mktemp("tiny_ref_export")
    export_model(model, out, "tiny_seed0", precision="fp32", **QUIET)
    return ref, model, out


def test_onnxruntime_fp32_matches_torch_and_reference(tiny_reference):
    ref, model, out = tiny_reference
    inputs, outputs = np.load(ref / "inputs.npz"), np.load(ref / "outputs.npz")
    vid = inputs["vid_lut"][inputs["vid_uint8"]]                       # (B, S, 16, 3, 224, 224)
    aud = inputs["aud"]
    b, s = aud.shape[:2]
    ort_be, torch_be = OnnxRuntimeBackend.from_dir(out, threads=2), TorchBackend(model)
    assert ort_be.config == model.config and ort_be.name == "onnxruntime-fp32-cpu"
    logits = {}
    for be in (ort_be, torch_be):
        vfeat = be.encode_video(vid.reshape(b * s, *vid.shape[2:]))
        afeat = be.encode_audio(aud.reshape(b * s, *aud.shape[2:]))
        np.testing.assert_allclose(vfeat.reshape(outputs["vfeat"].shape), outputs["vfeat"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(afeat.reshape(outputs["afeat"].shape), outputs["afeat"], rtol=1e-4, atol=1e-5)
        logits[be.name] = be.head(vfeat.reshape(b, s * 8, -1), afeat.reshape(b, s * 6, -1))
    assert rel_err(logits[ort_be.name], outputs["logits"]) < 1e-4
    assert rel_err(logits[ort_be.name], logits[torch_be.name]) < 1e-4


def test_onnxruntime_fp32_matches_torch_at_full_width(tmp_path):
    """Full-size widths, heads and token counts (768, 12 heads, 1569 visual / 74 audio tokens, 14
    segments, the official 3-block head), one block per encoder so export and one clip fit in CI
    time; random weights; one 14-segment clip through the three exported stages."""
    config = replace(ModelConfig.named("sync"), a_depth=1, v_depth=1)
    model = build_model(config)
    load_weights(model, random_state_dict(model, seed=3))
    export_model(model, tmp_path, "full-width", precision="fp32", **QUIET)
    rng = np.random.default_rng(4)
    vid = rng.uniform(-1, 1, (1, 14, 16, 3, 224, 224)).astype(np.float32)
    aud = rng.standard_normal((1, 14, 1, 128, 66)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(vid), torch.from_numpy(aud)).numpy()
    be = OnnxRuntimeBackend.from_dir(tmp_path, threads=2)
    got = be.head(be.encode_video(vid[0]).reshape(1, 14 * 8, -1), be.encode_audio(aud[0]).reshape(1, 14 * 6, -1))
    assert got.shape == (1, 21) and rel_err(got, want) < 1e-4


def test_sessions_are_created_once_with_the_thread_count(tiny_reference):
    _, _, out = tiny_reference
    be = OnnxRuntimeBackend.from_dir(out, threads=1)
    sessions = dict(be.sessions)
    be.encode_audio(np.zeros((2, 1, 128, 66), np.float32))
    be.encode_audio(np.zeros((1, 1, 128, 66), np.float32))
    assert be.sessions == sessions and be.providers == ["CPUExecutionProvider"]
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in sessions.values())


def test_bad_inputs_are_reported(tiny_reference):
    _, _, out = tiny_reference
    be = OnnxRuntimeBackend.from_dir(out)
    with pytest.raises(InputError, match=r"audio_encoder: input 'aud' has shape \(2, 1, 128, 65\)"):
        be.encode_audio(np.zeros((2, 1, 128, 65), np.float32))
    with pytest.raises(InputError, match="head: input 'vfeat'"):
        be.head(np.zeros((1, 14 * 8, be.config.v_dim), np.float32), np.zeros((1, 2 * 6, be.config.a_dim)))


def test_modified_or_missing_files_are_refused(tiny_reference, tmp_path):
    _, _, out = tiny_reference
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    with open(copy / "head.onnx", "r+b") as f:  # same size, one byte changed
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(EngineMismatchError, match="head.onnx: sha256 .* the manifest says"):
        OnnxRuntimeBackend.from_dir(copy)
    (copy / "head.onnx").unlink()
    with pytest.raises(EngineMismatchError, match="head.onnx: listed in the manifest but missing"):
        OnnxRuntimeBackend.from_dir(copy)
    with pytest.raises(BackendError, match="no int8 onnx file for audio_encoder"):
        OnnxRuntimeBackend.from_dir(out, precision="int8")
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(BackendError, match="no manifest.json"):
        OnnxRuntimeBackend.from_dir(copy)


def test_engines_are_checked_against_tensorrt_version_and_gpu():
    entry = {"tensorrt_version": "10.13.0.35", "compute_capability": "9.0", "gpu": "NVIDIA H100 80GB HBM3"}
    check_engine(entry, "10.13.0.35", "9.0")
    with pytest.raises(EngineMismatchError, match="built with TensorRT 10.13.0.35, this machine has TensorRT 11"):
        check_engine(entry, "11.4.0.106", "9.0")
    with pytest.raises(EngineMismatchError, match=r"compute capability 9.0 \(NVIDIA H100 80GB HBM3\), this GPU has 8.0"):
        check_engine(entry, "10.13.0.35", "8.0")


def test_manifest_reader_refuses_other_formats(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": 99}))
    with pytest.raises(BackendError, match="manifest format 99"):
        read_manifest(tmp_path)


def test_gpu_backends_fail_clearly_when_missing(tiny_reference):
    _, _, out = tiny_reference
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match=r"providers \['CUDAExecutionProvider'\] are not available"):
            resolve_providers(["cuda"])
    assert resolve_providers(None)[-1] == "CPUExecutionProvider"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from sync_sdk.backends.tensorrt_backend import TensorRTBackend
        with pytest.raises(BackendError, match="needs the tensorrt package"):
            TensorRTBackend.from_dir(out)


def test_runtime_modules_do_not_import_torch():
    code = ("import sys; import sync_sdk.weights.manifest, sync_sdk.backends.onnxruntime_backend, "
            "sync_sdk.backends.tensorrt_backend; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ TensorRT backend on fakes
class _FakeCupy:
    """The CuPy calls the TensorRT backend makes; 'device' arrays are NumPy arrays with `.data.ptr`."""

    class ndarray(np.ndarray):
        @property
        def data(self):
            return type("Ptr", (), {"ptr": self.ctypes.data})()

    def __init__(self):
        self.live = {}  # pointer -> array, so the fake engine can read and write bound memory
        stream = type("Stream", (), {"ptr": 7, "__enter__": lambda s: s, "__exit__": lambda s, *a: None,
                                     "record": lambda s: None, "wait_event": lambda s, e: None})
        device = type("Device", (), {"__init__": lambda s, i: None, "__enter__": lambda s: s,
                                     "__exit__": lambda s, *a: None})
        runtime = type("runtime", (), {"CUDARuntimeError": RuntimeError, "getDeviceProperties":
                                       staticmethod(lambda i: {"name": b"Fake GPU", "major": 9, "minor": 0})})
        self.cuda = type("cuda", (), {"Stream": lambda *a, **k: stream(), "Device": device, "runtime": runtime,
                                      "get_current_stream": staticmethod(lambda: stream())})
        self.float32 = np.float32

    def _dev(self, a):
        a = np.ascontiguousarray(a).view(self.ndarray)
        self.live[a.ctypes.data] = a
        return a

    def asarray(self, a, dtype=None):
        return self._dev(np.asarray(a, dtype=dtype))

    def ascontiguousarray(self, a):
        return a if a.flags.c_contiguous else self._dev(a)

    def empty(self, shape, dtype):
        return self._dev(np.empty(shape, dtype))

    def asnumpy(self, a, stream=None):
        return np.array(a)


def _fake_tensorrt(cupy, version: str):
    """A `tensorrt` module whose engines run the stage's ONNX graph (the engine file holds its path)."""
    import types

    import onnxruntime

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr, self.profile = engine, {}, {}, 0

        def set_optimization_profile_async(self, p, stream):
            self.profile = p

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.ranges[self.profile]
            ok = lo <= shape[0] <= hi and tuple(shape[1:]) == self.engine.static[name]
            self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            n = next(iter(self.shapes.values()))[0]
            return (n, *self.engine.static[name])

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            feeds = {n: cupy.live[self.addr[n]] for n in self.engine.inputs}
            out = self.engine.session.run(None, {k: np.asarray(v) for k, v in feeds.items()})[0]
            np.copyto(cupy.live[self.addr[self.engine.outputs[0]]], out)
            self.engine.calls.append((self.profile, out.shape[0]))
            return True

    class Engine:
        def __init__(self, path):
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.static = {v.name: tuple(v.shape[1:]) for v in [*self.session.get_inputs(),
                                                                 *self.session.get_outputs()]}
            self.ranges = [(1, 1, 1), (1, 14, 56)] if "vid" in self.inputs or "aud" in self.inputs else [(1, 1, 4)]
            self.num_io_tensors, self.num_optimization_profiles = len(self.static), len(self.ranges)
            self.calls = []

        def get_tensor_name(self, i):
            return [*self.inputs, *self.outputs][i]

        def get_tensor_mode(self, name):
            return "in" if name in self.inputs else "out"

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_profile_shape(self, name, p):
            return [(n, *self.static[name]) for n in self.ranges[p]]

        def get_tensor_shape(self, name):
            return (-1, *self.static[name])

        def create_execution_context(self):
            return Context(self)

    trt = types.SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None}),
        TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=lambda t: t,
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda b: Engine(b.decode())))
    return trt


def _add_fake_engines(export_dir, version: str, cc: str = "9.0"):
    """Engine files (holding their ONNX graph's path) and their manifest entries."""
    from sync_sdk.weights.manifest import STAGES, sha256_file
    path = export_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    for stage in STAGES:
        engine = export_dir / f"{stage}.fp16.engine"
        engine.write_text(str(export_dir / f"{stage}.onnx"))
        manifest["files"][engine.name] = {
            "stage": stage, "kind": "tensorrt", "precision": "fp16", "tensorrt_version": version,
            "compute_capability": cc, "gpu": "Fake GPU", "sha256": sha256_file(engine),
            "bytes": engine.stat().st_size}
    path.write_text(json.dumps(manifest))


def test_tensorrt_backend_binds_device_arrays_and_picks_profiles(tiny_reference, tmp_path, monkeypatch):
    from sync_sdk.backends import tensorrt_backend
    _, model, out = tiny_reference
    export = tmp_path / "export"
    shutil.copytree(out, export)
    _add_fake_engines(export, "10.13.0.35")
    cupy = _FakeCupy()
    monkeypatch.setattr(tensorrt_backend, "_import_gpu", lambda: (_fake_tensorrt(cupy, "10.13.0.35"), cupy))
    monkeypatch.setitem(sys.modules, "cupy", cupy)  # manifest.gpu_compute_capability imports it
    be = tensorrt_backend.TensorRTBackend.from_dir(export)
    assert be.precision == "fp16" and be.name == "tensorrt-fp16-cuda:0"

    rng = np.random.default_rng(0)
    aud = rng.standard_normal((3, 1, 128, 66)).astype(np.float32)
    torch_be = TorchBackend(model)
    got = be.encode_audio(aud)                                  # NumPy in -> NumPy out
    assert type(got) is np.ndarray
    np.testing.assert_allclose(got, torch_be.encode_audio(aud), rtol=1e-4, atol=1e-5)
    dev = be.encode_audio(cupy.asarray(aud[:1]))                # device in -> device out
    assert isinstance(dev, cupy.ndarray) and dev.shape == (1, 6, model.config.a_dim)
    assert be.engines["audio_encoder"].engine.calls == [(1, 3), (0, 1)]  # clip profile, then streaming
    s = model.config.n_segments
    vf = rng.standard_normal((2, s * 8, model.config.v_dim)).astype(np.float32)
    af = rng.standard_normal((2, s * 6, model.config.a_dim)).astype(np.float32)
    np.testing.assert_allclose(be.head(vf, af), torch_be.head(vf, af), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="batch of 5 is outside the engine's profiles"):
        be.head(np.repeat(vf, 3, 0)[:5], np.repeat(af, 3, 0)[:5])

    monkeypatch.setattr(tensorrt_backend, "_import_gpu", lambda: (_fake_tensorrt(cupy, "10.14.1.48"), cupy))
    with pytest.raises(EngineMismatchError, match="built with TensorRT 10.13.0.35, this machine has"):
        tensorrt_backend.TensorRTBackend.from_dir(export)
