"""Media fuzzing (benchmarks/faults/media_fuzz.py): a 40-file subset covering every family ends, through
`sync-sdk predict`, with a result or a typed error; and one test per bug the full fuzz found."""
import warnings

import numpy as np
import pytest

from benchmarks.faults.crafted import mkv_patch, write_av
from benchmarks.faults.families import FAMILIES
from benchmarks.faults.media_fuzz import classify, make_fuzz_files, run_fuzz
from sync_sdk import errors
from sync_sdk.cli.main import main
from sync_sdk.errors import CorruptMediaWarning, MediaDecodeError, UnsupportedMediaError
from sync_sdk.media import probe, read_audio_samples, read_clip
from sync_sdk.media.audio import AudioDecoder, _Placer
from sync_sdk.media.video import VideoDecoder, check_frame_size

SECONDS = 5.6


@pytest.fixture(scope="module")
def clip():
    """Frames (140, 48, 64, 3) uint8 at 25 fps and a 440-Hz tone (89600,) float32 at 16 kHz."""
    n = int(SECONDS * 25)
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    frames[:] = (np.arange(n) * 7 % 256)[:, None, None, None]
    audio = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n * 640) / 16000)).astype(np.float32)
    return frames, audio


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """The summary of run_fuzz over the first 40 files (4 per family)."""
    cases = make_fuzz_files(tmp_path_factory.mktemp("fuzz"), n=40, seed=0)
    return cases, run_fuzz(cases, timeout_sec=90, progress=False)


def test_every_fuzz_file_ends_with_a_result_or_a_typed_error(fuzz):
    cases, summary = fuzz
    assert summary["files"] == len(cases) == 40
    assert {c.family for c in cases} == set(FAMILIES)
    assert (summary["crashes"], summary["hangs"], summary["untyped"]) == (0, 0, 0), summary["failures"]
    typed = {name for name, cls in vars(errors).items()
             if isinstance(cls, type) and issubclass(cls, errors.SyncSDKError)}
    assert set(summary["outcomes"]) <= {"ok"} | typed
    assert summary["per_family"]["control"] == {"ok": 4}  # the harness itself predicts sound files
    assert "UnsupportedMediaError" in summary["per_family"]["absurd_dimensions"]


def test_the_cli_prints_no_traceback_and_names_the_error(fuzz):
    _, summary = fuzz
    assert not [r["file"] for r in summary["results"] if r["traceback"]]
    errored = [r for r in summary["results"] if r["outcome"] != "ok"]
    assert errored and all(r["detail"].startswith(f"sync-sdk: error: {r['outcome']}: ") for r in errored)


