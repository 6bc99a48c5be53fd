"""DeSync (av-benchmark compatible): preset preprocessing against independent NumPy computations,
window selection and scoring arithmetic on constructed logits, resumable directory runs."""
import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.analysis.desync import desync, desync_batch, desync_score, load_pair, offsets_from_logits, window_starts
from sync_sdk.engine import SyncEngine
from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.media import bicubic_aa_weights, load_audio_16k, resample, resize_short_crop
from sync_sdk.serving.desync_jobs import desync_dir, pair_by_stem
from tests.fake_backends import RecordingBackend, encoder

GRID = np.linspace(-2, 2, 21)


# --- independent references ---------------------------------------------------------------------
def _cubic(x: float) -> float:
    """Keys cubic with a = -0.5 (PIL / torch antialias)."""
    x = abs(x)
    if x < 1:
        return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
    if x < 2:
        return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
    return 0.0


def _ref_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) antialiased bicubic resampling matrix, one output pixel at a time (float64)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 2 * stretch + 0.5), 0), min(int(centre + 2 * stretch + 0.5), n_in)
        w = np.array([_cubic((j - centre + 0.5) / stretch) for j in range(lo, hi)])
        m[i, lo:hi] = w / w.sum()
    return m


def _ref_preset(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, 224, 224, 3): short side 224 (bicubic, antialias), centre crop
    (only the rows of the resampling matrices inside the crop are applied)."""
    h, w = frames.shape[1:3]
    nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
    top, left = round((nh - 224) / 2), round((nw - 224) / 2)
    mh, mw = _ref_matrix(h, nh)[top:top + 224], _ref_matrix(w, nw)[left:left + 224]
    rows = np.tensordot(mh, frames.astype(np.float64), axes=(1, 1))  # (224, T, W, 3)
    out = np.tensordot(rows, mw, axes=(2, 1)).transpose(1, 0, 3, 2)  # (T, 224, 224, 3)
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


def _ref_resample(x: np.ndarray, sr_in: int, sr_out: int, m: np.ndarray) -> np.ndarray:
    """Output samples m of a Hann-windowed sinc low-pass (cutoff 0.99 * min rate / 2, 6 zero crossings)."""
    f = 0.99 * min(sr_in, sr_out)
    j = np.arange(len(x))
    out = []
    for k in m:
        arg = (j / sr_in - k / sr_out) * f
        w = np.where(np.abs(arg) < 6, np.sinc(arg) * np.cos(np.pi * arg / 12) ** 2, 0.0) * f / sr_in
        out.append(float(w @ x))
    return np.array(out)


def _ref_log_mel(seg: np.ndarray) -> np.ndarray:
    """(10240,) -> (128, 66): SPEC 1.7 written out in float64."""
    x = np.pad(seg.astype(np.float64), 512, mode="reflect")
    win = np.zeros(1024)
    win[312:712] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([x[160 * k:160 * k + 1024] for k in range(65)])
    power = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2  # (65, 513)
    mel_max = 2595 * np.log10(1 + 8000 / 700)
    f_pts = 700 * (10 ** (np.linspace(0, mel_max, 130) / 2595) - 1)
    freqs = np.linspace(0, 8000, 513)
    fb = np.zeros((513, 128))
    for i in range(128):
        a, b, c = f_pts[i:i + 3]
        fb[:, i] = np.maximum(0, np.minimum((freqs - a) / (b - a), (c - freqs) / (c - b)))
    logmel = np.log(power @ fb + 1e-6).T  # (128, 65)
    out = np.concatenate([logmel, np.zeros((128, 1))], axis=1)
    return (out + 4.2677393) / (2 * 4.5689974)


def _smooth_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, h // 8 + 1, w // 8 + 1, 3))
    img = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :h, :w]
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def _write_mp4(path: Path, frames: np.ndarray) -> Path:
    import av
    with av.open(str(path), "w") as box:
        st = box.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        st.options = {"crf": "18", "preset": "ultrafast"}
        for k, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = k
            box.mux(st.encode(vf))
        box.mux(st.encode(None))
    return path


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    """pcm int16 (N, C)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, "<i2").tobytes())
    return path


