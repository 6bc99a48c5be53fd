"""Decoding (containers, codecs, rates, sizes, rotation, VFR, seeking, streaming), arrays in, and bad input.

Every media file is tiny and generated here with PyAV. Frame i of a generated video is grey level
level(i) with a red top-left marker; `click_sec` puts a white frame and an audio burst at that time.
"""
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sync_sdk.errors import (
    ClipTooShortError,
    CorruptMediaWarning,
    InvalidArrayError,
    MediaDecodeError,
    MediaNotFoundError,
    NoAudioStreamError,
    NoVideoStreamError,
    SilentAudioWarning,
    WindowOutOfRangeError,
)
from sync_sdk.inputs.window import audio_segments, prepare_inputs, video_segments
from sync_sdk.media import AVClip, clip_from_arrays, iter_chunks, iter_clips, probe, read_clip

QUIET = {"libx265": {"x265-params": "log-level=none"}, "libx264": {"qp": "0", "preset": "ultrafast"}}


def level(i: int) -> int:
    """Grey level of generated frame i (neighbours differ by 9 levels)."""
    return 20 + (9 * i) % 216


def _pcm_for(fmt: str, chunk: np.ndarray) -> np.ndarray:
    """float (C, n) in [-1, 1] -> the array av.AudioFrame.from_ndarray expects for `fmt`."""
    kind = fmt.rstrip("p")
    scale = {"s16": (np.int16, 32767), "s32": (np.int32, 2 ** 31 - 1), "flt": (np.float32, 1), "dbl": (np.float64, 1)}
    dtype, k = scale[kind]
    arr = (np.clip(chunk, -1, 1) * k).astype(dtype)
    return arr if fmt.endswith("p") else arr.T.reshape(1, -1)


