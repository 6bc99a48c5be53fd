"""GPU checks: CuPy kernels against the NumPy path, the torch-CUDA backend against PyTorch FP32, and
segment-by-segment (stream) results against one batched window (predict).

Every test skips cleanly without CuPy or a CUDA device (benchmarks/gpu_check.py runs them on a GPU).
"""
import numpy as np
import pytest

from sync_sdk.errors import InputError
from sync_sdk.inputs import gpu_plan as plan
from sync_sdk.inputs.gpu import cuda_available

features = pytest.importorskip("sync_sdk.inputs.cpu")

cp = pytest.importorskip("cupy")
pytestmark = pytest.mark.skipif(not cuda_available(), reason="no CUDA device")

LUT_STEP = 2.0 / 255.0 + 1e-3  # one uint8 level in model-input units (fp16 table)


@pytest.fixture(scope="module")
def gpu():
    from sync_sdk.inputs.gpu import GpuFeatures
    return {"float16": GpuFeatures(video_dtype="float16"), "float32": GpuFeatures(video_dtype="float32")}


def _pcm(n: int, seed: int = 0) -> np.ndarray:
    """Chirp + noise with a silent stretch and a clipped stretch: every log-mel regime."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    x = 0.3 * np.sin(2 * np.pi * (100 + 2000 * t) * t) + 0.05 * rng.standard_normal(n)
    x[n // 5:n // 5 + 12000] = 0.0
    x[n // 2:n // 2 + 4000] = np.clip(4 * x[n // 2:n // 2 + 4000], -1, 1)
    return x.astype(np.float32)


def _frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- audio
def test_log_mel_matches_numpy(gpu):
    waves = _pcm(4 * 10240).reshape(4, 10240)
    ref = features.log_mel(waves)
    got = gpu["float16"].log_mel(waves)
    assert got.shape == (4, 1, 128, 66) and got.dtype == cp.float32
    np.testing.assert_allclose(cp.asnumpy(got), ref, atol=1e-3, rtol=0)
    np.testing.assert_allclose(cp.asnumpy(got), plan.emulate_log_mel(waves.reshape(-1), np.arange(4) * 10240,
                                                                     features.STFT_WINDOW, features.MEL_FBANKS),
                               atol=1e-4, rtol=0)


def test_log_mel_segments_overlapping_sparse_and_on_device(gpu):
    feats = gpu["float16"]
    pcm = _pcm(80000, seed=1)
    for starts in (1280 + 5120 * np.arange(14), np.array([0, 60000, 30000])):
        ref = features.log_mel(np.stack([pcm[s:s + 10240] for s in starts]))
        host = cp.asnumpy(feats.log_mel_segments(pcm, starts))
        np.testing.assert_allclose(host, ref, atol=1e-3, rtol=0)
        dev = cp.asnumpy(feats.log_mel_segments(cp.asarray(pcm), starts))
        np.testing.assert_array_equal(dev, host)


# ------------------------------------------------------------------------------------------- video
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_video_segments_match_numpy(gpu, dtype):
    feats = gpu[dtype]
    frames = _frames(60, 256, 341)
    for starts in ([0, 8, 16], [40, 2, 20]):  # contiguous span; sparse (gathered)
        ref = features.video_input(np.stack([frames[s:s + 16] for s in starts]))
        got = feats.video_segments(frames, starts)
        assert got.shape == (len(starts), 16, 3, 224, 224) and got.dtype == np.dtype(dtype)
        host = cp.asnumpy(got)  # results are views of the object's buffers: copy before the next call
        np.testing.assert_array_equal(host.astype(np.float32), ref)
        on_device = feats.video_segments(cp.asarray(frames), starts)
        np.testing.assert_array_equal(cp.asnumpy(on_device), host)


def test_video_input_keeps_leading_dims(gpu):
    frames = _frames(6, 240, 300, seed=3).reshape(2, 3, 240, 300, 3)
    got = gpu["float32"].video_input(frames)
    assert got.shape == (2, 3, 3, 224, 224)
    np.testing.assert_array_equal(cp.asnumpy(got), features.video_input(frames))


@pytest.mark.parametrize("hw", [(360, 640), (1080, 1920), (200, 180)])
def test_video_resize_matches_emulation(gpu, hw):
    frames = np.clip(_frames(4, *hw, seed=4).astype(np.int16) // 32 * 32 + 16, 0, 255).astype(np.uint8)
    got = cp.asnumpy(gpu["float32"].video_segments(np.concatenate([frames] * 4), [0], resize=True))[0]
    geom = plan.frame_geometry(*hw, resize=True)
    ref = plan.emulate_frames(np.concatenate([frames] * 4), np.arange(16), features.VIDEO_LUT, geom)
    diff = np.abs(got - ref)
    assert diff.max() <= LUT_STEP and (diff == 0).mean() > 0.99


# ------------------------------------------------------------------------------------------- runtime
def test_steady_state_allocates_nothing(gpu):
    feats = gpu["float16"]
    pcm, frames = _pcm(80000, seed=5), _frames(130, 256, 454, seed=5)
    vstarts, astarts = 2 + 8 * np.arange(14), 1280 + 5120 * np.arange(14)
    pool = cp.get_default_memory_pool()

    def run():
        feats.log_mel_segments(pcm, astarts)
        feats.video_segments(frames, vstarts)
        feats.stream.synchronize()

    run()
    used, total = pool.used_bytes(), pool.total_bytes()
    for _ in range(3):
        run()
    assert (pool.used_bytes(), pool.total_bytes()) == (used, total)


def test_bad_inputs_raise_input_error(gpu):
    feats = gpu["float16"]
    with pytest.raises(InputError):
        feats.log_mel(np.zeros((2, 1000), np.float32))
    with pytest.raises(InputError):
        feats.log_mel_segments(np.zeros(20000, np.float32), [10000])
    with pytest.raises(InputError):
        feats.video_segments(_frames(20, 256, 300), [5])
    with pytest.raises(InputError):
        feats.video_input(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(InputError):
        feats.video_input(np.zeros((2, 256, 256, 3), np.float32))


# ------------------------------------------------------------------------------------------- backend
@pytest.fixture(scope="module")
def tiny_models():
    """A tiny random model: FP32 reference copy and the weights for the backends."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    from sync_sdk.model import build_model
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.05)
    return model


