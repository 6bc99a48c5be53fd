"""SegmentCache: encodes each key once, LRU-bounded, counters exact; the window grid's integer arithmetic."""
import numpy as np
import pytest

from sync_sdk.geometry import hop_segments, n_windows, window_start_sec
from sync_sdk.runtime.cache import SegmentCache


class Encoder:
    """Fake encoder: feature of key k is a (2, 3) array filled with k; records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, keys):
        def encode(positions):
            batch = [keys[p] for p in positions]
            self.calls.append(batch)
            return np.stack([np.full((2, 3), k[-1], np.float32) for k in batch])
        return encode


def fetch(cache, enc, kind, keys):
    return cache.fetch(kind, keys, enc(keys))


def test_encodes_missing_keys_once_and_counts():
    cache, enc = SegmentCache(capacity=8), Encoder()
    keys = [("s", k) for k in range(4)]
    out = fetch(cache, enc, "audio", keys)
    assert out.shape == (4, 2, 3) and out[:, 0, 0].tolist() == [0, 1, 2, 3]
    out = fetch(cache, enc, "audio", [("s", k) for k in range(2, 6)])
    assert out[:, 0, 0].tolist() == [2, 3, 4, 5]
    assert enc.calls == [keys, [("s", 4), ("s", 5)]]
    st = cache.stats()
    assert (st["audio_segments_encoded"], st["visual_segments_encoded"]) == (6, 0)
    assert (st["hits"], st["misses"]) == (2, 6)


def test_kinds_are_separate():
    cache, enc = SegmentCache(), Encoder()
    fetch(cache, enc, "audio", [("s", 1)])
    fetch(cache, enc, "video", [("s", 1)])
    st = cache.stats()
    assert (st["audio_segments_encoded"], st["visual_segments_encoded"], st["hits"]) == (1, 1, 0)
    with pytest.raises(ValueError):
        fetch(cache, enc, "text", [("s", 1)])


def test_duplicate_keys_in_one_fetch_encode_once():
    cache, enc = SegmentCache(), Encoder()
    out = fetch(cache, enc, "video", [("s", 7), ("s", 7), ("s", 8)])
    assert out[:, 0, 0].tolist() == [7, 7, 8]
    assert enc.calls == [[("s", 7), ("s", 8)]]


def test_lru_eviction_bounds_the_ring():
    cache, enc = SegmentCache(capacity=3), Encoder()
    fetch(cache, enc, "audio", [("s", k) for k in range(3)])
    fetch(cache, enc, "audio", [("s", 0)])          # 0 is now most recent
    fetch(cache, enc, "audio", [("s", 3)])          # evicts 1
    assert len(cache) == 3 and cache.stats()["evictions"] == 1
    fetch(cache, enc, "audio", [("s", 0), ("s", 1)])
    assert enc.calls[-1] == [("s", 1)]


def test_capacity_zero_disables_caching():
    cache, enc = SegmentCache(capacity=0), Encoder()
    for _ in range(3):
        fetch(cache, enc, "video", [("s", 1), ("s", 2)])
    assert cache.stats()["visual_segments_encoded"] == 6 and len(cache) == 0


def test_uncached_view_counts_into_the_parent():
    cache, enc = SegmentCache(), Encoder()
    view = cache.uncached()
    fetch(view, enc, "video", [("s", 1), ("s", 2)])
    fetch(view, enc, "video", [("s", 1)])
    assert cache.stats()["visual_segments_encoded"] == 3 and len(cache) == len(view) == 0


def test_stored_features_do_not_alias_the_encoder_batch():
    cache = SegmentCache()
    batch = np.zeros((2, 2, 3), np.float32)
    cache.fetch("audio", [("s", 0), ("s", 1)], lambda pos: batch)
    batch[:] = 5
    assert cache.fetch("audio", [("s", 0)], lambda pos: batch)[0].max() == 0


def test_clear_resets_features_and_counters():
    cache, enc = SegmentCache(), Encoder()
    fetch(cache, enc, "audio", [("s", 0)])
    cache.clear()
    assert len(cache) == 0 and cache.stats()["audio_segments_encoded"] == 0


def test_window_start_matches_official_int_arithmetic():
    # official: v_start = int(start_sec * 25), a_start = int((start_sec + 0.0) * 16000)
    naive_misses = [j for j in range(2000) if int(j * 0.32 * 25) != 8 * j]
    assert 29 in naive_misses                       # why the nudge exists
    for j in range(20000):
        s = window_start_sec(j)
        assert (int(s * 25), int((s + 0.0) * 16000)) == (8 * j, 5120 * j)
        assert abs(s - 0.32 * j) < 1e-9


def test_hop_and_window_count():
    assert hop_segments(0.32) == 1 and hop_segments(0.96) == 3 and hop_segments(4.48) == 14
    with pytest.raises(ValueError):
        hop_segments(0.5)
    with pytest.raises(ValueError):
        hop_segments(0.0)
    # 10-s clip: 250 frames / 160000 samples -> windows at frames 0, 8, ..., 120 (j = 0..15)
    assert n_windows(250, 160000) == 16
    assert n_windows(124, 160000) == 0 and n_windows(125, 80000) == 1
