"""DeSync (av-benchmark compatible): preset preprocessing against independent NumPy computations,
window selection and scoring arithmetic on constructed logits, short clips dropped (or filled), file
pairing by av-benchmark's name cleaning, resumable directory runs."""
import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.analysis.desync import desync, desync_batch, desync_score, load_pair, offsets_from_logits, window_starts
from sync_sdk.engine import SyncEngine
from sync_sdk.errors import ClipTooShortError, InputError
from sync_sdk.media import bicubic_aa_taps, load_audio_16k, resample, resize_short_crop
from sync_sdk.serving.desync_jobs import clean_sample_name, desync_dir, pair_files
from tests.fake_backends import RecordingBackend, encoder
from tests.test_resize_native import ref_preset

GRID = np.linspace(-2, 2, 21)


# --- independent references (the preset's resize: tests/test_resize_native.py) ---------------------
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


def write_video_mp4(path: Path, frames: np.ndarray, rate=25) -> Path:
    """H.264 (crf 18) of uint8 (T, H, W, 3) frames at `rate` (int or Fraction), no audio."""
    import av
    with av.open(str(path), "w") as box:
        st = box.add_stream("libx264", rate=rate)
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
    """torchvision's uint8 path, exactly (it was a float computation within one level before #26)."""
    frames = _smooth_frames(2, *size)
    got = resize_short_crop(frames)
    assert got.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(got, ref_preset(frames))


def test_resize_matches_pil_bicubic():
    Image = pytest.importorskip("PIL.Image")
    frame = _smooth_frames(1, 270, 480, seed=4)[0]
    pil = np.asarray(Image.fromarray(frame).resize((398, 224), Image.BICUBIC, reducing_gap=None))
    # PIL computes the same two integer passes (8-bit intermediate, clamped) with weights at another
    # fixed-point precision: within 2 levels, and equal for all but a few in a hundred values
    diff = np.abs(pil[:, 87:311].astype(int) - resize_short_crop(frame[None])[0])
    assert diff.max() <= 2 and (diff > 0).mean() < 0.02


def test_aa_taps_sum_to_one_in_fixed_point_and_stay_inside():
    idx, w, p = bicubic_aa_taps(640, 398)
    assert idx.shape == w.shape == (398, 9) and idx.min() >= 0 and idx.max() < 640
    assert np.abs(w.sum(axis=1) - 2 ** p).max() <= 5  # 1.0 up to the rounding of 9 weights
    assert 2 ** 14 <= w.max() < 2 ** 15  # the largest precision whose weights fit int16


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
    video = write_video_mp4(tmp_path / "clip.mp4", frames)
    rng = np.random.default_rng(6)
    pcm = (rng.standard_normal((246960, 2)) * 5000).astype(np.int16)  # 5.6 s
    audio = _write_wav(tmp_path / "clip.wav", pcm, 44100)
    be = RecordingBackend()
    res = desync(encoder(be, max_batch=5), video, audio)
    assert (res.n_video_segments, res.n_audio_segments, res.windows) == (16, 16, [(0, 0), (2, 2)])
    assert res.desync == 0.0 and res.offsets == [0.0, 0.0] and res.duration_sec == pytest.approx(5.6)

    with av.open(str(video)) as box:  # plain decode, then the reference preset
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in box.decode(video=0)])
    crops = ref_preset(decoded)
    segs = list(range(16))  # windows 0-13 and 2-15 cover every segment, each encoded once, in order
    vid = np.concatenate(be.video_inputs)
    assert vid.shape == (16, 16, 3, 224, 224) and vid.dtype == np.float32
    expect = np.stack([crops[8 * g:8 * g + 16] for g in segs]).transpose(0, 1, 4, 2, 3) / 255.0 * 2 - 1
    assert np.abs(vid - expect).max() <= 1e-6  # the same pixels; float32 rounding of the table only

    mono = pcm.astype(np.float64).mean(axis=1) / 32768
    wave16 = resample(mono.astype(np.float32), 44100, 16000)[:89600]
    aud = np.concatenate(be.audio_inputs)
    assert aud.shape == (16, 1, 128, 66)
    for g in (0, 7, 15):
        np.testing.assert_allclose(aud[g, 0], _ref_log_mel(wave16[5120 * g:5120 * g + 10240]), atol=2e-3)
    # the waveform itself against the direct formula
    np.testing.assert_allclose(wave16[[0, 51200, 89599]],
                               _ref_resample(mono, 44100, 16000, np.array([0, 51200, 89599])), atol=2e-5)