# --- preset preprocessing -----------------------------------------------------------------------
@pytest.mark.parametrize("size", [(360, 640), (120, 200), (256, 256), (300, 224)])
def test_resize_matches_reference(size):
    frames = _smooth_frames(2, *size)
    got, ref = resize_short_crop(frames), _ref_preset(frames)
    diff = np.abs(got.astype(int) - ref)
    assert got.shape == (2, 224, 224, 3) and diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_resize_matches_pil_bicubic():
    Image = pytest.importorskip("PIL.Image")
    frame = (40 + _smooth_frames(1, 270, 480, seed=4)[0] * (175 / 255)).astype(np.uint8)
    pil = np.asarray(Image.fromarray(frame).resize((398, 224), Image.BICUBIC, reducing_gap=None))
    # PIL keeps its intermediate (after the width pass) in 8 bits: away from 0 and 255, where that
    # intermediate would be clipped, it is within one level of the float computation
    assert np.abs(pil[:, 87:311].astype(int) - resize_short_crop(frame[None])[0]).max() <= 1


def test_aa_weights_rows_sum_to_one_and_stay_inside():
    idx, w = bicubic_aa_weights(640, 398)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert idx.min() >= 0 and idx.max() < 640 and w.shape[1] >= 4 * 640 / 398


def test_resample_matches_windowed_sinc_formula():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(44100 // 5).astype(np.float32)  # 0.2 s at 44.1 kHz
    y = resample(x, 44100, 16000)
    assert len(y) == math.ceil(len(x) * 16000 / 44100)
    m = np.array([0, 1, 2, 500, 1733, len(y) - 2, len(y) - 1])
    np.testing.assert_allclose(y[m], _ref_resample(x.astype(np.float64), 44100, 16000, m), atol=2e-5)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    y8 = resample(x[:8000], 8000, 16000)  # upsampling too
    np.testing.assert_allclose(y8[[3, 100, 999]], _ref_resample(x[:8000].astype(np.float64), 8000, 16000,
                                                                np.array([3, 100, 999])), atol=2e-5)


def test_stereo_audio_is_averaged_then_resampled(tmp_path):
    rng = np.random.default_rng(2)
    pcm = (rng.standard_normal((22050, 2)) * 6000).astype(np.int16)
    wave16, seconds = load_audio_16k(_write_wav(tmp_path / "a.wav", pcm, 44100))
    assert seconds == pytest.approx(0.5)
    mono = pcm.astype(np.float64).mean(axis=1) / 32768
    m = np.array([10, 4000, 7999])
    np.testing.assert_allclose(wave16[m], _ref_resample(mono, 44100, 16000, m), atol=2e-5)


def test_desync_inputs_match_independent_preprocessing(tmp_path):
    """Files in, model inputs out: first and last 14 segments of each stream, preset video, log-mel audio."""
    import av
    frames = _smooth_frames(140, 144, 256, seed=5)  # 5.6 s, upscaled to 224 x 398 by the preset
    video = _write_mp4(tmp_path / "clip.mp4", frames)
    rng = np.random.default_rng(6)
    pcm = (rng.standard_normal((246960, 2)) * 5000).astype(np.int16)  # 5.6 s
    audio = _write_wav(tmp_path / "clip.wav", pcm, 44100)
    be = RecordingBackend()
    res = desync(encoder(be, max_batch=5), video, audio)
    assert (res.n_video_segments, res.n_audio_segments, res.windows) == (16, 16, [(0, 0), (2, 2)])
    assert res.desync == 0.0 and res.offsets == [0.0, 0.0] and res.duration_sec == pytest.approx(5.6)

    with av.open(str(video)) as box:  # plain decode, then the reference preset
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in box.decode(video=0)])
    crops = _ref_preset(decoded)
    segs = list(range(16))  # windows 0-13 and 2-15 cover every segment, each encoded once, in order
    vid = np.concatenate(be.video_inputs)
    assert vid.shape == (16, 16, 3, 224, 224) and vid.dtype == np.float32
    expect = np.stack([crops[8 * g:8 * g + 16] for g in segs]).transpose(0, 1, 4, 2, 3) / 255.0 * 2 - 1
    assert np.abs(vid - expect).max() <= 2 / 255 + 1e-6
    assert (np.abs(vid - expect) > 1e-6).mean() < 1e-3

    mono = pcm.astype(np.float64).mean(axis=1) / 32768
    wave16 = resample(mono.astype(np.float32), 44100, 16000)[:89600]
    aud = np.concatenate(be.audio_inputs)
    assert aud.shape == (16, 1, 128, 66)
    for g in (0, 7, 15):
        np.testing.assert_allclose(aud[g, 0], _ref_log_mel(wave16[5120 * g:5120 * g + 10240]), atol=2e-3)
    # the waveform itself against the direct formula
    np.testing.assert_allclose(wave16[[0, 51200, 89599]],
                               _ref_resample(mono, 44100, 16000, np.array([0, 51200, 89599])), atol=2e-5)