def write_media(path, *, vcodec="libx264", acodec="aac", size=(64, 48), fps=25, seconds=1.0, sample_rate=16000,
                layout="mono", rotation=0, frame_times=None, audio=None, click_sec=None, video=True,
                pix_fmt="yuv420p"):
    """Write a small test file; audio: (C, N) float array, default a 440-Hz sine (0.5) on channel 0."""
    if vcodec not in av.codecs_available or (acodec and acodec not in av.codecs_available):
        pytest.skip(f"this PyAV wheel cannot encode {vcodec}/{acodec}")
    times = frame_times if frame_times is not None else [i / fps for i in range(int(round(seconds * fps)))]
    with av.open(str(path), "w") as c:
        if video:
            vs = c.add_stream(vcodec, rate=None if frame_times is not None else fps, options=QUIET.get(vcodec, {}))
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], pix_fmt
            if frame_times is not None:
                vs.time_base = vs.codec_context.time_base = Fraction(1, 1000)
            if rotation:
                vs.set_display_rotation(rotation)
        if acodec:
            aus = c.add_stream(acodec, rate=sample_rate, layout=layout)
        for i, t in enumerate(times if video else []):
            img = np.full((size[1], size[0], 3), level(i), np.uint8)
            img[: size[1] // 4, : size[0] // 4] = (255, 0, 0)
            if click_sec is not None and abs(t - click_sec) < 1e-6:
                img[:] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if frame_times is not None:
                frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            c.mux(vs.encode(frame))
        if video:
            c.mux(vs.encode())
        if acodec:
            n = int(seconds * sample_rate)
            if audio is None:
                sig = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate)
                if click_sec is not None:
                    sig = np.zeros(n)
                    k = int(click_sec * sample_rate)
                    sig[k:k + sample_rate // 100] = 0.9
                channels = av.AudioLayout(layout).nb_channels
                audio = np.stack([sig] + [np.zeros(n)] * (channels - 1))
            fmt, step = aus.codec_context.format.name, aus.codec_context.frame_size or 1024
            for k in range(0, n, step):
                frame = av.AudioFrame.from_ndarray(_pcm_for(fmt, audio[:, k:k + step]), format=fmt, layout=layout)
                frame.sample_rate, frame.pts = sample_rate, k
                c.mux(aus.encode(frame))
            c.mux(aus.encode())
    return path


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


def expected_slots(times, n_out):
    """Input frame shown in each 25-fps slot: the last frame whose time rounds (half up) to <= slot."""
    slots = [int(np.floor(t * 25 + 0.5)) for t in times]
    return [max(i for i, s in enumerate(slots) if s <= n) if n >= slots[0] else 0 for n in range(n_out)]


def grey(frames):
    """Mean green level of each frame (the marker has green 0, the grey fill dominates)."""
    return frames[:, frames.shape[1] // 2:, :, 1].mean(axis=(1, 2))


# ------------------------------------------------------------------ containers and codecs
FORMATS = [
    ("mp4", dict(vcodec="libx264", acodec="aac")),
    ("mkv", dict(vcodec="libx265", acodec="libmp3lame", sample_rate=44100, layout="stereo")),
    ("webm", dict(vcodec="libvpx-vp9", acodec="libopus", sample_rate=48000, layout="stereo")),
    ("mov", dict(vcodec="libx264", acodec="pcm_s16le", sample_rate=48000)),
    ("avi", dict(vcodec="mpeg4", acodec="pcm_s16le", sample_rate=44100, layout="stereo", fps=30)),
]


@pytest.mark.parametrize("ext,kw", FORMATS, ids=[f[0] for f in FORMATS])
def test_containers_decode_aligned(media_dir, ext, kw):
    path = write_media(media_dir / f"click.{ext}", seconds=2.0, click_sec=1.0, **kw)
    info = probe(path)
    assert info.has_video and info.has_audio and (info.width, info.height) == (64, 48)
    assert info.sample_rate == kw.get("sample_rate", 16000) and info.fps == kw.get("fps", 25)
    clip = read_clip(path)
    assert clip.frames.shape == (50, 256, 340, 3) and clip.frames.dtype == np.uint8
    assert abs(len(clip.audio) - 32000) <= 1024 and clip.audio.dtype == np.float32
    assert clip.start_sec == 0.0
    flash = int(np.argmax(grey(clip.frames)))
    onset = int(np.argmax(np.abs(clip.audio) > 0.3))
    assert flash == 25  # the white frame at 1.0 s is slot 25
    assert abs(onset - 16000) <= 16, f"audio burst at sample {onset}, video flash at 1.0 s"


def test_stereo_is_the_mean_of_channels(media_dir):
    # left = 0.5 sine, right = silence: the official mono is 0.25 sine (PyAV's own downmix would give 0.354)
    path = write_media(media_dir / "stereo.mov", acodec="pcm_s16le", sample_rate=44100, layout="stereo")
    audio = read_clip(path).audio[1000:15000]
    rms = float(np.sqrt(np.mean(audio ** 2)))
    assert abs(rms - 0.25 / np.sqrt(2)) < 0.002


def test_resampling_keeps_level_and_pitch(media_dir):
    path = write_media(media_dir / "sine48k.mov", acodec="pcm_s16le", sample_rate=48000)
    audio = read_clip(path).audio
    assert abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert int(np.argmax(spectrum)) == 440  # 1 Hz bins
    assert abs(float(np.sqrt(np.mean(audio[1000:15000] ** 2))) - 0.5 / np.sqrt(2)) < 0.002


# ------------------------------------------------------------------ frame rate and timestamps
def test_30fps_frames_picked_like_ffmpeg_fps_filter(media_dir):
    path = write_media(media_dir / "f30.mp4", fps=30, seconds=2.0)
    clip = read_clip(path)
    assert len(clip.frames) == 50
    picks = expected_slots([i / 30 for i in range(60)], 50)  # e.g. slot 3 shows frame 4 (2.5 rounds up)
    assert picks[3] == 4
    np.testing.assert_allclose(grey(clip.frames), [level(i) for i in picks], atol=2)


def test_variable_frame_rate_by_timestamps(media_dir):
    times = [0.0, 0.02, 0.05, 0.07, 0.2, 0.33, 0.34, 0.5, 0.62, 0.9, 0.94, 1.0]
    path = write_media(media_dir / "vfr.mkv", frame_times=times, seconds=1.0)
    clip = read_clip(path)
    picks = expected_slots(times, 25)  # 0.02 s is slot 0.5 -> 1 (half away from zero), 0.05 -> 1 too
    assert picks[:2] == [0, 2]
    np.testing.assert_allclose(grey(clip.frames[:25]), [level(i) for i in picks], atol=2)


# ------------------------------------------------------------------ sizes and rotation
@pytest.mark.parametrize("size,expected", [((1280, 720), (256, 454)), ((48, 64), (340, 256)),
                                           ((65, 49), (256, 338)), ((256, 256), (256, 256))])
def test_shortest_side_256_even_sizes(media_dir, size, expected):
    odd = size[0] % 2 or size[1] % 2  # odd sizes need 4:4:4 in H.264
    path = write_media(media_dir / f"size{size[0]}x{size[1]}.mp4", size=size, seconds=0.2,
                       pix_fmt="yuv444p" if odd else "yuv420p")
    frames = read_clip(path).frames
    assert frames.shape == (5,) + expected + (3,)
    assert abs(float(grey(frames)[0]) - level(0)) <= 3


@pytest.mark.parametrize("rotation,corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_rotation_metadata_is_applied(media_dir, rotation, corner):
    path = write_media(media_dir / f"rot{rotation}.mp4", size=(64, 48), seconds=0.2, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation % 360
    frame = read_clip(path).frames[0]
    assert frame.shape == ((340, 256, 3) if rotation % 180 else (256, 340, 3))
    assert (info.width, info.height) == ((48, 64) if rotation % 180 else (64, 48))
    h, w = frame.shape[:2]
    rows = slice(0, 40) if corner.startswith("top") else slice(h - 40, h)
    cols = slice(0, 40) if corner.endswith("left") else slice(w - 40, w)
    patch = frame[rows, cols].reshape(-1, 3).mean(axis=0)
    assert patch[0] > 200 and patch[1] < 60, f"red marker not in the {corner} corner"


# ------------------------------------------------------------------ seeking and streaming
@pytest.fixture(scope="module")
def long_file(media_dir):
    return write_media(media_dir / "long.mp4", fps=30, seconds=4.0, sample_rate=44100, layout="stereo")


def test_seek_gives_the_same_samples_as_a_full_decode(long_file):
    full = read_clip(long_file)
    part = read_clip(long_file, start_sec=1.5, duration_sec=1.0)  # 37.5 frames -> frame 38 (round)
    assert part.start_sec == 38 / 25 and len(part.frames) == 25 and len(part.audio) == 16000
    assert np.array_equal(part.frames, full.frames[38:63])
    np.testing.assert_allclose(part.audio, full.audio[38 * 640:63 * 640], rtol=0, atol=1e-6)


def test_iter_clips_are_consecutive_pieces_of_the_file(long_file):
    full = read_clip(long_file)
    clips = list(iter_clips(long_file, chunk_sec=0.64, start_sec=0.32))
    on_demand = list(iter_clips(long_file, chunk_sec=0.64, start_sec=0.32, prefetch=0))
    assert all(np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
               for a, b in zip(clips, on_demand, strict=True))
    assert [c.start_sec for c in clips[:3]] == [0.32, 0.96, 1.6]
    assert all(len(c.frames) == 16 and len(c.audio) == 10240 for c in clips[:-1])
    assert np.array_equal(np.concatenate([c.frames for c in clips]), full.frames[8:])
    audio = np.concatenate([c.audio for c in clips])
    assert len(audio) == len(full.audio) - 8 * 640
    # (FFmpeg's AAC decoder output for the stream's last packet depends on where decoding started)
    np.testing.assert_allclose(audio[:-1024], full.audio[8 * 640:-1024], rtol=0, atol=1e-6)
    frames, audio = next(iter_chunks(long_file, 1.0, start_sec=2.0, end_sec=2.52))
    assert frames.shape[0] == 13 and len(audio) == 13 * 640  # end_sec clips the chunk
    assert np.array_equal(frames, full.frames[50:63])


# ------------------------------------------------------------------ arrays in
def test_clip_from_arrays_resamples_like_files():
    frames = np.stack([np.full((48, 64, 3), level(i), np.uint8) for i in range(30)])  # 1 s at 30 fps
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)]).astype(np.float32)  # (C, N)
    clip = clip_from_arrays(frames, 30, stereo, 44100)
    assert clip.frames.shape == (25, 256, 340, 3)
    np.testing.assert_allclose(grey(clip.frames), [level(i) for i in expected_slots([i / 30 for i in range(30)], 25)],
                               atol=1)
    assert abs(len(clip.audio) - 16000) <= 1
    assert abs(float(np.sqrt(np.mean(clip.audio[1000:15000] ** 2))) - 0.25 / np.sqrt(2)) < 0.002
    as_nc = clip_from_arrays(frames, 30, np.ascontiguousarray(stereo.T), 44100)  # (N, C) is accepted too
    as_int = clip_from_arrays(frames, 30, (stereo * 32767).astype(np.int16), 44100)
    np.testing.assert_allclose(as_nc.audio, clip.audio, atol=1e-6)
    np.testing.assert_allclose(as_int.audio, clip.audio, atol=1e-4)
    odd = clip_from_arrays(np.zeros((3, 49, 65, 3), np.uint8), 25, np.zeros(1920, np.float32), 16000)
    assert odd.frames.shape == (3, 256, 338, 3)  # odd sizes are resized and cropped to even sizes


@pytest.mark.parametrize("frames,audio,rate", [
    (np.zeros((0, 48, 64, 3), np.uint8), np.zeros(16000, np.float32), 16000),  # no frames
    (np.zeros((5, 0, 64, 3), np.uint8), np.zeros(16000, np.float32), 16000),  # zero-size frames
    (np.zeros((5, 48, 64, 4), np.uint8), np.zeros(16000, np.float32), 16000),  # RGBA
    (np.zeros((5, 48, 64, 3), np.float32), np.zeros(16000, np.float32), 16000),  # not uint8
    (np.zeros((5, 48, 64, 3), np.uint8), np.zeros(0, np.float32), 16000),  # no audio
    (np.zeros((5, 48, 64, 3), np.uint8), np.zeros((2, 2, 10), np.float32), 16000),  # 3-D audio
    (np.zeros((5, 48, 64, 3), np.uint8), np.zeros(16000, np.float32), 0),  # bad rate
])
def test_bad_arrays_are_rejected(frames, audio, rate):
    with pytest.raises(InvalidArrayError):
        clip_from_arrays(frames, 25, audio, rate)


def test_avclip_validates_its_arrays():
    with pytest.raises(InvalidArrayError):
        AVClip(np.zeros((2, 256, 256, 3), np.float32), np.zeros(1280, np.float32))
    with pytest.raises(InvalidArrayError):
        AVClip(np.zeros((2, 256, 256, 3), np.uint8), np.zeros(1280, np.float32), fps=30)


# ------------------------------------------------------------------ bad files
def test_missing_file(tmp_path):
    for fn in (probe, read_clip, prepare_inputs):
        with pytest.raises(MediaNotFoundError, match="not found") as err:
            fn(tmp_path / "nope.mp4")
        assert isinstance(err.value, FileNotFoundError)


def test_not_media(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaDecodeError, match="not media"):
        read_clip(path)


def test_missing_streams(media_dir):
    audio_only = write_media(media_dir / "audio_only.m4a", video=False)
    video_only = write_media(media_dir / "video_only.mp4", acodec=None)
    assert not probe(audio_only).has_video and not probe(video_only).has_audio
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        read_clip(audio_only)
    with pytest.raises(NoAudioStreamError, match="no audio stream"):
        prepare_inputs(video_only)


@pytest.fixture(scope="module")
def six_sec(media_dir):
    return write_media(media_dir / "six.mp4", seconds=6.0)


def test_windows_outside_the_media(six_sec, media_dir):
    vid, aud = prepare_inputs(six_sec, offset_sec=1.0, start_sec=0.0)  # needs audio up to 6.0 s
    assert vid.shape == (14, 16, 3, 224, 224) and aud.shape == (14, 1, 128, 66)
    with pytest.raises(ClipTooShortError, match="needs at least 6.50 s"):
        prepare_inputs(six_sec, offset_sec=1.5)
    with pytest.raises(WindowOutOfRangeError, match=r"start_sec must lie in \[0.00, 1.00\]"):
        prepare_inputs(six_sec, start_sec=2.0)
    with pytest.raises(WindowOutOfRangeError, match="before the media start"):
        prepare_inputs(six_sec, offset_sec=-1.0, start_sec=0.5)
    with pytest.raises(WindowOutOfRangeError):
        read_clip(six_sec, start_sec=7.0)
    short = write_media(media_dir / "four.mp4", seconds=4.0)
    with pytest.raises(ClipTooShortError, match="needs at least 5.00 s"):
        prepare_inputs(short)


def test_silence_warns(media_dir):
    path = write_media(media_dir / "silent.mp4", seconds=5.2, audio=np.zeros((1, 83200)))
    with pytest.warns(SilentAudioWarning, match="silent"):
        prepare_inputs(path)


def test_corrupt_packets_are_skipped_with_a_warning(media_dir):
    bad = corrupt_media(media_dir)
    with pytest.warns(CorruptMediaWarning, match=r"packet\(s\) skipped") as record:
        clip = read_clip(bad)
    messages = [str(w.message) for w in record]
    assert any("video packet(s) skipped" in m for m in messages)
    assert any("audio" in m and "filled with silence" in m for m in messages)
    assert len(clip.frames) == 100 and abs(len(clip.audio) - 64000) <= 1024  # still aligned, full length
    assert grey(clip.frames[:40]) == pytest.approx([level(i) for i in range(40)], abs=2)


def corrupt_media(folder) -> Path:
    """A 4-s 128x96 file (`write_media`) with the middle tenth of its bytes overwritten by noise (seed 1)."""
    path = write_media(folder / "to_corrupt.mp4", seconds=4.0, size=(128, 96))
    data = bytearray(path.read_bytes())
    lo, hi = int(len(data) * 0.45), int(len(data) * 0.55)
    data[lo:hi] = np.random.default_rng(1).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    bad = folder / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    return bad


def test_grid_segments_of_a_generated_clip(six_sec):
    clip = read_clip(six_sec)
    vid, aud = prepare_inputs(clip, offset_sec=-0.32, start_sec=0.64)  # window 2, audio 0.32 s earlier
    assert np.array_equal(video_segments(clip, range(2, 16)), vid)
    assert np.array_equal(audio_segments(clip, range(2, 16), offset_sec=-0.32), aud)
    with pytest.raises(WindowOutOfRangeError):
        audio_segments(clip, [0], offset_sec=-0.32)  # would start before the clip