def test_given_duration_cuts_both_streams_and_drops_short_videos():
    """av-benchmark: a video with fewer than int(25 d) frames raises "Sync video too short" and the
    clip is dropped; fill_frames=k repeats the last frame instead when at most k are missing."""
    frames = _smooth_frames(121, 224, 224)  # 4.84 s
    audio = (np.zeros(16000 * 6, np.float32), 16000)
    crops, wave16, d = load_pair(frames, audio, duration_sec=4.84)
    assert crops.shape[0] == 121 and len(wave16) == int(16000 * 4.84) and d == 4.84
    np.testing.assert_array_equal(load_pair(frames, audio, duration_sec=4.0)[0], crops[:100])
    with pytest.raises(ClipTooShortError, match="Sync video too short.*fill_frames >= 3"):
        load_pair(frames, audio, duration_sec=4.96)  # 124 frames asked, 3 missing
    crops, _, _ = load_pair(frames, audio, duration_sec=4.96, fill_frames=3)
    assert crops.shape[0] == 124
    np.testing.assert_array_equal(crops[121:], np.repeat(crops[120:121], 3, axis=0))
    with pytest.raises(ClipTooShortError):
        load_pair(frames, audio, duration_sec=5.0, fill_frames=3)  # 4 frames missing
    with pytest.raises(ClipTooShortError, match="Audio ... is too short"):
        load_pair(frames, audio, duration_sec=6.5, fill_frames=50)  # audio shorter than asked
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InputError, match="fill_frames"):
            load_pair(frames, audio, fill_frames=bad)


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


def test_short_and_bad_clips_are_reported_and_others_go_on():
    good = (_smooth_frames(125, 224, 224), (np.zeros(80000, np.float32), 16000))
    short = (_smooth_frames(123, 224, 224), (np.zeros(80000, np.float32), 16000))  # 2 of 125 frames missing
    bad = (np.zeros((125, 224, 224, 3), np.float32), (np.zeros(80000, np.float32), 16000))
    items = [("short", *short), ("bad", *bad), ("ok", *good)]
    out = list(desync_batch(encoder(RecordingBackend()), items))
    assert out[0].name == "short" and out[0].error is None and math.isnan(out[0].desync)
    assert out[0].dropped.startswith("ClipTooShortError: video holds 123 frames") and out[0].to_dict()["dropped"]
    assert out[1].name == "bad" and out[1].dropped is None and "InputError" in out[1].error
    assert out[2].name == "ok" and out[2].error is None and out[2].dropped is None and out[2].desync == 0.0
    filled = list(desync_batch(encoder(RecordingBackend()), items[:1], fill_frames=2))
    assert filled[0].dropped is None and filled[0].desync == 0.0 and filled[0].n_video_segments == 14


# --- directories --------------------------------------------------------------------------------
def test_clean_sample_name_is_av_benchmarks():
    assert clean_sample_name("000000014_zxpo56cpUBU_000007-0") == "zxpo56cpUBU_000007"  # 30 characters
    assert clean_sample_name("zxpo56cpUBU_000007-0") == "zxpo56cpUBU_000007"  # 20
    assert clean_sample_name("Y---g-f_I2yQ_000001_0") == "---g-f_I2yQ_000001"  # 21
    for name in ("zxpo56cpUBU_000007", "clip", "a" * 19, "a" * 22, "a" * 31, ""):  # other lengths: as they are
        assert clean_sample_name(name) == name


def test_pairing_cleans_audio_names_or_matches_stems(tmp_path):
    vdir, adir = tmp_path / "v", tmp_path / "a"
    vdir.mkdir()
    adir.mkdir()
    for stem in ["zxpo56cpUBU_000007", "---g-f_I2yQ_000001", "abcdefghijklmnopqrst", "plain"]:
        (vdir / f"{stem}.mp4").touch()
    for name in ["000000014_zxpo56cpUBU_000007-0.flac", "zxpo56cpUBU_000007-1.wav", "Y---g-f_I2yQ_000001_0.wav",
                 "abcdefghijklmnopqrst.wav", "plain.wav", "zxpo56cpUBU_000007.wav", "notes.txt"]:
        (adir / name).touch()
    pairs, v_only, a_only = pair_files(vdir, adir)
    assert [(n, v.stem) for n, v, _ in pairs] == [
        ("000000014_zxpo56cpUBU_000007-0", "zxpo56cpUBU_000007"), ("Y---g-f_I2yQ_000001_0", "---g-f_I2yQ_000001"),
        ("plain", "plain"), ("zxpo56cpUBU_000007", "zxpo56cpUBU_000007"),
        ("zxpo56cpUBU_000007-1", "zxpo56cpUBU_000007")]
    assert v_only == a_only == ["abcdefghijklmnopqrst"]  # 20 characters: cleaned to its first 18
    pairs, v_only, a_only = pair_files(vdir, adir, pairing="exact")
    assert [n for n, _, _ in pairs] == ["abcdefghijklmnopqrst", "plain", "zxpo56cpUBU_000007"]
    assert v_only == ["---g-f_I2yQ_000001"]
    assert a_only == ["000000014_zxpo56cpUBU_000007-0", "Y---g-f_I2yQ_000001_0", "zxpo56cpUBU_000007-1"]
    with pytest.raises(InputError, match="pairing"):
        pair_files(vdir, adir, pairing="stem")

    for p in list(vdir.iterdir()) + list(adir.iterdir()):  # only the 20-character pair left
        if "abcdefghijklmnopqrst" not in p.name:
            p.unlink()
    summary = desync_dir(SyncEngine(RecordingBackend()), vdir, adir, tmp_path / "d.jsonl")
    assert summary["n_clips"] == 0 and "pairing='exact'" in summary["hint"]


