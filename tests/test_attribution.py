"""Evidence attribution: scoring arithmetic, cached re-encoding, and cue recovery (fake and bundled model)."""
import itertools

import numpy as np
import pytest

from sync_sdk.analysis.attribution import attribute, effect, segment_of_time, unit_scores
from sync_sdk.errors import InputError
from tests.bundled import requires_trained_bundle
from tests.fake_backends import CellsBackend, EventBackend, encoder, flash_click_clip


def _textured_clip(seconds: float = 5.2, seed: int = 0):
    """Frames of random 32-px blocks that change every frame; noise audio whose loudness changes every 20 ms."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 25))
    frames = np.kron(rng.integers(0, 256, (n, 8, 8, 3)), np.ones((1, 32, 32, 1))).astype(np.uint8)
    gain = np.repeat(rng.uniform(0.01, 0.5, n * 2), 320)
    audio = (rng.standard_normal(n * 640) * gain).astype(np.float32)
    return frames, 25, audio, 16000


def test_unit_scores_on_a_full_factorial_design():
    masks = np.array(list(itertools.product([False, True], repeat=4)))
    effects = 2.0 * masks[:, 0] + 1.0 * masks[:, 3] + 0.5
    np.testing.assert_allclose(unit_scores(masks, effects, "mean_diff"), [2.0, 0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(unit_scores(masks, effects, "regression"), [2.0, 0.0, 0.0, 1.0], atol=1e-2)
    # a unit never (or always) corrupted carries no information
    masks[:, 1] = True
    assert unit_scores(masks, effects, "mean_diff")[1] == 0.0


def test_effect_measures():
    p0 = np.array([0.1, 0.7, 0.2])
    p = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(effect(p0, p, "prob_drop"), [0.0, 0.3])
    kl = 0.1 * np.log(0.1 / 0.4) + 0.7 * np.log(0.7 / 0.4)
    np.testing.assert_allclose(effect(p0, p, "kl"), [0.0, kl], atol=1e-12)
    with pytest.raises(InputError):
        effect(p0, p, "l2")


def test_segment_of_time():
    # window at 1.0 s: segment s covers frames 2+8s..17+8s of the crop, i.e. media 1.08 + 0.32 s ...
    assert segment_of_time(1.08, 1.0) == [0]
    assert segment_of_time(1.40, 1.0) == [0, 1]
    assert segment_of_time(1.0, 1.0) == []


@pytest.mark.parametrize("method", ["mean_diff", "regression"])
def test_fake_cues_score_highest(tmp_path, method):
    """The head reads only visual segment 3 (spatial cell row 1, col 5) and audio segment 9 (band 2)."""
    engine = encoder(CellsBackend(video_cells=[(3, 1 * 7 + 5)], audio_cells=[(9, 2)]))
    png = tmp_path / "attr.png"
    attr = attribute(engine, _textured_clip(), trials=40, method=method, seed=1, png=png)
    assert attr.base.class_index == 15
    assert attr.top_segments("audio", 1) == [9]
    assert attr.top_segments("video", 1) == [3]
    assert np.unravel_index(np.argmax(attr.spectral), attr.spectral.shape) == (2, 9)
    assert 3 in attr.spatial_segments and len(attr.spatial_segments) == 3
    assert np.unravel_index(np.argmax(attr.spatial), attr.spatial.shape) == (1, 5)
    assert attr.audio[9] > 0.1 and attr.video[3] > 0.1
    np.testing.assert_allclose(attr.segment_times, 0.4 + 0.32 * np.arange(14))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert attr.to_dict()["spatial_segments"] == attr.spatial_segments


def _segments_holding(times) -> list[int]:
    """Segments of the window at 0 s that hold any of `times` (s)."""
    return sorted({s for t in times for s in segment_of_time(t, 0.0)})


@pytest.mark.parametrize("offset", [0.4, -0.8])
def test_event_model_attributes_to_the_event_segments(offset):
    """A synthetic clip whose cue is known (two flashes; each one's click `offset` s earlier in the
    audio) and a model that reads only that cue, not saturated (p about 0.8: at p = 1, corrupting one
    of the two segments that hold a moment would move nothing). In both streams the four segments
    holding an event score highest and the others about nothing."""
    frames, fps, audio, sr, times = flash_click_clip(5.2, offset, times=[1.0, 3.2])
    attr = attribute(encoder(EventBackend(gain=0.5)), (frames, fps, audio, sr), trials=64,
                     families=("audio", "video"), method="regression", seed=0)
    assert attr.base.offset_sec == pytest.approx(offset) and 0.6 < attr.base.confidence < 0.95
    for stream, event_times in (("video", times), ("audio", times - offset)):
        held = _segments_holding(event_times)
        assert len(held) == 4
        scores = getattr(attr, stream)
        assert sorted(attr.top_segments(stream, 4)) == held, (stream, scores)
        assert scores[held].min() > 0.1 > 0.04 > np.abs(np.delete(scores, held)).max(), (stream, scores)


def test_near_certain_prediction_needs_more_corruption():
    """The same clip with a model at p = 1: the documented setting (corrupt_prob 0.7, KL) finds the
    four event segments of both streams, the default finds fewer."""
    frames, fps, audio, sr, times = flash_click_clip(5.2, 0.4, times=[1.0, 3.2])
    found = {}
    for setting in ({}, {"corrupt_prob": 0.7, "measure": "kl"}):
        hits = 0
        for seed in (0, 1, 2):
            attr = attribute(encoder(EventBackend(gain=1.5)), (frames, fps, audio, sr), trials=64,
                             families=("audio", "video"), method="regression", seed=seed, **setting)
            assert attr.base.confidence > 0.999
            for stream, event_times in (("video", times), ("audio", times - 0.4)):
                hits += sorted(attr.top_segments(stream, 4)) == _segments_holding(event_times)
        found[len(setting)] = hits
    assert found[2] == 6 and found[0] <= 3, found


def test_segment_trials_reencode_only_corrupted_segments():
    engine = encoder(CellsBackend(video_cells=[(3, 12)], audio_cells=[(9, 2)]))
    attr = attribute(engine, _textured_clip(), trials=30, families=("audio", "video"))
    # 14 clean + at most 14 corrupted segments per stream, whatever the number of trials
    assert 14 < attr.encoded["audio"] <= 28 and 14 < attr.encoded["video"] <= 28
    attr = attribute(engine, _textured_clip(), trials=3, families=("patch",), spatial_frames=3)
    assert attr.spatial_segments == list(range(14))  # no "video" family: patches go everywhere
    assert attr.encoded == {"audio": 14, "video": 14 + 3 * 14}


def test_bad_arguments():
    engine = encoder(CellsBackend([], []))
    with pytest.raises(InputError):
        attribute(engine, _textured_clip(), families=("sound",))
    with pytest.raises(InputError):
        attribute(engine, _textured_clip(), corrupt_prob=1.0)
    with pytest.raises(InputError):
        attribute(engine, _textured_clip(), trials=1)


@requires_trained_bundle
def test_bundled_model_attributes_to_event_segments():
    from sync_sdk.engine import SyncEngine
    from sync_sdk.synthetic import generate_clip
    engine = SyncEngine.from_pretrained("synthetic-tiny")
    hits = 0
    for seed in (11, 12, 13):
        clip = generate_clip(seed, duration_sec=5.2, kind="beep_flash")
        attr = attribute(engine.encoder, (clip.frames, 25, clip.audio, 16000), trials=48,
                         families=("audio", "video"), seed=seed)
        event_segs = _segments_holding(clip.event_times_sec)
        hits += attr.top_segments("audio", 1)[0] in event_segs
        hits += attr.top_segments("video", 1)[0] in event_segs
    assert hits >= 5


def test_engine_method_and_cli(tmp_path, capsys):
    from sync_sdk.engine import SyncEngine
    attr = SyncEngine(CellsBackend([(3, 12)], [(9, 2)])).attribute(_textured_clip(), trials=8, families=("audio",))
    assert attr.video is None and attr.audio.shape == (14,) and attr.top_segments("audio", 1) == [9]

    pytest.importorskip("torch")
    import json

    from sync_sdk.cli.main import main
    from sync_sdk.synthetic import generate_clip, write_clip
    from tests.fake_backends import tiny_checkpoint
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    video = write_clip(generate_clip(5, duration_sec=5.2), tmp_path / "clip.mp4")
    png, js = tmp_path / "a.png", tmp_path / "a.json"
    assert main(["attribute", str(video), "--trials", "3", "--families", "audio", "video", "--png", str(png),
                 "--json", str(js), "--corrupt-prob", "0.7", "--measure", "kl",
                 "--model", str(model), "--backend", "torch"]) == 0
    out = json.loads(js.read_text())
    assert len(out["audio"]) == len(out["video"]) == 14 and out["spectral"] is None
    assert out["corrupt_prob"] == 0.7 and out["measure"] == "kl"
    assert png.read_bytes()[:4] == b"\x89PNG"
