"""Peak memory of the CLI with the bundled model (issue #27; benchmarks/faults/memory.py has the figures):
a scan's peak RSS does not grow with the file's length, and predict and scan stay within the target.

Each figure is a fresh `sync-sdk` process (max resident set size). The scans use a hop of 9.92 s (31
grid steps, windows that do not overlap): the whole file is decoded as in any scan while the encoders
see under half of its segments, which keeps the 8-min scan near a minute on two cores.
"""
import pytest

from benchmarks.faults.memory import TARGET_MB, cli_peak_mb, write_test_media
from sync_sdk.synthetic import generate_clip, write_clip

MODEL = ["--model", "synthetic-tiny"]
SHORT_SEC, LONG_SEC = 60.0, 480.0
HOP_SEC = 9.92
MAX_GROWTH = 1.15  # long scan's peak / short scan's peak


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("memory")


def test_predict_stays_within_the_target(work):
    clip = write_clip(generate_clip(0, offset_sec=0.6, duration_sec=5.2), work / "clip.mp4")
    assert cli_peak_mb(["predict", str(clip), *MODEL], work) < TARGET_MB  # the model's three shift views


def test_scan_memory_does_not_grow_with_the_files_length(work):
    peaks = {}
    for name, seconds in (("short", SHORT_SEC), ("long", LONG_SEC)):
        path = write_test_media(work / f"{name}.mkv", seconds)
        peaks[name] = cli_peak_mb(["scan", str(path), *MODEL, "--hop", str(HOP_SEC), "--quiet"], work)
    assert peaks["long"] < TARGET_MB
    assert peaks["long"] / peaks["short"] < MAX_GROWTH, peaks