def test_directory_run_drops_short_clips_and_resumes(tmp_path):
    vdir, adir, out = tmp_path / "videos", tmp_path / "audios", tmp_path / "desync.jsonl"
    vdir.mkdir()
    adir.mkdir()
    for i, stem in enumerate(["a", "b", "c", "video_only", "broken"]):
        write_video_mp4(vdir / f"{stem}.mp4", _smooth_frames(125, 120, 160, seed=i))
    write_video_mp4(vdir / "short.mp4", _smooth_frames(123, 120, 160, seed=9))  # 2 frames short of the 5-s audio
    for stem in ["a", "b", "c", "short", "audio_only"]:
        _write_wav(adir / f"{stem}.wav", np.zeros((80000, 1), np.int16), 16000)
    (adir / "broken.wav").write_bytes(b"not audio")
    pairs, v_only, a_only = pair_files(vdir, adir)
    assert [p[0] for p in pairs] == ["a", "b", "broken", "c", "short"]
    assert v_only == ["video_only"] and a_only == ["audio_only"]

    # clips a, b, c: window logits say +1.6/0.0, -0.4/-0.4, 2.0/2.0 (clip c is in the second batch)
    be = RecordingBackend(_logits([18, 10, 8, 8, 20, 20]))
    summary = desync_dir(SyncEngine(be), vdir, adir, out, batch_clips=2)
    assert summary["desync"] == pytest.approx((0.8 + 0.4 + 2.0) / 3, abs=1e-6)  # short: not in the mean
    assert (summary["n_clips"], summary["n_dropped"], summary["n_failed"], summary["n_windows"]) == (3, 1, 1, 6)
    assert summary["dropped"] == ["short"] and summary["failed"] == ["broken"]
    assert summary["video_only"] == ["video_only"] and summary["settings"]["fill_frames"] == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    status = {r["name"]: r["status"] for r in recs}
    assert status == {"a": "ok", "b": "ok", "broken": "error", "c": "ok", "short": "dropped"}
    short = next(r for r in recs if r["name"] == "short")
    assert "Sync video too short" in short["reason"] and short["settings"] == summary["settings"]
    assert next(r for r in recs if r["name"] == "b")["result"]["offsets"] == pytest.approx([-0.4, -0.4])

    # lose clip b's line, resume: b is computed again (and the failed clip tried again); a, c and the
    # dropped clip are not
    out.write_text("".join(json.dumps(r) + "\n" for r in recs if r["name"] != "b"))
    be2 = RecordingBackend(_logits([8, 8]))
    summary = desync_dir(SyncEngine(be2), vdir, adir, out, resume=True)
    assert summary["desync"] == pytest.approx((0.8 + 0.4 + 2.0) / 3, abs=1e-6) and summary["n_clips"] == 3
    assert sum(len(v) for v in be2.video_inputs) == 14
    names = [json.loads(x)["name"] for x in out.read_text().splitlines()]
    assert names.count("short") == 1 and names.count("broken") == 2 and names.count("b") == 1
    with pytest.raises(InputError):  # other settings into the same file
        desync_dir(SyncEngine(be2), vdir, adir, out, protocol="cover", resume=True)
    with pytest.raises(InputError):
        desync_dir(SyncEngine(be2), vdir, adir, out, fill_frames=2, resume=True)

    # filling up to 2 frames scores the short clip (its last 2 frames repeat the 123rd)
    be3 = RecordingBackend(_logits([18, 10, 8, 8, 20, 20, 13, 13]))
    summary = desync_dir(SyncEngine(be3), vdir, adir, tmp_path / "filled.jsonl", fill_frames=2)
    assert (summary["n_clips"], summary["n_dropped"]) == (4, 0)
    assert summary["desync"] == pytest.approx((0.8 + 0.4 + 2.0 + 0.6) / 4, abs=1e-6)


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
        write_video_mp4(vdir / f"{stem}.mp4", _smooth_frames(130, 120, 160))
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
    capsys.readouterr()
    assert main(["desync", "--videos", str(vdir), "--audios", str(adir), "--out", str(tmp_path / "e.jsonl"),
                 "--pairing", "exact", "--fill-frames", "3", "--duration", "5"] + common) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_clips"] == 2 and summary["settings"]["pairing"] == "exact"
    assert summary["settings"]["fill_frames"] == 3 and summary["settings"]["duration_sec"] == 5.0
    assert main(["desync", "--videos", str(vdir), "--audios", str(adir), "--out", str(tmp_path / "f.jsonl"),
                 "--duration", "5.28"] + common) == 0  # dropped clips are not failures
    summary = json.loads(capsys.readouterr().out)  # the 5.2-s audio is too short for 5.28 s
    assert (summary["n_clips"], summary["n_dropped"], summary["dropped"]) == (0, 2, ["x", "y"])
    assert main(["desync", "--videos", str(vdir / "x.mp4"), "--audios", str(adir / "x.wav"), "--fill-frames", "-1"]
                + common) == 2
