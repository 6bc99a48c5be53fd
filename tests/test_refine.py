"""Offsets finer than the 0.2-s classes (runtime/refine.py): the fit, predict / predict_batch / scan / DeSync
with refine=True, backward compatibility without it, the CLI's --refine."""
import json

import numpy as np
import pytest

from sync_sdk.analysis.desync import desync_batch
from sync_sdk.engine import SyncEngine
from sync_sdk.geometry import segment_sample, window_start_sec
from sync_sdk.inputs.views import view_inputs
from sync_sdk.results import CSV_FIELDS, SyncResult
from sync_sdk.runtime import refine
from tests.bundled import requires_trained_bundle
from tests.fake_backends import EventBackend, flash_click_clip

VIEWS = (-0.2, 0.0, 0.2)
GRID = np.linspace(-2, 2, 21)
OFF_GRID = (0.48, -0.72, 1.12, -1.28, 0.28)  # each 0.08 s from a class: the class grid value errs by 0.08-0.12 s


def _response(y: float, width: float = 0.06) -> np.ndarray:
    """probs (21,) of a model that sees offset y: a Gaussian bump around y over the class centres."""
    p = np.exp(-(GRID - y) ** 2 / (2 * width ** 2)) + 1e-6
    return p / p.sum()


@pytest.fixture(scope="module")
def engine():
    return SyncEngine(EventBackend(), shift_views=VIEWS)


def _clip(offset: float, duration: float = 6.0, seed: int = 1):
    frames, fps, audio, sr, _ = flash_click_clip(duration, offset, seed=seed)
    return frames, fps, audio, sr


# ---------------------------------------------------------------- the fit
@pytest.mark.parametrize("offset", [0.537, -1.263, 0.0, 1.9])
def test_fit_finds_the_offset_the_shifted_views_agree_on(offset):
    """A view with audio shift d sees offset + d; fitting x + d recovers the offset within 10 ms (for the
    off-grid offsets a fit of x - d, or of the unshifted view alone, is 50-140 ms off)."""
    shifts = refine.FINE_SHIFTS
    probs = np.stack([_response(offset + d) for d in shifts])
    center = float(GRID[np.argmin(np.abs(GRID - offset))])
    est, low, high = refine.fit(shifts, probs, center)
    assert est == pytest.approx(offset, abs=0.01)
    assert low <= est <= high and low <= offset <= high and high - low < 0.2


def test_fit_is_confined_to_the_search_span_and_the_model_range():
    probs = np.stack([_response(1.0 + d) for d in refine.FINE_SHIFTS])
    est, low, high = refine.fit(refine.FINE_SHIFTS, probs, 1.6)  # the views say 1.0; the class said 1.6
    assert est == pytest.approx(1.6 - refine.SEARCH_SEC) and low <= est <= high <= 1.8
    est, _, high = refine.fit(refine.FINE_SHIFTS, np.stack([_response(2.0 + d) for d in refine.FINE_SHIFTS]), 2.0)
    assert est <= 2.0 and high <= 2.0
    # evidence: the mean over the views covering a candidate of log(21 q), q mixed with ROBUST uniform
    probs = np.stack([_response(0.0), _response(0.3)])
    ev = refine.evidence([0.0, 0.2], probs, np.array([0.1, 1.9]))
    q = 0.95 * probs + 0.05 / 21
    both = (np.interp(0.1, GRID, np.log(21 * q[0])) + np.interp(0.3, GRID, np.log(21 * q[1]))) / 2
    assert ev == pytest.approx([both, np.interp(1.9, GRID, np.log(21 * q[0]))])  # only shift 0 covers 1.9


