"""Visual features for conditioning: equal to the torch model's encode_video on the layout's segments;
batch extraction into shards, resumable (serving/feature_jobs.py); the CLI."""
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


def test_av_benchmark_layout_equals_encode_video(model):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (43, 224, 224, 3), dtype=np.uint8)  # 224x224: resize and crop are identity
    feats = visual_features(_engine(model, max_batch=2), frames)
    x = frames.astype(np.float32) / np.float32(255) * 2 - 1
    segs = np.stack([x[8 * i:8 * i + 16] for i in range(4)]).transpose(0, 1, 4, 2, 3)  # S = (43 - 16) // 8 + 1
    assert feats.shape == (32, model.config.v_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, _reference(model, np.ascontiguousarray(segs)), atol=2e-5)


def test_synchformer_layout_equals_encode_video(model):
    from sync_sdk.inputs.cpu import video_input
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (32, 256, 320, 3), dtype=np.uint8)
    feats = visual_features(_engine(model, max_batch=14), frames, layout="synchformer")
    segs = np.stack([video_input(frames[8 * i:8 * i + 16]) for i in range(3)])
    np.testing.assert_allclose(feats, _reference(model, segs), atol=2e-5)


def test_duration_and_errors(model):
    frames = np.zeros((60, 224, 224, 3), np.uint8)
    engine = _engine(model, max_batch=14)
    assert visual_features(engine, frames, duration_sec=1.0).shape == (8 * 2, model.config.v_dim)  # 25 frames
    with pytest.raises(ClipTooShortError):
        visual_features(engine, frames[:15])
    with pytest.raises(InputError, match="unknown layout"):
        visual_features(engine, frames, layout="imagebind")
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

    from tests.test_desync import _smooth_frames, write_video_mp4
    path = write_video_mp4(tmp_path / "v.mp4", _smooth_frames(24, 240, 320))
    with av.open(str(path)) as box:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in box.decode(video=0)])
    engine = _engine(model, max_batch=14)
    np.testing.assert_array_equal(visual_features(engine, path), visual_features(engine, decoded))


def test_engine_method_and_cli(model, tmp_path):
    from sync_sdk.backends.torch_backend import TorchBackend
    from sync_sdk.cli.main import main
    from sync_sdk.engine import SyncEngine
    from tests.fake_backends import tiny_checkpoint
    from tests.test_desync import _smooth_frames, write_video_mp4
    frames = _smooth_frames(40, 224, 224)
    np.testing.assert_array_equal(SyncEngine(TorchBackend(model)).visual_features(frames),
                                  visual_features(_engine(model, max_batch=14), frames))
    video = write_video_mp4(tmp_path / "v.mp4", frames)
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert main(["visual-features", str(video), "--out", str(tmp_path / "f.npy"), "--model", str(ckpt),
                 "--backend", "torch"]) == 0
    assert np.load(tmp_path / "f.npy").shape == (8 * 4, 64)


# --- batch extraction -----------------------------------------------------------------------------------
def _folder(tmp_path, model):
    """Three clips (one not a video) and the engine."""
    from sync_sdk.backends.torch_backend import TorchBackend
    from sync_sdk.engine import SyncEngine
    from tests.test_desync import _smooth_frames, write_video_mp4
    d = tmp_path / "videos"
    d.mkdir()
    write_video_mp4(d / "a.mp4", _smooth_frames(40, 224, 256, seed=1))
    write_video_mp4(d / "b.mp4", _smooth_frames(30, 240, 320, seed=2))
    (d / "c.mp4").write_bytes(b"not a video")
    return d, SyncEngine(TorchBackend(model), model_id="tiny-test")


def test_batch_extraction_records_each_clip_and_resumes(model, tmp_path):
    from sync_sdk.serving.feature_jobs import extract_features, list_clips, load_features
    from sync_sdk.serving.jsonl import read_records
    from tests.test_desync import _smooth_frames, write_video_mp4
    d, engine = _folder(tmp_path, model)
    out = tmp_path / "feats"
    s = extract_features(engine, list_clips(folder=d), out, layout="mmaudio", shard_clips=1)
    assert (s["ok"], s["failed"], s["skipped"], len(s["shards"])) == (2, 1, 0, 2)
    index = {r["name"]: r for r in read_records(out / "index.jsonl")}
    assert sorted(index) == ["a", "b", "c"] and index["c"]["status"] == "error" and index["c"]["error"]
    expected = {n: engine.visual_features(d / f"{n}.mp4", layout="mmaudio") for n in ("a", "b")}
    got = load_features(out)
    assert sorted(got) == ["a", "b"] and all(np.array_equal(got[n], expected[n]) for n in got)
    assert index["a"]["shape"] == list(expected["a"].shape)
    with pytest.raises(InputError, match="already holds features"):
        extract_features(engine, list_clips(folder=d), out, layout="mmaudio")
    with pytest.raises(InputError, match="other settings"):
        extract_features(engine, list_clips(folder=d), out, layout="thinksound", resume=True)
    # a run killed between a shard and its index lines left an orphan shard; the bad clip is mended
    (out / "features-00009.safetensors").write_bytes(b"partial")
    write_video_mp4(d / "c.mp4", _smooth_frames(24, 224, 224, seed=3))
    s = extract_features(engine, list_clips(folder=d), out, layout="mmaudio", resume=True)
    assert (s["ok"], s["failed"], s["skipped"]) == (1, 0, 2) and not (out / "features-00009.safetensors").exists()
    assert len((out / "index.jsonl").read_text().splitlines()) == 3  # the retried clip's line replaced its error
    np.testing.assert_array_equal(load_features(out, ["c"])["c"], engine.visual_features(d / "c.mp4", layout="mmaudio"))
    s = extract_features(engine, list_clips(folder=d), out, layout="mmaudio", fmt="npz", overwrite=True)
    assert s["shards"] == ["features-00000.npz"] and sorted(load_features(out)) == ["a", "b", "c"]
    np.testing.assert_array_equal(load_features(out)["a"], expected["a"])


def test_clip_lists(tmp_path):
    from sync_sdk.serving.feature_jobs import list_clips
    (tmp_path / "x").mkdir()
    (tmp_path / "list.txt").write_text("# clips\nx/a.mp4\n\ny/a.mkv\n")
    with pytest.raises(InputError, match="share the clip name 'a'"):
        list_clips(list_file=tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("x/a.mp4\nx/b.mov\n")
    assert list_clips(list_file=tmp_path / "list.txt") == [("a", str(tmp_path / "x/a.mp4")), ("b", str(tmp_path / "x/b.mov"))]
    with pytest.raises(InputError, match="one of them"):
        list_clips()


def test_cli_batch(model, tmp_path, capsys):
    import json

    from sync_sdk.cli.main import main
    from tests.fake_backends import tiny_checkpoint
    d, _ = _folder(tmp_path, model)
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    args = ["visual-features", "--dir", str(d), "--out", str(tmp_path / "feats"), "--model", str(ckpt),
            "--backend", "torch", "--layout", "hunyuan-foley", "--quiet"]
    assert main(args) == 1  # c.mp4 failed, recorded
    assert json.loads(capsys.readouterr().out)["ok"] == 2
    assert main(args + ["--resume"]) == 1
    assert json.loads(capsys.readouterr().out)["skipped"] == 2
    assert main(["visual-features", str(d / "a.mp4"), "--dir", str(d), "--out", str(tmp_path / "f.npy")]) == 2
    assert main(["visual-features", "--dir", str(d), "--out", str(tmp_path / "f.npy")]) == 2
