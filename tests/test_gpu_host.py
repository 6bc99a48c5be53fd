"""sync_sdk.inputs.gpu's host logic on CPU: GpuFeatures driven through a fake CuPy (tests/fake_cupy.py) whose
kernels check every launch against the real kernels' signatures and run their index arithmetic in NumPy.

Checks argument order and types, the buffer plan and its growth, pinned uploads of only the needed
span (or a gather for sparse segments), device-array inputs, and the results against sync_sdk.inputs.cpu.
"""
import fake_cupy
import numpy as np
import pytest

from sync_sdk.errors import BackendError, InputError
from sync_sdk.inputs import gpu as gpu_mod

features = pytest.importorskip("sync_sdk.inputs.cpu")


@pytest.fixture
def cp(monkeypatch):
    gpu_mod._module.cache_clear()
    yield fake_cupy.install(monkeypatch)
    gpu_mod._module.cache_clear()


@pytest.fixture
def feats(cp):
    return gpu_mod.GpuFeatures(max_segments=2, max_frame_bytes=16 * 256 * 300 * 3)


def _pcm(n, seed=0):
    rng = np.random.default_rng(seed)
    x = 0.2 * rng.standard_normal(n).astype(np.float32)
    x[: n // 4] = 0.0
    return x


def test_kernel_signatures_parsed_from_sources():
    sigs = {}
    for name in gpu_mod.KERNEL_FILES:
        sigs.update(fake_cupy.parse_signatures((gpu_mod.kernel_dir() / name).read_text()))
    assert set(sigs) == set(fake_cupy.KERNELS)
    assert [p[0] for p in sigs["frame_segments"]][:4] == ["pcm", "starts", "window", "frames"]


def test_log_mel_segments_match_numpy_and_grow_once(cp, feats):
    pcm = _pcm(80000)
    starts = 1280 + 5120 * np.arange(14)  # more than the 2 planned segments: the slab grows once
    got = feats.log_mel_segments(pcm, starts)
    assert isinstance(got, cp.ndarray) and got.shape == (14, 1, 128, 66)
    ref = features.log_mel(np.stack([pcm[s:s + 10240] for s in starts]))
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)
    assert feats._capacity[0] == 14
    slab = feats._slab
    feats.log_mel_segments(pcm, starts[:3])
    assert feats._slab is slab  # smaller requests reuse the plan
    assert fake_cupy.RawModule.launches[-2:] == ["frame_segments", "mel_log_norm"]


def test_log_mel_uploads_span_or_gathers(cp, feats):
    pcm = _pcm(200000, seed=1)
    for starts in ([5120, 0], [150000, 3]):  # overlapping span; far apart (gathered)
        got = np.asarray(feats.log_mel_segments(pcm, starts))
        up = feats._view("pcm", (2 * 10240,))
        np.testing.assert_allclose(got, features.log_mel(np.stack([pcm[s:s + 10240] for s in starts])),
                                   atol=1e-4, rtol=0)
        if starts[0] == 150000:
            np.testing.assert_array_equal(np.asarray(up[:10240]), pcm[150000:160240])
        else:
            np.testing.assert_array_equal(np.asarray(up[:15360]), pcm[:15360])


def test_stream_hand_off(cp, feats):
    """From another stream: feats.stream waits for the caller's stream, then the caller's waits for it;
    inside `with feats.stream:` no event is needed."""
    caller = cp.cuda.get_current_stream()
    feats.log_mel(np.zeros((1, 10240), np.float32))
    own = feats.stream.ptr
    assert fake_cupy.Stream.waits == [(own, caller.ptr), (caller.ptr, own)]
    with feats.stream:
        feats.video_input(np.zeros((1, 256, 256, 3), np.uint8))
    assert len(fake_cupy.Stream.waits) == 2