# ---------------------------------------------------------------- predict
@pytest.mark.parametrize("offset", OFF_GRID)
def test_refine_recovers_off_grid_offsets_of_flash_click_clips(engine, offset):
    src = _clip(offset)
    plain = engine.predict(src, start_sec=0.4)
    res = engine.predict(src, start_sec=0.4, refine=True)
    assert abs(plain.offset_sec - offset) >= 0.08 - 1e-9  # the class alone is 80-120 ms off
    assert abs(res.offset_sec - offset) <= 0.045, (res.offset_sec, res.offset_interval_sec)
    low, high = res.offset_interval_sec
    assert low <= res.offset_sec <= high and res.refined and not plain.refined
    # the class answer is the one without refine
    assert res.class_index == plain.class_index and res.class_offset_sec == plain.offset_sec
    np.testing.assert_allclose(res.logits, plain.logits, atol=1e-5)
    assert res.views == plain.views


def test_predict_batch_refines_each_clip_as_predict_does(engine):
    a, b = _clip(0.48), _clip(-0.72, seed=2)
    batch = engine.predict_batch([a, b], start_sec=[0.4, 0.6], refine=True)
    for res, src, start in zip(batch, (a, b), (0.4, 0.6)):
        one = engine.predict(src, start_sec=start, refine=True)
        assert res.offset_sec == pytest.approx(one.offset_sec, abs=1e-9)
        assert res.offset_interval_sec == pytest.approx(one.offset_interval_sec, abs=1e-9)
        assert res.start_sec == start


def test_fine_views_that_leave_the_media_are_left_out():
    """At start 0 a window's segments have 0.08 s of audio before them; in a 5.2-s clip 0.32 s after."""
    src = _clip(0.3, duration=5.2)
    views, fine = refine.clip_views(src, 0.0, 0.0, VIEWS)
    assert [v.shift_sec for v in views] == [0.0, -0.2, 0.2]  # view -0.2 moves the video, as without refine
    assert [v.shift_sec for v in fine] == [-0.08, 0.08, 0.16, 0.24, 0.32]
    # 5.08 s (127 frames): 0.2 s of audio after the segments
    assert [v.shift_sec for v in refine.clip_views(_clip(0.3, duration=5.08), 0.0, 0.0, VIEWS)[1]] == [
        -0.08, 0.08, 0.16]
    assert all(v.vid is views[0].vid for v in fine)  # one video crop: its features are encoded once
    np.testing.assert_array_equal(fine[1].aud, view_inputs(src, 0.0, 0.08, [0.0])[0].aud)


def test_without_refine_results_are_as_before(engine):
    """refine=False is the code path of before: the same logits bit for bit, the same dict keys and CSV."""
    src = _clip(0.48)
    res = engine.predict(src, start_sec=0.4)
    before = SyncResult.from_logits(engine.encoder.views_logits([view_inputs(src, 0.4, 0.0, VIEWS)])[0],
                                    start_sec=0.4, views=res.views)
    np.testing.assert_array_equal(res.logits, before.logits)
    assert res.offset_sec == res.class_offset_sec == 0.4 and res.offset_interval_sec is None
    assert set(res.to_dict()) == {"source", "start_sec", "offset_sec", "class_index", "confidence", "in_sync",
                                  "in_sync_tolerant", "has_evidence", "flags", "views", "topk", "probs"}
    assert repr(res).startswith("SyncResult(offset_sec=+0.4,")
    timeline = engine.scan(src, hop_sec=0.32)
    assert timeline.to_csv().splitlines()[0] == ",".join(CSV_FIELDS)


def test_refined_result_carries_the_interval_in_dict_json_and_csv(engine):
    src = _clip(0.48, duration=6.5)
    res = engine.predict(src, start_sec=0.4, refine=True)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["offset_sec"] == res.offset_sec != d["class_offset_sec"] == 0.4
    assert d["offset_interval_sec"] == list(res.offset_interval_sec)
    timeline = engine.scan(src, refine=True)
    rows = timeline.to_csv().splitlines()
    assert rows[0].split(",")[-3:] == ["class_offset_sec", "offset_low_sec", "offset_high_sec"]
    first = dict(zip(rows[0].split(","), rows[1].split(",")))
    w = timeline[0]
    assert float(first["offset_sec"]) == w.offset_sec and float(first["offset_low_sec"]) == w.offset_interval_sec[0]
    assert json.loads(timeline.to_json())["windows"][0]["offset_high_sec"] == w.offset_interval_sec[1]
    assert timeline.summary()["median_window_offset_sec"] == float(np.median(timeline.offset_sec))