def test_the_generator_is_deterministic(tmp_path):
    a = make_fuzz_files(tmp_path / "a", n=12, seed=3, real_dir=None)
    b = make_fuzz_files(tmp_path / "b", n=12, seed=3, real_dir=None)
    assert [c.note for c in a] == [c.note for c in b]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 12  # the cases and every base
    assert [f for f in files if (tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes()] == []


def test_classify():
    assert classify(0, '{"status": "ok"}', "") == ("ok", "")
    assert classify(2, "", "warn\nsync-sdk: error: ClipTooShortError: short")[0] == "ClipTooShortError"
    assert classify(2, "", "sync-sdk: error: no class")[0] == "untyped_error"
    assert classify(1, "", "Traceback (most recent call last):\n  x\nValueError: y")[0] == "crash"
    assert classify(-9, "", "")[0] == "crash"
    assert classify(0, "not json", "")[0] == "crash"


def test_input_errors_are_named_at_the_cli(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.mp4"), "--model", "synthetic-tiny"]) == 2
    assert "sync-sdk: error: MediaNotFoundError: " in capsys.readouterr().err


# ---------------------------------------------------------------------------- bugs the fuzz found
@pytest.mark.parametrize("width, height", [(16384, 2), (2, 16384), (8192, 8)])
def test_absurd_aspect_ratios_are_refused_before_allocating(tmp_path, clip, width, height):
    """absurd_dimensions: a 16384x2 frame was resized to 256 x 2097152 and 130 of those preallocated
    (195 GiB, MemoryError)."""
    frames = np.ascontiguousarray(np.resize(clip[0][:2], (2, height, width, 3)))
    path = write_av(tmp_path / "wide.nut", frames, clip[1], fmt="nut", vcodec="rawvideo", acodec="pcm_s16le")
    for args in ((probe(path),), (None, "native")):
        with pytest.raises(UnsupportedMediaError, match=f"{width}x{height}"):
            VideoDecoder(path, *args)


def test_header_declared_sizes_are_refused(tmp_path, clip):
    """absurd_dimensions: a Matroska header declaring 65535x2 over 320x256 ffv1 frames."""
    path = write_av(tmp_path / "decl.mkv", np.resize(clip[0], (10, 256, 320, 3)), clip[1], fmt="matroska",
                    vcodec="ffv1", acodec="flac")
    data = bytearray(path.read_bytes())
    assert mkv_patch(data, b"\xb0\x82", ">H", 65535) and mkv_patch(data, b"\xba\x82", ">H", 2)
    path.write_bytes(data)
    with pytest.raises(UnsupportedMediaError, match="65535x2"):
        read_clip(path, 0.0, 1.0)


def test_frame_size_limits():
    check_frame_size("f", 3840, 2160)
    check_frame_size("f", 4096, 256)
    check_frame_size("f", 0, 0)  # not known yet
    for w, h in ((4097, 256), (256, 4097), (16384, 16384)):
        with pytest.raises(UnsupportedMediaError):
            check_frame_size("f", w, h)


def test_audio_gaps_are_filled_only_up_to_the_end_asked():
    """absurd_timestamps: audio at +1e6 s filled the hole before it with zeros(16e9) (60 GiB)."""
    placer = _Placer(0, 1000)
    pieces = list(placer.place(np.ones(10, np.float32), 10 ** 12))
    assert sum(len(p) for p in pieces) == 1000 and not any(p.any() for p in pieces) and placer.done
    placer = _Placer(0, None)  # to the end: the hole comes in bounded pieces
    pieces = placer.place(np.ones(10, np.float32), 10 ** 12)
    assert len(next(pieces)) <= 1 << 20


def test_audio_after_a_huge_timestamp_jump_decodes_as_silence(tmp_path, clip):
    path = write_av(tmp_path / "late.mkv", clip[0], clip[1], fmt="matroska", vcodec="mpeg4", acodec="aac",
                    audio_time=lambda i, t: t + 1e6)
    audio = read_audio_samples(path, 0, 16000)
    assert audio.shape == (16000,) and not audio.any()


def _pcm_mkv(tmp_path, clip, element: bytes, fmt: str, value):
    path = write_av(tmp_path / "pcm.mkv", clip[0], clip[1], fmt="matroska", vcodec="mpeg4", acodec="pcm_s16le")
    data = bytearray(path.read_bytes())
    assert mkv_patch(data, element, fmt, value)
    path.write_bytes(data)
    return path


def test_audio_the_resampler_cannot_take_is_a_decode_error(tmp_path, clip):
    """absurd_audio_format: 255 channels made av.AudioResampler raise av.error.ArgumentError."""
    path = _pcm_mkv(tmp_path, clip, b"\x9f\x81", ">B", 255)
    with pytest.raises(MediaDecodeError, match="255 channels"):
        read_audio_samples(path, 0, 16000)


@pytest.mark.parametrize("rate", [1.0, 1e9])
def test_absurd_sample_rates_are_refused(tmp_path, clip, rate):
    """absurd_audio_format: 1 Hz resampled each 1024-sample packet to 16M samples; 1 GHz took seconds of
    resampler work and gave silence."""
    path = _pcm_mkv(tmp_path, clip, b"\xb5\x88", ">d", rate)
    with pytest.raises(UnsupportedMediaError, match=f"{int(rate)} Hz"):
        AudioDecoder(path)


def test_streams_without_decodable_data_are_decode_errors(tmp_path, clip):
    """zero_length_stream / absurd_audio_format: a stream with no packets, or whose every packet the
    decoder rejects, was reported as a window running past the end of the file."""
    no_video = write_av(tmp_path / "nv.mkv", clip[0][:0], clip[1], fmt="matroska", vcodec="mpeg4", acodec="aac")
    with pytest.raises(MediaDecodeError, match="video stream gave nothing to decode .no packet"):
        read_clip(no_video, 0.0, 1.0)
    zero_rate = _pcm_mkv(tmp_path, clip, b"\xb5\x88", ">d", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptMediaWarning)
        with pytest.raises(MediaDecodeError, match="audio stream gave nothing.*the decoder rejected them"):
            read_audio_samples(zero_rate, 0, 16000)
