"""SegmentCache: per-segment encoder features, computed once, kept in a bounded LRU ring.

A key says what was really encoded: (source id, "audio" | "video", first sample / first frame index of
the segment in that source's coordinates). Audio keys use the sample offset actually read, so a shifted
(offset) window never reuses features of unshifted audio. Features are whatever the backend returned
(NumPy on CPU, device arrays on GPU backends), one (tokens, dim) array per segment.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Sequence

from sync_sdk.runtime.arrays import array_module

KINDS = ("audio", "video")


def stack(items: list):
    """Stack (tokens, dim) arrays with their own array library."""
    return array_module(items[0]).stack(items)


class SegmentCache:
    """Bounded ring of segment features; `capacity` entries per kind (0 disables caching).

    `fetch(kind, keys, encode)` returns the (n, tokens, dim) features for `keys`, calling
    `encode(missing_positions)` once for the keys not held (it must return their features in that order).
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._rings: dict[str, OrderedDict] = {k: OrderedDict() for k in KINDS}
        self.reset_stats()

    def reset_stats(self) -> None:
        self._counts = {"audio": 0, "video": 0, "hits": 0, "misses": 0, "evictions": 0}

    def uncached(self) -> "SegmentCache":
        """A cache that holds nothing (every segment is encoded) but counts into this one's counters."""
        view = SegmentCache(0)
        view._counts = self._counts
        return view

    def clear(self) -> None:
        """Drop every feature and zero the counters."""
        for ring in self._rings.values():
            ring.clear()
        self.reset_stats()

    def fetch(self, kind: str, keys: Sequence[Hashable], encode: Callable[[list[int]], object]):
        """Features (n, tokens, dim) for `keys`; encodes only the keys not already held."""
        if kind not in self._rings:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        ring = self._rings[kind]
        found: dict[Hashable, object] = {}
        missing: list[int] = []
        first_pos: dict[Hashable, int] = {}
        for pos, key in enumerate(keys):
            if key in found or key in first_pos:
                self._counts["hits"] += 1
                continue
            if key in ring:
                ring.move_to_end(key)
                found[key] = ring[key]
                self._counts["hits"] += 1
            else:
                first_pos[key] = pos
                missing.append(pos)
                self._counts["misses"] += 1
        if missing:
            feats = encode(missing)
            if len(feats) != len(missing):
                raise RuntimeError(f"encode returned {len(feats)} features for {len(missing)} segments")
            self._counts[kind] += len(missing)
            for i, pos in enumerate(missing):
                found[keys[pos]] = feats[i].copy()
            self._store(ring, {keys[p]: found[keys[p]] for p in missing})
        return stack([found[k] for k in keys])

    def _store(self, ring: OrderedDict, new: dict) -> None:
        if self.capacity == 0:
            return
        for key, feat in new.items():
            ring[key] = feat
            ring.move_to_end(key)
        while len(ring) > self.capacity:
            ring.popitem(last=False)
            self._counts["evictions"] += 1

    def __len__(self) -> int:
        return sum(len(r) for r in self._rings.values())

    def stats(self) -> dict:
        """Counters since the last clear(): segments encoded per kind, hits, misses, evictions, size."""
        c = self._counts
        return {
            "audio_segments_encoded": c["audio"],
            "visual_segments_encoded": c["video"],
            "hits": c["hits"],
            "misses": c["misses"],
            "evictions": c["evictions"],
            "size": len(self),
            "capacity": self.capacity,
        }