def test_log_mel_device_input_and_waves(cp, feats):
    waves = _pcm(2 * 10240, seed=2).reshape(2, 10240)
    host = np.asarray(feats.log_mel(waves)).copy()
    dev = np.asarray(feats.log_mel(cp.asarray(waves)))
    np.testing.assert_array_equal(dev, host)
    np.testing.assert_allclose(host, features.log_mel(waves), atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_video_segments_match_numpy(cp, dtype):
    feats = gpu_mod.GpuFeatures(video_dtype=dtype, max_segments=1, max_frame_bytes=1000)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (40, 256, 300, 3), dtype=np.uint8)
    for starts in ([8, 0], [24, 1]):  # contiguous span; sparse (gathered)
        got = feats.video_segments(frames, starts)
        assert got.dtype == np.dtype(dtype) and got.shape == (2, 16, 3, 224, 224)
        ref = features.video_input(np.stack([frames[s:s + 16] for s in starts]))
        np.testing.assert_array_equal(np.asarray(got).astype(np.float32), ref)
        # only the crop window of the frames read was staged: the first frame read, cropped
        first = frames[0 if starts[0] == 8 else 24, 16:240, 38:262]
        spec = feats._pinned_specs["frames"]
        np.testing.assert_array_equal(feats._pinned[spec.offset:spec.offset + first.size], first.reshape(-1))
    on_device = feats.video_segments(cp.asarray(frames), [3])
    np.testing.assert_array_equal(np.asarray(on_device)[0].astype(np.float32), features.video_input(frames[3:19]))


def test_video_input_leading_dims_and_resize(cp, feats):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (2, 2, 256, 230, 3), dtype=np.uint8)
    got = feats.video_input(frames)
    assert got.shape == (2, 2, 3, 224, 224)
    np.testing.assert_array_equal(np.asarray(got).astype(np.float32), features.video_input(frames))
    big = rng.integers(0, 256, (3, 120, 200, 3), dtype=np.uint8)
    resized = np.asarray(feats.video_input(big, resize=True)).astype(np.float32)
    from sync_sdk.inputs import gpu_plan
    ref = gpu_plan.emulate_frames(big, np.arange(3), features.VIDEO_LUT, gpu_plan.frame_geometry(120, 200, True))
    assert np.abs(resized - ref).max() <= 2 / 255 + 1e-3
    assert fake_cupy.RawModule.launches[-1] == "resize_crop_lut_f16"


def test_bad_inputs(cp, feats):
    with pytest.raises(InputError):
        feats.log_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(InputError):
        feats.log_mel_segments(np.zeros((2, 20000), np.float32), [0])
    with pytest.raises(InputError):
        feats.log_mel_segments(np.zeros(20000, np.float32), [9761])
    with pytest.raises(InputError):
        feats.video_segments(np.zeros((20, 256, 256, 3), np.uint8), [5])
    with pytest.raises(InputError):
        feats.video_input(np.zeros((1, 200, 256, 3), np.uint8))
    with pytest.raises(InputError):
        feats.video_input(np.zeros((1, 256, 256, 4), np.uint8))
    with pytest.raises(ValueError):
        gpu_mod.GpuFeatures(video_dtype="int8")


def test_without_cupy_raises_backend_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)
    assert not gpu_mod.cuda_available()
    with pytest.raises(BackendError, match="CuPy"):
        gpu_mod.GpuFeatures()


def test_gpu_modules_import_without_torch_and_cupy():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; sys.modules['cupy'] = None; "
            "import sync_sdk.inputs.gpu, sync_sdk.inputs.gpu_plan; from sync_sdk.inputs.gpu import cuda_available; "
            "assert not cuda_available()")
    run = subprocess.run([sys.executable, "-c", code], cwd=gpu_mod.kernel_dir().parent, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr


def test_torch_cuda_backend_refuses_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from sync_sdk.backends.torch_cuda_backend import TorchCudaBackend
    from sync_sdk.model import build_model
    with pytest.raises(BackendError, match="CUDA"):
        TorchCudaBackend(build_model("tiny"))