def test_given_duration_cuts_both_streams_and_fills_up_to_three_frames():
    frames = _smooth_frames(121, 224, 224)  # 4.84 s
    audio = (np.zeros(16000 * 6, np.float32), 16000)
    crops, wave16, d = load_pair(frames, audio, duration_sec=4.96)  # 124 frames asked: 3 filled
    assert crops.shape[0] == 124 and len(wave16) == int(16000 * 4.96) and d == 4.96
    np.testing.assert_array_equal(crops[121:], np.repeat(crops[120:121], 3, axis=0))
    with pytest.raises(ClipTooShortError):
        load_pair(frames, audio, duration_sec=5.0)  # 4 frames missing
    with pytest.raises(ClipTooShortError):
        load_pair(frames, audio, duration_sec=6.5)  # audio shorter than asked


# --- windows and scoring ------------------------------------------------------------------------
def test_window_starts():
    assert window_starts(24, 24) == [(0, 0), (10, 10)]
    assert window_starts(24, 23) == [(0, 0), (10, 9)]  # each stream's own last 14 (av-benchmark)
    assert window_starts(14, 14) == [(0, 0), (0, 0)]
    assert window_starts(30, 30, "cover") == [(0, 0), (14, 14), (16, 16)]
    assert window_starts(28, 28, "cover") == [(0, 0), (14, 14)]
    assert window_starts(31, 29, "cover") == [(0, 0), (14, 14), (15, 15)]
    assert window_starts(14, 14, "cover") == [(0, 0)]
    with pytest.raises(ClipTooShortError):
        window_starts(13, 20)
    with pytest.raises(InputError):
        window_starts(20, 20, "middle")


def _logits(classes) -> np.ndarray:
    out = np.zeros((len(classes), 21), np.float32)
    out[np.arange(len(classes)), classes] = 5.0
    return out


def test_score_arithmetic():
    lg = _logits([0, 10, 13])
    np.testing.assert_allclose(offsets_from_logits(lg), [-2.0, 0.0, 0.6], atol=1e-6)
    assert desync_score(lg) == pytest.approx((2.0 + 0.0 + 0.6) / 3, abs=1e-6)


def test_batched_desync_on_constructed_logits():
    clip = _smooth_frames(200, 224, 224)  # 8 s: 24 segments per stream
    audio = (np.zeros(8 * 16000, np.float32), 16000)
    be = RecordingBackend(_logits([18, 10, 5, 0, 12, 12, 12]))
    items = [("a", clip, audio), ("b", clip, audio), ("c", clip, audio)]
    out = list(desync_batch(encoder(be), items, protocol="first_last", batch_clips=2)) + \
        list(desync_batch(encoder(be), items[:1], protocol="cover"))
    assert [r.desync for r in out[:3]] == pytest.approx([0.8, 1.5, 0.4])
    assert out[0].windows == [(0, 0), (10, 10)] and out[0].offsets == pytest.approx([1.6, 0.0])
    assert out[3].windows == [(0, 0), (10, 10)] and out[3].desync == pytest.approx(0.4)  # 24 segs: 0 and 10
    assert be.head_calls == 3  # clips a+b together, c, then the cover run
    # each clip's segments are encoded once per batch (windows 0-13 and 10-23 share 4): 24 per clip
    assert sum(len(v) for v in be.video_inputs) == sum(len(a) for a in be.audio_inputs) == 4 * 24


def test_bad_clip_is_reported_and_others_go_on():
    good = (_smooth_frames(125, 224, 224), (np.zeros(80000, np.float32), 16000))
    short = (_smooth_frames(100, 224, 224), (np.zeros(64000, np.float32), 16000))
    out = list(desync_batch(encoder(RecordingBackend()), [("bad", *short), ("ok", *good)]))
    assert out[0].name == "bad" and "ClipTooShortError" in out[0].error and math.isnan(out[0].desync)
    assert out[1].name == "ok" and out[1].error is None and out[1].desync == 0.0


