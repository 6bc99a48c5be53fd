"""Every path answers one window through the one segment-encoding seam: the same logits, to the bit.

Window 0 of a 5-s file (segments 0..13: frames 2..121, samples 1280..78079) through predict, scan,
stream, DeSync (the synchformer layout on that window's frames and samples, protocol "cover": one
window), the Ray batch's decode and scoring, and attribution's unperturbed prediction. The bundled
model runs on ONNX Runtime; the paths that combine shift views are also compared with the model's
own views.
"""
import numpy as np
import pytest

from sync_sdk.engine import SyncEngine
from sync_sdk.geometry import FIRST_FRAME, FIRST_SAMPLE, N_SEGMENTS, SAMPLE_RATE, SEG_FRAMES, STEP_FRAMES
from sync_sdk.media import read_clip
from sync_sdk.serving.ray_batch import decode_row, row_views
from sync_sdk.synthetic import generate_clip, write_clip


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    clip = generate_clip(7, offset_sec=0.4, duration_sec=5.0)
    return str(write_clip(clip, tmp_path_factory.mktemp("seam") / "w.mp4"))


def _stream_logits(engine, clip) -> np.ndarray:
    stream = engine.stream()
    results = stream.push_video(clip.frames) + stream.push_audio(clip.audio)
    assert results[0].start_sec == 0.0
    return results[0].logits


def _ray_logits(engine, path: str) -> np.ndarray:
    row = decode_row({"path": path, "start_sec": 0.0, "input_offset_sec": 0.0}, engine.shift_views)
    assert row["error"] == "", row["message"]
    batch = {k: [v] for k, v in row.items()}
    return engine.encoder.views_logits([row_views(batch, 0)])[0]


def test_every_path_gives_the_same_logits_for_one_window(path):
    engine = SyncEngine.from_pretrained("synthetic-tiny", shift_views=[0.0])
    clip = read_clip(path)
    predicted = engine.predict(path, start_sec=0.0).logits
    scanned = engine.scan(path)
    assert len(scanned) == 1
    span = slice(FIRST_FRAME, FIRST_FRAME + STEP_FRAMES * (N_SEGMENTS - 1) + SEG_FRAMES)
    window_audio = clip.audio[FIRST_SAMPLE:]
    d = engine.desync(clip.frames[span], (window_audio, SAMPLE_RATE), duration_sec=(span.stop - span.start) / 25,
                      protocol="cover", layout="synchformer")
    assert d.windows == [(0, 0)]
    attributed = engine.attribute(path, trials=2, families=("audio",)).base.logits
    answers = {"scan": scanned[0].logits, "stream": _stream_logits(engine, clip), "desync": d.logits[0],
               "ray": _ray_logits(engine, path), "attribution": attributed}
    for name, logits in answers.items():
        np.testing.assert_array_equal(logits, predicted, err_msg=name)


def test_the_paths_that_combine_views_agree_with_predict(tmp_path):
    path = str(write_clip(generate_clip(8, offset_sec=-0.6, duration_sec=5.6), tmp_path / "v.mp4"))
    engine = SyncEngine.from_pretrained("synthetic-tiny")
    assert len(engine.shift_views) == 3  # the bundle's inference.json
    predicted = engine.predict(path, start_sec=0.0).logits
    assert not np.array_equal(predicted, SyncEngine(engine.backend, shift_views=[0.0]).predict(path).logits)
    np.testing.assert_array_equal(_ray_logits(engine, path), predicted)
    # scan and stream leave out a view whose audio lies outside the media: at the file's start the
    # -0.2 s view does not fit, so they combine views 0 and +0.2 where predict moves the video instead
    scanned = engine.scan(path)[0].logits
    assert not np.array_equal(scanned, predicted)
    np.testing.assert_array_equal(scanned, _stream_logits(engine, read_clip(path)))
