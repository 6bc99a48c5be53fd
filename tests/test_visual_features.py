"""Visual features for conditioning: equal to the torch model's encode_video on the preset's segments."""
import numpy as np
import pytest

from sync_sdk.analysis.visual_features import visual_features
from sync_sdk.errors import ClipTooShortError, InputError
from tests.fake_backends import encoder

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    from sync_sdk.config import ModelConfig
    from sync_sdk.model import build_model, load_weights
    cfg = ModelConfig.named("tiny")
    rng = np.random.default_rng(0)
    sd = {k: rng.normal(0, 0.3, tuple(v.shape)).astype(np.float32)
          for k, v in build_model(cfg, device="meta").state_dict().items()}
    torch.set_num_threads(1)
    return load_weights(build_model(cfg), sd)


def _engine(model, max_batch: int):
    from sync_sdk.backends.torch_backend import TorchBackend
    return encoder(TorchBackend(model), max_batch=max_batch)


def _reference(model, segments: np.ndarray) -> np.ndarray:
    """(S, 16, 3, 224, 224) -> (S * 8, v_dim), all segments in one encode_video call."""
    with torch.inference_mode():
        out = model.encode_video(torch.from_numpy(segments)).numpy()
    return out.reshape(-1, out.shape[-1])


def test_av_benchmark_preset_equals_encode_video(model):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (43, 224, 224, 3), dtype=np.uint8)  # 224x224: resize and crop are identity
    feats = visual_features(_engine(model, max_batch=2), frames)
    x = frames.astype(np.float32) / np.float32(255) * 2 - 1
    segs = np.stack([x[8 * i:8 * i + 16] for i in range(4)]).transpose(0, 1, 4, 2, 3)  # S = (43 - 16) // 8 + 1
    assert feats.shape == (32, model.config.v_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, _reference(model, np.ascontiguousarray(segs)), atol=2e-5)


def test_synchformer_preset_equals_encode_video(model):
    from sync_sdk.inputs.cpu import video_input
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (32, 256, 320, 3), dtype=np.uint8)
    feats = visual_features(_engine(model, max_batch=14), frames, preset="synchformer")
    segs = np.stack([video_input(frames[8 * i:8 * i + 16]) for i in range(3)])
    np.testing.assert_allclose(feats, _reference(model, segs), atol=2e-5)


def test_duration_and_errors(model):
    frames = np.zeros((60, 224, 224, 3), np.uint8)
    engine = _engine(model, max_batch=14)
    assert visual_features(engine, frames, duration_sec=1.0).shape == (8 * 2, model.config.v_dim)  # 25 frames
    with pytest.raises(ClipTooShortError):
        visual_features(engine, frames[:15])
    with pytest.raises(InputError):
        visual_features(engine, frames, preset="imagebind")
    with pytest.raises(InputError):
        visual_features(engine, [1, 2, 3])
    with pytest.raises(InputError, match="output"):
        visual_features(engine, frames, output="jax")


class _DeviceBackend:
    """Behaves like the GPU backends: device (CuPy) batches in -> device features out."""

    device_arrays = True
    name, precision, device, model_id = "fake-device", "fp32", 0, ""

    def __init__(self, host, cupy) -> None:
        self.host, self.cupy, self.inputs = host, cupy, []
        self.config = host.config

    def encode_audio(self, aud):
        return self.cupy.asarray(self.host.encode_audio(np.asarray(aud)))

    def head(self, vfeat, afeat):
        return self.host.head(np.asarray(vfeat), np.asarray(afeat))

    def encode_video(self, vid):
        self.inputs.append(type(vid))
        return self.cupy.asarray(self.host.encode_video(np.asarray(vid)))


@pytest.mark.parametrize("device_backend", [True, False])
def test_cupy_output_stays_on_device(model, monkeypatch, device_backend):
    from tests import fake_cupy
    cp = fake_cupy.install(monkeypatch)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (43, 224, 224, 3), dtype=np.uint8)
    engine = _engine(model, max_batch=3)
    expected = visual_features(engine, frames)
    backend = _DeviceBackend(engine.backend, cp)
    if not device_backend:  # a host backend (ONNX Runtime, torch CPU) is handed NumPy batches
        backend.device_arrays = False
    engine = encoder(backend, max_batch=3)
    feats = visual_features(engine, frames, output="cupy")
    assert isinstance(feats, cp.ndarray) and feats.dtype == np.float32 and feats.shape == expected.shape
    np.testing.assert_allclose(np.asarray(feats), expected, atol=2e-5)
    # 4 segments, 3 a call: two batches, on the device only for a device backend
    assert engine.backend.inputs == [cp.ndarray if device_backend else np.ndarray] * 2


def test_cupy_output_without_cupy_says_what_to_install(model, monkeypatch):
    import sys

    from sync_sdk.errors import BackendError
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendError, match=r"sync-sdk\[gpu\]"):
        visual_features(_engine(model, max_batch=3), np.zeros((24, 224, 224, 3), np.uint8), output="cupy")


def test_path_source_decodes_at_25_fps(model, tmp_path):
    import av

    from tests.test_desync import _smooth_frames, _write_mp4
    path = _write_mp4(tmp_path / "v.mp4", _smooth_frames(24, 240, 320))
    with av.open(str(path)) as box:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in box.decode(video=0)])
    engine = _engine(model, max_batch=14)
    np.testing.assert_array_equal(visual_features(engine, path), visual_features(engine, decoded))


def test_engine_method_and_cli(model, tmp_path):
    from sync_sdk.backends.torch_backend import TorchBackend
    from sync_sdk.cli.main import main
    from sync_sdk.engine import SyncEngine
    from tests.fake_backends import tiny_checkpoint
    from tests.test_desync import _smooth_frames, _write_mp4
    frames = _smooth_frames(40, 224, 224)
    np.testing.assert_array_equal(SyncEngine(TorchBackend(model)).visual_features(frames),
                                  visual_features(_engine(model, max_batch=14), frames))
    video = _write_mp4(tmp_path / "v.mp4", frames)
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert main(["visual-features", str(video), "--out", str(tmp_path / "f.npy"), "--model", str(ckpt),
                 "--backend", "torch"]) == 0
    assert np.load(tmp_path / "f.npy").shape == (8 * 4, 64)
