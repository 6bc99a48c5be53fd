"""The synthetic clip generator: determinism, events where they should be, file round trip."""
import av
import numpy as np
import pytest

from sync_sdk import synthetic as S
from sync_sdk.geometry import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME


def visual_change(frames: np.ndarray) -> np.ndarray:
    """(T,) largest change from frame k-1 to k of a 4x4-pixel block (RGB summed); 0 for k = 0."""
    t, h, w, _ = frames.shape
    blocks = frames[:, :h // 4 * 4, :w // 4 * 4].astype(np.float32)
    blocks = blocks.reshape(t, h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4))
    d = np.abs(np.diff(blocks, axis=0)).sum(-1).max(axis=(1, 2))
    return np.concatenate([[0.0], d])


def audio_onsets(audio: np.ndarray) -> np.ndarray:
    """(T,) rise of the log energy per video frame (640 samples), clipped at 0."""
    n = len(audio) // SAMPLES_PER_FRAME
    e = np.log(np.square(audio[:n * SAMPLES_PER_FRAME]).reshape(n, -1).mean(1) + 1e-7)
    return np.concatenate([[0.0], np.maximum(np.diff(e), 0)])


def best_lag_sec(frames: np.ndarray, audio: np.ndarray) -> float:
    """Offset (multiple of 0.04 s, |.| <= 2.4 s) best aligning visual change with audio onsets:
    with offset o, audio frame k carries video frame k + o*25."""
    v, a = visual_change(frames), audio_onsets(audio)
    n = min(len(v), len(a))
    v, a = v[:n], a[:n]
    v, a = (v - v.mean()) / v.std(), (a - a.mean()) / a.std()
    lags = np.arange(-60, 61)
    score = [np.dot(v[max(l, 0):n + min(l, 0)], a[max(-l, 0):n - max(l, 0)]) for l in lags]
    return float(lags[int(np.argmax(score))] / FPS)


def decode(path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as box:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in box.decode(video=0)])
    with av.open(str(path)) as box:
        audio = np.concatenate([f.to_ndarray().mean(0) for f in box.decode(audio=0)])
    return frames, audio


def test_deterministic_per_seed():
    a, b = S.generate_clip(11, offset_sec=0.6), S.generate_clip(11, offset_sec=0.6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert a.events == b.events
    c = S.generate_clip(12, offset_sec=0.6)
    assert not np.array_equal(a.audio[: len(c.audio)], c.audio[: len(a.audio)])


def test_shapes_rates_and_crop():
    clip = S.generate_clip(5, offset_sec=-1.0, duration_sec=2.0)
    t, h, w, ch = clip.frames.shape
    assert (t, ch, min(h, w)) == (50, 3, 256) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (50 * 640,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0
    cropped = S.generate_clip(5, offset_sec=-1.0, duration_sec=2.0, crop=224)
    top, left = round((h - 224) / 2), round((w - 224) / 2)
    assert np.array_equal(cropped.frames, clip.frames[:, top:top + 224, left:left + 224])
    assert np.array_equal(cropped.audio, clip.audio)


def test_offset_only_moves_the_audio():
    """Audio at offset o is the in-sync audio shifted: sample n of it = in-sync sample n + o*16000."""
    sync = S.generate_clip(21, 0.0, duration_sec=4.0)
    lead = S.generate_clip(21, 0.4, duration_sec=4.0)
    assert np.array_equal(sync.frames, lead.frames)
    shift = int(0.4 * SAMPLE_RATE)
    assert np.allclose(lead.audio[:-shift], sync.audio[shift:], atol=1e-6)


@pytest.mark.parametrize("seed,offset", [(3, 0.8), (8, -1.2), (40, 2.0)])
def test_beep_flash_events_sit_at_offset(seed, offset):
    clip = S.generate_clip(seed, offset, kind="beep_flash")
    change = visual_change(clip.frames)
    onsets = audio_onsets(clip.audio)
    assert len(clip.events) >= 2
    for t in clip.event_times_sec:
        k = int(round(t * FPS))
        if k > 0:  # the flash starts at its event frame
            assert change[k] > 2 * np.median(change) + 30
        ka = int(round((t - offset) * FPS))  # its tone starts offset seconds earlier in the audio
        if 1 <= ka < len(onsets):
            assert onsets[ka] > 2.0
    assert best_lag_sec(clip.frames, clip.audio) == pytest.approx(offset)


def test_mixed_events_make_sounds_at_offset():
    offset = -0.6
    clip = S.generate_clip(2, offset, kind="mixed")
    onsets = audio_onsets(clip.audio)
    kinds = {e.kind for e in clip.events}
    assert kinds <= {"bounce", "hit", "clap", "flash"} and len(clip.events) >= 3
    hits = [onsets[int(round((t - offset) * FPS))] for t in clip.event_times_sec
            if 1 <= round((t - offset) * FPS) < len(onsets)]
    assert len(hits) >= 3 and np.median(hits) > 1.0


def test_no_overlap_audio_is_from_another_scene():
    clip = S.generate_clip(9, kind="beep_flash", no_overlap=True)
    same = S.generate_clip(9, kind="beep_flash")
    assert not clip.synchronizable and clip.offset_sec == 0.0
    assert np.array_equal(clip.frames, same.frames)
    assert not np.allclose(clip.audio, same.audio)
    other = S.make_scene(S.other_seed(9), -2.5, 7.7, "beep_flash", same.frames.shape[1:3])
    assert np.array_equal(clip.audio, other.audio(0, len(clip.audio)))


def test_scene_kind_is_the_kind_make_scene_draws():
    kinds = [S.scene_kind(seed) for seed in range(40)]
    assert set(kinds) == set(S.KINDS)
    assert all(S.make_scene(seed, -0.5, 0.5).kind == kinds[seed] for seed in range(0, 40, 3))
    assert all(S.make_scene(seed, -0.5, 0.5).kind == "beep_flash" for seed in range(40) if kinds[seed] == "beep_flash")


def test_file_round_trip_keeps_offset(tmp_path):
    offset = 1.4
    clip = S.generate_clip(4, offset, kind="beep_flash")
    path = S.write_clip(clip, tmp_path / "clip.mp4")
    frames, audio = decode(path)
    assert frames.shape == clip.frames.shape
    assert np.abs(frames.astype(np.float32) - clip.frames).mean() < 6
    n = len(clip.audio)
    assert len(audio) >= n
    assert np.corrcoef(audio[:n], clip.audio)[0, 1] > 0.99  # AAC keeps sample alignment
    assert best_lag_sec(frames, audio) == pytest.approx(offset)