def _backend(model, precision, stream=None, cuda_graphs=True):
    import copy

    from sync_sdk.backends.torch_cuda_backend import TorchCudaBackend
    return TorchCudaBackend(copy.deepcopy(model), precision=precision, stream=stream, cuda_graphs=cuda_graphs)


def _window_inputs(seed=0):
    frames, pcm = _frames(125, 256, 341, seed=seed), _pcm(80000, seed=seed)
    vid = features.video_input(np.stack([frames[2 + 8 * s:18 + 8 * s] for s in range(14)]))
    aud = features.log_mel(np.stack([pcm[1280 + 5120 * s:11520 + 5120 * s] for s in range(14)]))
    return frames, pcm, vid, aud


def _fp32_logits(model, vid, aud):
    import torch
    m = model.to("cuda").float().eval()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        return m(torch.from_numpy(vid[None]).cuda(), torch.from_numpy(aud[None]).cuda()).cpu().numpy()


def _head_logits(be, vfeat, afeat):
    n = vfeat.shape[0]
    return be.head(vfeat.reshape(1, n * 8, -1), afeat.reshape(1, n * 6, -1))


def test_backend_fp32_graphs_equal_pytorch_fp32(tiny_models):
    _, _, vid, aud = _window_inputs()
    ref = _fp32_logits(tiny_models, vid, aud)
    be = _backend(tiny_models, "fp32")
    for _ in range(2):  # capture, then replay
        got = _head_logits(be, be.encode_video(vid), be.encode_audio(aud))
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_backend_fp16_close_to_fp32_and_cupy_in_out(tiny_models):
    _, _, vid, aud = _window_inputs(seed=1)
    ref = _fp32_logits(tiny_models, vid, aud)
    be = _backend(tiny_models, "fp16")
    got = _head_logits(be, be.encode_video(cp.asarray(vid)), be.encode_audio(cp.asarray(aud)))
    assert isinstance(got, cp.ndarray) and got.dtype == cp.float32
    got = cp.asnumpy(got)
    assert np.abs(got - ref).max() <= 2e-2 * max(1.0, np.abs(ref).max())
    eager = _backend(tiny_models, "fp16", cuda_graphs=False)
    np.testing.assert_allclose(_head_logits(eager, eager.encode_video(vid), eager.encode_audio(aud)), got,
                               atol=1e-2, rtol=0)


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 3e-2)])
def test_stream_segments_equal_predict_window(gpu, tiny_models, precision, atol):
    """GPU features + backend: one segment at a time (as a stream update) equals the batched window."""
    feats = gpu["float16" if precision == "fp16" else "float32"]
    be = _backend(tiny_models, precision, stream=feats.stream)
    frames, pcm, vid, aud = _window_inputs(seed=2)
    vstarts, astarts = 2 + 8 * np.arange(14), 1280 + 5120 * np.arange(14)
    with feats.stream:
        window = _head_logits(be, be.encode_video(feats.video_segments(frames, vstarts)),
                              be.encode_audio(feats.log_mel_segments(pcm, astarts)))
        vf = cp.concatenate([be.encode_video(feats.video_segments(frames, [s])) for s in vstarts])
        af = cp.concatenate([be.encode_audio(feats.log_mel_segments(pcm, [a])) for a in astarts])
        stream = _head_logits(be, vf, af)
    feats.stream.synchronize()  # queued on feats.stream (no hand-off inside `with feats.stream`)
    np.testing.assert_allclose(cp.asnumpy(stream), cp.asnumpy(window), atol=atol, rtol=0)
    ref = _fp32_logits(tiny_models, vid, aud)  # NumPy features, PyTorch FP32
    assert np.abs(cp.asnumpy(window) - ref).max() <= max(atol, 1e-3) * max(1.0, np.abs(ref).max())


def test_engine_stream_equals_predict_with_torch_cuda_backend(tiny_models):
    """SyncEngine with this backend: SyncStream's windows equal predict on the same windows."""
    engine_mod = pytest.importorskip("sync_sdk.engine")
    engine = engine_mod.SyncEngine(_backend(tiny_models, "fp32"))
    frames, pcm = _frames(160, 256, 340, seed=6), _pcm(160 * 640, seed=6)
    stream = engine.stream()
    results = stream.push_video(frames) + stream.push_audio(pcm)
    assert len(results) == 5  # 18 grid segments -> windows 0..4
    for res in results:
        ref = engine.predict((frames, 25, pcm, 16000), start_sec=res.start_sec)
        np.testing.assert_allclose(res.logits, ref.logits, atol=1e-4, rtol=0)