# ---------------------------------------------------------------- scan
def test_scan_refines_each_window_as_predict_does(engine):
    src = _clip(-0.53, duration=8.0, seed=3)
    engine.clear_cache()
    timeline = engine.scan(src, hop_sec=0.32, refine=True)
    stats = engine.cache_stats()
    plain = engine.scan(src, hop_sec=0.32)
    assert len(timeline) == len(plain) == 10
    np.testing.assert_array_equal(timeline.probs, plain.probs)  # the class answers are unchanged
    for j in (2, 5, 7):  # inner windows: every view keeps the video crop, in predict as in scan
        res = engine.predict(src, start_sec=window_start_sec(j), refine=True)
        np.testing.assert_allclose(res.logits, timeline[j].logits, atol=1e-4)
        assert timeline[j].offset_sec == pytest.approx(res.offset_sec, abs=1e-9)
        assert timeline[j].offset_interval_sec == pytest.approx(res.offset_interval_sec, abs=1e-9)
    assert np.all(np.abs(timeline.offset_sec + 0.53) <= 0.045)
    # every shifted audio segment is encoded once; shifts 0.32 s apart (-0.16 and +0.16, 0 and +-0.32,
    # ...) read the same audio one grid step apart and share it
    n, end = 14, 8 * 16000
    keys = {segment_sample(g, round(d * 16000)) for j in range(len(timeline)) for d in refine.scan_shifts(engine.encoder)
            if segment_sample(j, round(d * 16000)) >= 0 and segment_sample(j + n - 1, round(d * 16000)) + 10240 <= end
            for g in range(j, j + n)}
    assert stats["audio_segments_encoded"] == len(keys) < len(refine.scan_shifts(engine.encoder)) * 23
    uncached = engine.scan(src, hop_sec=0.32, refine=True, cache=False)
    np.testing.assert_allclose(uncached.offset_sec, timeline.offset_sec, atol=1e-9)


def test_stream_refines_each_window_as_scan_does(engine):
    """A refined stream fed in pieces gives each window the continuous offset and interval scan gives it."""
    frames, fps, audio, sr = _clip(0.61, duration=8.0, seed=6)
    timeline = engine.scan((frames, fps, audio, sr), hop_sec=0.32, refine=True)
    stream = engine.stream(refine=True)
    out = []
    for i in range(0, len(frames), 10):
        out += stream.push_video(frames[i:i + 10])
        out += stream.push_audio(audio[i * 640:(i + 10) * 640])
    # the last window waits for audio 0.32 s past the media's end (its +0.32-s fine view), which never comes
    assert len(out) == len(timeline) - 1 and all(r.refined for r in out)
    for r in out:
        w = timeline[round(r.start_sec / 0.32)]
        np.testing.assert_allclose(r.logits, w.logits, atol=1e-5)
        assert r.offset_sec == pytest.approx(w.offset_sec, abs=1e-6)
        assert r.offset_interval_sec == pytest.approx(w.offset_interval_sec, abs=1e-6)


# ---------------------------------------------------------------- the bundled model
@requires_trained_bundle
def test_bundled_model_refines_off_grid_offsets():
    """synthetic-tiny on clips 80 ms off its classes (seeds outside the benchmark's ranges): the refined
    offset is nearer than the class grid value on average, and within 60 ms on average."""
    from sync_sdk.synthetic import generate_clip
    eng = SyncEngine.from_pretrained("synthetic-tiny")
    offsets = (0.48, -0.72, 0.28, -0.32, 0.92, -1.52)
    plain, fine = [], []
    for i, off in enumerate(offsets):
        clip = generate_clip(5_000_000 + i, off, duration_sec=5.2)
        res = eng.predict((clip.frames, 25, clip.audio, 16000), refine=True)
        plain.append(abs(res.class_offset_sec - off))
        fine.append(abs(res.offset_sec - off))
        assert res.offset_interval_sec[0] <= res.offset_sec <= res.offset_interval_sec[1]
    assert np.mean(fine) <= 0.06 and np.mean(fine) < np.mean(plain) - 0.02, (plain, fine)


