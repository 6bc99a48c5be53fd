"""The decoder's options: "short256" slots against "native" frames (FFmpeg's fps filter, the av-benchmark
reader), 16 kHz audio against the track at its own rate, and the errors every reader shares.

Media are generated with tests.test_media.write_media (frame i is grey level(i) with a red top-left marker).
"""
import numpy as np
import pytest

from sync_sdk.errors import (
    CorruptMediaWarning,
    MediaDecodeError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
)
from sync_sdk.inputs.layouts import get_layout
from sync_sdk.media import load_audio_16k, read_audio, read_clip, read_video_crops, read_video_slots, resize_short_crop
from tests.test_media import corrupt_media, grey, level, write_media

AV_BENCHMARK, SYNCHFORMER = get_layout("av-benchmark"), get_layout("synchformer")


class Native:
    """A layout that keeps the decoded "native" frames (25 fps, coded size) as they are."""

    frame_size = "native"

    @staticmethod
    def crop_frames(frames: np.ndarray) -> np.ndarray:
        return frames


def test_native_frames_follow_ffmpeg_fps_filter(tmp_path):
    """A stream starting at 0.37 s: the fps filter starts at the first frame's slot; the slots of media
    time show the first frame from slot 0 (0.37 s -> slot 9)."""
    path = write_media(tmp_path / "late.mp4", frame_times=[0.37 + i / 25 for i in range(50)], seconds=2.4)
    native = read_video_crops(path, Native)
    assert native.shape == (50, 48, 64, 3)
    assert grey(native) == pytest.approx([level(i) for i in range(50)], abs=2)
    np.testing.assert_array_equal(read_video_crops(path, Native, max_frames=7), native[:7])
    slots = read_video_slots(path, 0, None)
    assert len(slots) == 59
    assert grey(slots) == pytest.approx([level(0)] * 9 + [level(i) for i in range(50)], abs=2)


def test_native_frames_keep_the_coded_orientation(tmp_path):
    path = write_media(tmp_path / "rot.mp4", size=(64, 48), seconds=0.2, rotation=90)
    native = read_video_crops(path, Native)
    assert native.shape == (5, 48, 64, 3)
    marker = native[0, :8, :8].reshape(-1, 3).mean(axis=0)
    assert marker[0] > 200 and marker[1] < 60  # red marker still top-left
    assert read_clip(path).frames.shape[1:3] == (340, 256)  # "short256" applies the display matrix


def test_preset_crops_of_each_frame_size(tmp_path):
    path = write_media(tmp_path / "v.mp4", size=(320, 240), seconds=1.4)  # 35 frames: three chunks of 16
    native = read_video_crops(path, Native)
    np.testing.assert_array_equal(read_video_crops(path, AV_BENCHMARK), resize_short_crop(native))
    np.testing.assert_array_equal(read_video_crops(path, AV_BENCHMARK, max_frames=20), resize_short_crop(native[:20]))
    np.testing.assert_array_equal(read_video_crops(path, SYNCHFORMER),
                                  SYNCHFORMER.crop_frames(read_clip(path).frames))


def test_synchformer_crops_need_no_audio_track(tmp_path):
    path = write_media(tmp_path / "silent_film.mp4", acodec=None, seconds=0.4)
    crops = read_video_crops(path, SYNCHFORMER, max_frames=6)
    np.testing.assert_array_equal(crops, SYNCHFORMER.crop_frames(read_video_slots(path, 0, 6)))


def test_audio_at_its_own_rate(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.full_like(t, 0.25)])
    path = write_media(tmp_path / "a.mov", acodec="pcm_s16le", sample_rate=44100, layout="stereo", audio=stereo)
    wave, rate = read_audio(path)
    assert rate == 44100 and wave.dtype == np.float32
    np.testing.assert_allclose(wave, stereo.mean(axis=0), atol=2 / 32767)
    wave16, seconds = load_audio_16k(path)
    assert len(wave16) == 16000 and seconds == pytest.approx(1.0)
    assert len(read_clip(path).audio) == 16000  # the 16-kHz reader (libswresample) of the same track


@pytest.mark.parametrize("preset", [AV_BENCHMARK, SYNCHFORMER], ids=lambda p: p.name)
def test_every_reader_raises_the_same_errors(tmp_path, preset):
    with pytest.raises(MediaNotFoundError, match="not found"):
        read_video_crops(tmp_path / "nope.mp4", preset)
    notes = tmp_path / "notes.mp4"
    notes.write_text("this is not a video\n" * 50)
    for read in (lambda p: read_video_crops(p, preset), read_audio, load_audio_16k):
        with pytest.raises(MediaDecodeError, match="not media"):
            read(notes)
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        read_video_crops(write_media(tmp_path / "audio_only.m4a", video=False), preset)
    video_only = write_media(tmp_path / "video_only.mp4", acodec=None, seconds=0.2)
    for read in (read_audio, load_audio_16k):
        with pytest.raises(NoAudioStreamError, match="no audio stream"):
            read(video_only)


def test_native_frames_skip_corrupt_packets_with_a_warning(tmp_path):
    bad = corrupt_media(tmp_path)
    with pytest.warns(CorruptMediaWarning, match=r"video packet\(s\) skipped"):
        frames = read_video_crops(bad, Native)
    assert grey(frames[:40]) == pytest.approx([level(i) for i in range(40)], abs=2)
