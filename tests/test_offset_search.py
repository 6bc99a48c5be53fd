"""Offset search beyond +-2 s: combination arithmetic, window planning, recovery of multi-second offsets."""
import numpy as np
import pytest

from sync_sdk.analysis.offset_search import _video_start, combine, search_offset, shift_grid
from sync_sdk.errors import ClipTooShortError, InputError
from tests.bundled import requires_trained_bundle
from tests.fake_backends import EventBackend, encoder, flash_click_clip

GRID = np.round(np.linspace(-2, 2, 21), 1)


def _peaked(residual: float | None, p: float = 0.9) -> np.ndarray:
    """probs (21,): p on the class of `residual`, the rest spread evenly; None = uniform."""
    q = np.full(21, 1 / 21) if residual is None else np.full(21, (1 - p) / 20)
    if residual is not None:
        q[int(np.argmin(np.abs(GRID - residual)))] = p
    return q


def test_shift_grid_covers_the_range():
    assert shift_grid(2.0, 1.6) == [0.0]
    assert shift_grid(6.0, 1.6) == [-4.8, -3.2, -1.6, 0.0, 1.6, 3.2, 4.8]
    assert shift_grid(5.2, 1.6) == [-3.2, -1.6, 0.0, 1.6, 3.2]
    assert shift_grid(5.3, 1.6)[-1] == 4.8


def test_combine_sums_evidence_of_covering_shifts():
    # true offset 1.0: shift d sees residual 1.0 + d; shift 1.6 sees 2.6 (out of range: says 0.4, wrongly)
    shifts = np.array([-1.6, 0.0, 1.6])
    probs = np.stack([_peaked(-0.6), _peaked(1.0), _peaked(0.4, p=0.99)])
    offsets, post, count = combine(shifts, probs)
    np.testing.assert_allclose(offsets, np.round(np.arange(-3.6, 3.61, 0.2), 1))
    assert offsets[np.argmax(post)] == pytest.approx(1.0)
    assert count[int(np.argmin(np.abs(offsets - 1.0)))] == 2
    # evidence of candidate o: sum over covering shifts of log(21 q(o + d)), q = 0.95 p + 0.05 / 21
    q = 0.95 * probs + 0.05 / 21
    score = np.array([sum(np.log(21 * qk[int(round((o + d + 2) / 0.2))]) for d, qk in zip(shifts, q)
                          if abs(o + d) <= 2 + 1e-9) for o in offsets])
    np.testing.assert_allclose(post, np.exp(score - score.max()) / np.exp(score - score.max()).sum(), rtol=1e-9)
    # the lone confident vote for -1.2 (= 0.4 - 1.6) loses to two agreeing shifts
    assert post[np.argmax(post)] > 5 * post[int(np.argmin(np.abs(offsets + 1.2)))]
    # max_offset_sec limits the candidates
    offsets, post, _ = combine(shifts, probs, max_offset_sec=2.5)
    assert offsets.min() == pytest.approx(-2.4) and offsets.max() == pytest.approx(2.4)
    assert post.sum() == pytest.approx(1.0)
    with pytest.raises(InputError):
        combine(np.array([0.0, 0.3]), probs[:2])


def test_video_window_planning():
    n_frames, n_samples = 500, 500 * 640  # 20 s
    # no shift: the preferred window itself
    assert _video_start(184, 0, n_frames, n_samples) == 184
    # audio crop 6.4 s later must still end inside the audio: v <= (320000 - 80000 - 102400) / 640
    v = _video_start(184, 102400, n_frames, n_samples)
    assert v == 184 and 640 * v + 102400 + 80000 <= n_samples
    v = _video_start(300, 102400, n_frames, n_samples)
    assert v == 212 and (v - 300) % 8 == 0  # moved on the preferred window's 8-frame grid
    # audio 6 s long inside a 60-s video: only shifts that put the audio crop inside it fit
    assert _video_start(700, -30 * 16000, 1500, 6 * 16000) in range(750, 776)
    assert _video_start(700, 0, 1500, 6 * 16000) in range(0, 26)
    assert _video_start(700, 30 * 16000, 1500, 6 * 16000) is None


@pytest.mark.parametrize("offset", [4.6, -5.4, 0.8])
def test_fake_model_recovers_offsets_of_several_seconds(offset):
    frames, fps, audio, sr, _ = flash_click_clip(20.0, offset, seed=3)
    engine = encoder(EventBackend())
    res = search_offset(engine, (frames, fps, audio, sr), max_offset_sec=7.0)
    assert res.offset_sec == pytest.approx(offset)
    assert res.confidence > 0.5 and res.support >= 2
    assert [s.shift_sec for s in res.shifts] == [-6.4, -4.8, -3.2, -1.6, 0.0, 1.6, 3.2, 4.8, 6.4]
    # the visual window stays put (the middle of the clip) and its segments are encoded once;
    # 1.6-s shifts are 5 audio segment steps, so shifts share audio segments
    assert {s.video_start_sec for s in res.shifts} == {187 / 25}
    assert res.encoded["video"] == 14
    assert res.encoded["audio"] < 9 * 14 / 2
    assert res.topk(1)[0][0] == pytest.approx(offset)


def test_search_errors():
    engine = encoder(EventBackend())
    frames, fps, audio, sr, _ = flash_click_clip(4.0, 0.0)
    with pytest.raises(ClipTooShortError):
        search_offset(engine, (frames, fps, audio, sr))
    frames, fps, audio, sr, _ = flash_click_clip(6.0, 0.0)
    with pytest.raises(InputError):
        search_offset(engine, (frames, fps, audio, sr), step_sec=0.3)


@requires_trained_bundle
@pytest.mark.parametrize("offset", [3.6, -4.4])
def test_bundled_model_finds_offsets_of_several_seconds(offset):
    from sync_sdk.engine import SyncEngine
    from sync_sdk.synthetic import generate_clip
    engine = SyncEngine.from_pretrained("synthetic-tiny")
    found = []
    for seed in (21, 22, 23):
        clip = generate_clip(seed, offset_sec=offset, duration_sec=16.0)
        found.append(search_offset(engine.encoder, (clip.frames, 25, clip.audio, 16000), max_offset_sec=6.0).offset_sec)
    assert sum(abs(f - offset) <= 0.2 + 1e-9 for f in found) >= 2, found


def test_engine_method_and_cli(tmp_path, capsys):
    from sync_sdk.engine import SyncEngine
    frames, fps, audio, sr, _ = flash_click_clip(12.0, -3.0, seed=4)
    res = SyncEngine(EventBackend()).search_offset((frames, fps, audio, sr), max_offset_sec=4.0)
    assert res.offset_sec == pytest.approx(-3.0) and res.within_model_range is False

    pytest.importorskip("torch")
    import json

    from sync_sdk.cli.main import main
    from sync_sdk.synthetic import generate_clip, write_clip
    from tests.fake_backends import tiny_checkpoint
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    video = write_clip(generate_clip(6, duration_sec=8.0), tmp_path / "clip.mp4")
    assert main(["search-offset", str(video), "--max-offset", "3", "--json", "--model", str(model),
                 "--backend", "torch"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["shift_sec"] for s in out["shifts"]] == [-1.6, 0.0, 1.6]
    assert abs(out["offset_sec"]) <= 3.0 and 0 < out["confidence"] <= 1