# --- directories --------------------------------------------------------------------------------
def test_directory_run_pairs_by_stem_and_resumes(tmp_path):
    vdir, adir, out = tmp_path / "videos", tmp_path / "audios", tmp_path / "desync.jsonl"
    vdir.mkdir()
    adir.mkdir()
    for i, stem in enumerate(["a", "b", "c", "video_only", "broken"]):
        _write_mp4(vdir / f"{stem}.mp4", _smooth_frames(125, 120, 160, seed=i))
    for stem in ["a", "b", "c", "audio_only"]:
        _write_wav(adir / f"{stem}.wav", np.zeros((80000, 1), np.int16), 16000)
    (adir / "broken.wav").write_bytes(b"not audio")
    pairs, v_only, a_only = pair_by_stem(vdir, adir)
    assert [p[0] for p in pairs] == ["a", "b", "broken", "c"] and v_only == ["video_only"] and a_only == ["audio_only"]

    # clips a, b, c: window logits say +1.6/0.0, -0.4/-0.4, 2.0/2.0 (clip c is in the second batch)
    be = RecordingBackend(_logits([18, 10, 8, 8, 20, 20]))
    summary = desync_dir(SyncEngine(be), vdir, adir, out, batch_clips=2)
    assert summary["desync"] == pytest.approx((0.8 + 0.4 + 2.0) / 3, abs=1e-6)
    assert (summary["n_clips"], summary["n_failed"], summary["n_windows"]) == (3, 1, 6)
    assert summary["failed"] == ["broken"] and summary["video_only"] == ["video_only"]
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["name"]: r["status"] for r in recs} == {"a": "ok", "b": "ok", "broken": "error", "c": "ok"}
    assert next(r for r in recs if r["name"] == "b")["result"]["offsets"] == pytest.approx([-0.4, -0.4])

    # lose clip b's line, resume: b is computed again (and the failed clip tried again), a and c are not
    out.write_text("".join(json.dumps(r) + "\n" for r in recs if r["name"] != "b"))
    be2 = RecordingBackend(_logits([8, 8]))
    summary = desync_dir(SyncEngine(be2), vdir, adir, out, resume=True)
    assert summary["desync"] == pytest.approx((0.8 + 0.4 + 2.0) / 3, abs=1e-6) and summary["n_clips"] == 3
    assert sum(len(v) for v in be2.video_inputs) == 14
    with pytest.raises(InputError):  # other settings into the same file
        desync_dir(SyncEngine(be2), vdir, adir, out, protocol="cover", resume=True)


# --- checkpoint as av-benchmark ships it --------------------------------------------------------
def test_bare_state_dict_pth_is_accepted(tmp_path):
    """synchformer_state_dict.pth is torch.save(model.state_dict()): no "model" wrapper. (Widths other
    than the official 768 need the config named: head counts cannot be read from shapes.)"""
    torch = pytest.importorskip("torch")
    from sync_sdk.backends.torch_backend import TorchBackend
    from sync_sdk.config import ModelConfig
    from sync_sdk.model import build_model, load_weights
    from sync_sdk.weights.checkpoint import load_checkpoint
    cfg = ModelConfig.named("tiny")
    rng = np.random.default_rng(0)
    sd = {k: rng.normal(0, 0.3, tuple(v.shape)).astype(np.float32)
          for k, v in build_model(cfg, device="meta").state_dict().items()}
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    ckpt = load_checkpoint(path, config=cfg)
    assert ckpt.config == cfg and set(ckpt.state_dict) == set(sd)

    frames = _smooth_frames(125, 224, 224)
    audio = (np.random.default_rng(1).standard_normal(80000).astype(np.float32) * 0.1, 16000)
    loaded = encoder(TorchBackend(load_weights(build_model(cfg), ckpt.state_dict)))
    direct = encoder(TorchBackend(load_weights(build_model(cfg), sd)))
    a, b = desync(loaded, frames, audio), desync(direct, frames, audio)
    assert a.offsets == b.offsets and a.confidences == pytest.approx(b.confidences, abs=1e-6)


def test_cli_desync(tmp_path, capsys):
    pytest.importorskip("torch")
    from sync_sdk.cli.main import main
    from tests.fake_backends import tiny_checkpoint
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    vdir, adir = tmp_path / "v", tmp_path / "a"
    vdir.mkdir()
    adir.mkdir()
    for stem in ("x", "y"):
        _write_mp4(vdir / f"{stem}.mp4", _smooth_frames(130, 120, 160))
        _write_wav(adir / f"{stem}.wav", (np.random.default_rng(0).standard_normal((83200, 1)) * 3000).astype(np.int16), 16000)
    common = ["--model", str(model), "--backend", "torch", "--quiet"]
    assert main(["desync", "--videos", str(vdir), "--audios", str(adir), "--out", str(tmp_path / "d.jsonl")] + common) == 0
    summary = json.loads(capsys.readouterr().out)
    recs = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert summary["n_clips"] == 2 and summary["settings"]["protocol"] == "first_last"
    assert summary["desync"] == pytest.approx(np.mean([r["result"]["desync"] for r in recs]))
    assert main(["desync", "--videos", str(vdir / "x.mp4"), "--audios", str(adir / "x.wav"), "--protocol", "cover"]
                + common) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["windows"] == [[0, 0], [1, 1]] and one["protocol"] == "cover"  # 15 segments: 0-13, 1-14
    assert main(["desync", "--videos", str(vdir), "--audios", str(adir)] + common) == 2  # folders need --out
