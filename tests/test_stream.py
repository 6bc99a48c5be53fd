"""SyncStream: pushed media gives the same predictions as predict()/scan on the same windows, encoding
one new audio and one new visual segment per grid step."""
import numpy as np
import pytest
from tiny_engine import media_arrays, tiny_engine

from sync_sdk.errors import InputError, SyncSDKWarning
from sync_sdk.geometry import window_start_sec

pytest.importorskip("torch")
ATOL = 1e-5


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


@pytest.fixture(scope="module")
def clip():
    # 162 frames, 104000 samples: 19 complete grid segments -> stream windows 0..5 (segments j..j+13);
    # predict() takes windows 0..4 (window 5's 5-s crop would need 165 frames)
    return media_arrays(6.5)


def push_interleaved(stream, frames, audio, v_step=7, a_step=3001, t0=0.0):
    """Push video and audio in uneven pieces, alternating; returns every prediction yielded."""
    out, i, n = [], 0, 0
    while i < len(frames) or n < len(audio):
        if i < len(frames):
            out += stream.push_video(frames[i:i + v_step], pts=t0 + i / 25)
            i += v_step
        if n < len(audio):
            out += stream.push_audio(audio[n:n + a_step], pts=t0 + n / 16000)
            n += a_step
    return out


def test_stream_equals_predict_on_the_same_windows(engine, clip):
    frames, _, audio, _ = clip
    stream = engine.stream()
    results = push_interleaved(stream, frames, audio)
    assert [round(r.start_sec, 6) for r in results] == [round(0.32 * j, 6) for j in range(6)]
    for j in (0, 3, 4):
        ref = engine.predict(clip, start_sec=window_start_sec(j))
        np.testing.assert_allclose(results[j].logits, ref.logits, atol=ATOL)
        assert results[j].class_index == ref.class_index
    st = stream.cache_stats()
    assert st["audio_segments_encoded"] == 19 and st["visual_segments_encoded"] == 19
    assert stream.latest is results[-1]


def test_one_new_segment_per_update(engine, clip):
    frames, _, audio, _ = clip
    stream = engine.stream()
    # everything up to the end of segment 13 (frame 122, sample 78080): the first window
    assert stream.push_video(frames[:122]) == []
    first = stream.push_audio(audio[:78080])
    assert len(first) == 1 and stream.cache_stats()["visual_segments_encoded"] == 14
    # one grid step more: exactly one audio and one visual segment encoded, one new window
    before = stream.cache_stats()
    assert stream.push_video(frames[122:130]) == []
    new = stream.push_audio(audio[78080:83200])
    after = stream.cache_stats()
    assert len(new) == 1 and round(new[0].start_sec, 6) == 0.32
    assert after["visual_segments_encoded"] - before["visual_segments_encoded"] == 1
    assert after["audio_segments_encoded"] - before["audio_segments_encoded"] == 1
    ref = engine.predict(clip, start_sec=0.32)
    np.testing.assert_allclose(new[0].logits, ref.logits, atol=ATOL)


def test_hop_and_pts_origin(engine, clip):
    frames, _, audio, _ = clip
    stream = engine.stream(hop_sec=0.64)
    results = push_interleaved(stream, frames, audio, v_step=50, a_step=16000, t0=100.0)
    assert [round(r.start_sec - 100.0, 6) for r in results] == [0.0, 0.64, 1.28]
    ref = engine.predict(clip, start_sec=window_start_sec(4))
    np.testing.assert_allclose(results[2].logits, ref.logits, atol=ATOL)


def test_memory_stays_bounded(engine, clip):
    frames, _, audio, _ = clip
    stream = engine.stream()
    push_interleaved(stream, frames, audio, v_step=25, a_step=16000)
    assert len(stream._span.frames) < 16 and len(stream._span.audio) < 10240
    assert len(stream.cache) <= 2 * 2 * 14


def test_gaps_are_filled_and_overlaps_dropped(engine, clip):
    frames, _, audio, _ = clip
    patched = frames.copy()
    patched[150:152] = frames[149]  # what a 2-frame gap after frame 149 becomes
    ref_stream = engine.stream()
    ref_stream.push_video(patched)
    ref = ref_stream.push_audio(audio)
    stream = engine.stream()
    out = stream.push_audio(audio, pts=0.0)
    out += stream.push_video(frames[:100], pts=0.0)
    with pytest.warns(SyncSDKWarning, match="overlap"):
        out += stream.push_video(frames[90:150], pts=90 / 25)   # frames 90-99 again: dropped
    with pytest.warns(SyncSDKWarning, match="gap"):
        out += stream.push_video(frames[152:], pts=152 / 25)    # frames 150, 151 missing: repeated
    assert len(out) == len(ref) == 6
    for a, b in zip(out, ref):
        np.testing.assert_allclose(a.logits, b.logits, atol=ATOL)


def test_other_frame_sizes_and_integer_pcm_are_taken_like_predict(engine, clip):
    frames, _, audio, _ = clip
    big = np.repeat(np.repeat(frames[:125], 2, axis=1), 2, axis=2)  # 512 x 640: resized to 256 x 320
    pcm = np.round(audio[:80000] * 20000).astype(np.int16)
    stream = engine.stream()
    stream.push_video(big)
    out = stream.push_audio(pcm)
    ref = engine.predict((big, 25, pcm, 16000))
    assert len(out) == 1
    np.testing.assert_allclose(out[0].logits, ref.logits, atol=ATOL)


def test_input_validation(engine):
    stream = engine.stream()
    with pytest.raises(InputError):
        stream.push_video(np.zeros((4, 256, 256, 3), np.float32))
    stream.push_video(np.zeros((4, 256, 256, 3), np.uint8))
    with pytest.raises(InputError, match="frame size"):
        stream.push_video(np.zeros((4, 256, 320, 3), np.uint8))
    with pytest.raises(InputError):
        stream.push_audio(np.zeros((2, 3, 4), np.float32))
