"""Preprocessing against the official pipeline's stored arrays (../shared/reference/preproc, two real videos).

The references were produced and checked with PyAV 18.1.0 (bundled FFmpeg 8.1.2; av 12.0.0 gave
bit-identical arrays). Decoding is exact with that version; another PyAV/FFmpeg may differ by a few
uint8 levels or in the AAC priming handling (see the README next to the references).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from sync_sdk import geometry
from sync_sdk.errors import WindowOutOfRangeError
from sync_sdk.inputs import cpu as features
from sync_sdk.inputs.window import audio_segments, prepare_inputs, video_segments
from sync_sdk.media import clip_from_arrays, read_clip

REFERENCE_AV_VERSION = "18.1.0"  # PyAV the stored references were checked with
CASES = ["3qesirWAGt4_20000_30000_off1.6_start0.0", "ZYc410CE4Rg_0_10000_off-2.0_start4.0"]
TWO_LEVELS = 2 * 2 / 255  # 2 uint8 levels in model-input units ((u/255 - 0.5) / 0.5)


def _case(preproc: Path, name: str):
    ref = np.load(preproc / f"{name}.npz")
    meta = json.loads((preproc / f"{name}.json").read_text())
    video = preproc.parent / "videos" / meta["video"]
    return ref, meta, video


@pytest.fixture(scope="module")
def decoded():
    """Full decodes, shared by the tests of a case."""
    return {}


def _full(decoded: dict, video: Path):
    if video not in decoded:
        decoded[video] = read_clip(video)
    return decoded[video]


def test_references_were_made_with_recorded_pyav(preproc_reference_dir):
    for name in CASES:
        _, meta, video = _case(preproc_reference_dir, name)
        assert meta["versions"]["av"] == REFERENCE_AV_VERSION
        assert video.is_file()


def test_constants_match_official(preproc_reference_dir):
    const = np.load(preproc_reference_dir / "constants.npz")
    assert np.array_equal(features.VIDEO_LUT, const["video_lut"])  # built from fp16 arithmetic
    assert np.array_equal(features.MEL_FBANKS, const["mel_fbanks"])  # built from the HTK formula
    np.testing.assert_allclose(features.STFT_WINDOW, const["stft_window"], rtol=0, atol=6e-8)
    assert features.VIDEO_LUT[0] == -1 and features.VIDEO_LUT[255] == 1
    assert features.VIDEO_LUT[128] == np.float32(0.00390625)


@pytest.mark.parametrize("name", CASES)
def test_decoding_matches_read_video(preproc_reference_dir, decoded, name):
    ref, _, video = _case(preproc_reference_dir, name)
    clip = _full(decoded, video)
    t, c, h, w = ref["decoded_video_shape"]
    assert clip.frames.shape == (t, h, w, c)
    means = clip.frames.reshape(len(clip.frames), -1, 3).mean(axis=1)
    np.testing.assert_allclose(means, ref["decoded_video_frame_channel_means"], rtol=0, atol=1e-9)
    # the AAC priming packet (pts -1024) is dropped: 157 x 1024 samples from pts 0, bit-exact
    assert np.array_equal(clip.audio, ref["decoded_audio"]), f"decoded audio differs (PyAV {REFERENCE_AV_VERSION}?)"


@pytest.mark.parametrize("name", CASES)
def test_crops_and_segments_match(preproc_reference_dir, decoded, name):
    ref, meta, video = _case(preproc_reference_dir, name)
    clip = _full(decoded, video)
    v0, a0 = geometry.official_window(meta["offset_sec"], meta["v_start_i_sec"])
    assert np.array_equal(clip.audio[a0:a0 + geometry.WINDOW_SAMPLES], ref["audio_crop_5s"])
    top, left = geometry.crop_offsets(*clip.frames.shape[1:3])
    crop = clip.frames[v0:v0 + geometry.WINDOW_FRAMES, top:top + 224, left:left + 224]
    np.testing.assert_allclose(crop.reshape(len(crop), -1, 3).mean(axis=1), ref["video_crop_frame_channel_means"],
                               rtol=0, atol=1e-9)
    _, a_starts = geometry.window_segment_starts(v0, a0)
    waves = np.stack([clip.audio[a:a + geometry.SEG_SAMPLES] for a in a_starts])
    assert np.array_equal(waves, ref["audio_segments"])


@pytest.mark.parametrize("name", CASES)
def test_log_mel_matches(preproc_reference_dir, name):
    ref, _, _ = _case(preproc_reference_dir, name)
    aud = features.log_mel(ref["audio_segments"])
    assert aud.dtype == np.float32 and aud.shape == (14, 1, 128, 66)
    np.testing.assert_allclose(aud, ref["aud"], rtol=0, atol=1e-4)
    assert np.all(aud[..., -1] == ref["aud"][..., -1])  # padded frame: log-domain 0.0, normalised


@pytest.mark.parametrize("name", CASES)
def test_prepare_inputs_matches_official(preproc_reference_dir, name):
    ref, meta, video = _case(preproc_reference_dir, name)
    vid, aud = prepare_inputs(video, offset_sec=meta["offset_sec"], start_sec=meta["v_start_i_sec"])
    assert vid.shape == tuple(ref["video_segments_shape"]) and vid.dtype == np.float32
    assert aud.shape == (14, 1, 128, 66) and aud.dtype == np.float32
    np.testing.assert_allclose(aud, ref["aud"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(vid.mean(axis=(3, 4), dtype=np.float64), ref["vid_mean"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(vid.std(axis=(3, 4), dtype=np.float64), ref["vid_std"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(vid[0, 0], ref["vid_seg0_frame0"], rtol=0, atol=TWO_LEVELS)
    np.testing.assert_allclose(vid[13, 0], ref["vid_seglast_frame0"], rtol=0, atol=TWO_LEVELS)
    # every value is one of the official fp16 table's entries
    assert np.isin(vid[0, 0], ref["video_lut"]).all()


@pytest.mark.parametrize("name", CASES)
def test_prepare_inputs_from_clip_and_arrays_match_path(preproc_reference_dir, decoded, name):
    ref, meta, video = _case(preproc_reference_dir, name)
    clip = _full(decoded, video)
    kw = dict(offset_sec=meta["offset_sec"], start_sec=meta["v_start_i_sec"])
    vid_c, aud_c = prepare_inputs(clip, **kw)
    vid_a, aud_a = prepare_inputs((clip.frames, 25, clip.audio, 16000), **kw)
    np.testing.assert_allclose(aud_c, ref["aud"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(vid_c.mean(axis=(3, 4), dtype=np.float64), ref["vid_mean"], rtol=0, atol=1e-3)
    assert np.array_equal(vid_a, vid_c) and np.array_equal(aud_a, aud_c)


def test_grid_segments_equal_official_window_on_the_grid(preproc_reference_dir, decoded):
    _, _, video = _case(preproc_reference_dir, CASES[0])
    clip = _full(decoded, video)
    j = 4  # window j of a scan = the official window at start 0.32 j, segments j..j+13
    vid, aud = prepare_inputs(clip, offset_sec=0.4, start_sec=1.28)
    assert np.array_equal(video_segments(clip, range(j, j + 14)), vid)
    assert np.array_equal(audio_segments(clip, range(j, j + 14), offset_sec=0.4), aud)
    # ... except where int() truncates: (0.96 + 0.4) * 16000 = 21759.99..., one sample before the grid
    _, aud3 = prepare_inputs(clip, offset_sec=0.4, start_sec=0.96)
    assert not np.array_equal(audio_segments(clip, range(3, 17), offset_sec=0.4), aud3)
    assert np.array_equal(audio_segments(clip, range(3, 17), offset_sec=0.4 - 1 / 16000), aud3)
    half = clip_from_arrays(clip.frames[:125], 25, clip.audio[:80000], 16000)
    assert list(geometry.grid_segments(len(half.frames), len(half.audio))) == list(range(14))
    with pytest.raises(WindowOutOfRangeError):
        video_segments(half, [14])


def test_official_window_quirks():
    assert geometry.official_window(1.6, 0.0) == (0, 25600)
    assert geometry.official_window(-2.0, 4.0) == (100, 32000)
    assert geometry.official_window(0.0, 1.16) == (28, 18560)  # int(1.16 * 25) = int(28.999...) = 28
    assert geometry.official_window(-0.5, 0.96) == (24, 7359)  # int(7359.999...) truncates a sample
    assert geometry.official_window(0.0, 0.05) == (1, 800)  # audio from the unrounded start: not 640
    assert geometry.official_window(0.123, 0.0) == (0, 1920)  # offset rounded to 0.01 s first
    assert geometry.official_window(-1.5, 1.49) == (37, 0)  # a_start -160 is clamped to 0
    with pytest.raises(WindowOutOfRangeError):
        geometry.official_window(-2.0, 1.0)  # audio 1 s before the media start
    assert geometry.crop_offsets(256, 454) == (16, 115) and geometry.crop_offsets(256, 340) == (16, 58)
    assert geometry.crop_offsets(256, 341) == (16, 58)  # round(58.5) = 58, half to even
    assert geometry.segment_frame(13) == 106 and geometry.segment_frame(13) + geometry.SEG_FRAMES == 122
    assert geometry.segment_sample(13) == 67840 and geometry.segment_sample(13) + geometry.SEG_SAMPLES == 78080
    assert geometry.segment_sample(0, geometry.offset_samples(-0.2)) == 1280 - 3200