# ---------------------------------------------------------------- CLI
def test_cli_refine_in_predict_batch_scan_desync(tmp_path, capsys):
    from sync_sdk.cli.main import EXIT_OK, main
    from sync_sdk.synthetic import generate_clip, write_clip
    path = write_clip(generate_clip(5_000_100, 0.47, duration_sec=5.84), tmp_path / "c.mp4")
    assert main(["predict", str(path), "--refine", "--json", "--model", "synthetic-tiny"]) == EXIT_OK
    rec = json.loads(capsys.readouterr().out)["result"]
    low, high = rec["offset_interval_sec"]
    assert low <= rec["offset_sec"] <= high and rec["class_offset_sec"] in np.round(GRID, 1)
    assert main(["predict", str(path), "--refine", "--model", "synthetic-tiny"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"offset {rec['offset_sec']:+.3f} s" in out and f"interval {low:+.3f}..{high:+.3f} s" in out
    jsonl = tmp_path / "batch.jsonl"
    assert main(["batch", str(path), "--out", str(jsonl), "--refine", "--quiet", "--model", "synthetic-tiny"]) == EXIT_OK
    assert json.loads(jsonl.read_text())["result"]["offset_interval_sec"] == [low, high]
    capsys.readouterr()
    assert main(["scan", str(path), "--refine", "--quiet", "--model", "synthetic-tiny"]) == EXIT_OK
    out, err = capsys.readouterr()
    header, *rows = out.strip().splitlines()
    assert header.endswith("class_offset_sec,offset_low_sec,offset_high_sec") and len(rows) == 3
    assert "median refined window offset" in err
    assert main(["desync", "--videos", str(path), "--audios", str(path), "--duration", "5.8", "--refine",
                 "--model", "synthetic-tiny"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["desync"] == pytest.approx(np.mean(np.abs(rec["offsets"]))) and len(rec["intervals"]) == 2


# ---------------------------------------------------------------- DeSync
def test_desync_with_refine_is_the_mean_refined_offset(engine, tmp_path, capsys):
    """first_last windows of an 8-s pair whose audio leads by 0.47 s: each refined offset is near 0.47,
    DeSync is their mean |offset|; without refine the dict and the grid DeSync are as before."""
    frames, _, audio, _ = _clip(0.47, duration=8.0, seed=4)
    plain = engine.desync(frames, (audio, 16000))
    res = engine.desync(frames, (audio, 16000), refine=True)
    assert res.desync == pytest.approx(np.mean(np.abs(res.offsets)))
    assert all(abs(o - 0.47) <= 0.045 for o in res.offsets), res.offsets
    assert res.class_offsets == plain.offsets and plain.class_offsets is None
    assert all(lo <= o <= hi for o, (lo, hi) in zip(res.offsets, res.intervals))
    assert abs(plain.desync - 0.47) >= 0.069 > 0.045 >= abs(res.desync - 0.47)
    assert "class_offsets" not in plain.to_dict() and "intervals" not in plain.to_dict()
    assert json.loads(json.dumps(res.to_dict()))["intervals"] == [list(i) for i in res.intervals]
    # a batch of clips (folder runs) refines each clip as desync does on its own
    other = _clip(-0.61, duration=8.0, seed=5)
    batch = list(desync_batch(engine.encoder, [("a", frames, (audio, 16000)), ("b", other[0], (other[2], 16000))],
                              refine=True))
    assert batch[0].offsets == pytest.approx(res.offsets, abs=1e-6) and batch[0].intervals == pytest.approx(res.intervals)
    assert batch[1].offsets == pytest.approx(engine.desync(other[0], (other[2], 16000), refine=True).offsets, abs=1e-6)
