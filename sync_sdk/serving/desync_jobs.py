"""DeSync over directories: every video/audio pair, one JSON line per clip, resumable.

The score itself is analysis/desync.py; this job pairs the files, batches the clips through it, records
each clip (scored, dropped or failed) as it finishes and sums up: the mean DeSync over the clips scored,
as av-benchmark reports it.

Pairing ("clean", the default): an audio file pairs with the video whose stem is the audio stem after
av-benchmark's `clean_sample_name` (av_bench/utils.py), which takes the video id out of generated-audio
names of three fixed lengths (`clean_sample_name` below) and leaves other names as they are; several
audios may pair with one video (samples "-0", "-1", ...), each is a clip named by its audio stem.
"exact": audio stem = video stem (av-benchmark's evaluate() without clean_sample_names).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from sync_sdk.analysis.desync import check_fill_frames, desync_batch
from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError
from sync_sdk.inputs.layouts import get_layout
from sync_sdk.serving.jsonl import open_output, read_records

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac", ".opus")
PAIRINGS = ("clean", "exact")
# av-benchmark's clean_sample_name: name length -> the slice holding the video id, for names like
# "000000014_zxpo56cpUBU_000007-0", "zxpo56cpUBU_000007-0" and "Y---g-f_I2yQ_000001_0"
_CLEAN_SLICES = {30: slice(10, 28), 20: slice(0, 18), 21: slice(1, 19)}


def clean_sample_name(name: str) -> str:
    """The video id av-benchmark reads from an audio stem: characters 10-27 of a 30-character name, 0-17
    of a 20-character one, 1-18 of a 21-character one; any other name as it is."""
    return name[_CLEAN_SLICES.get(len(name), slice(None))]


def pair_files(videos_dir, audios_dir, pairing: str = "clean"
               ) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """([(audio stem, video, audio)] sorted by audio stem, video stems no audio pairs with, audio stems
    without a video). pairing: "clean" (av-benchmark's name cleaning of audio stems) or "exact"."""
    if pairing not in PAIRINGS:
        raise InputError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")

    def index(d, exts):
        d = Path(d)
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
        return {p.stem: p for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in exts}
    videos, audios = index(videos_dir, VIDEO_EXTS), index(audios_dir, AUDIO_EXTS + VIDEO_EXTS)
    key = {a: clean_sample_name(a) if pairing == "clean" else a for a in audios}
    pairs = [(a, videos[key[a]], audios[a]) for a in sorted(audios) if key[a] in videos]
    used = {key[a] for a, _, _ in pairs}
    return pairs, sorted(videos.keys() - used), sorted(a for a in audios if key[a] not in videos)


def summarise(records: Sequence[dict]) -> dict:
    """Mean DeSync over the clips scored ok (av-benchmark's number: dropped and failed clips are left
    out), and the counts."""
    ok = [r["result"] for r in records if r.get("status") == "ok"]
    return {"desync": float(np.mean([r["desync"] for r in ok])) if ok else float("nan"),
            "n_clips": len(ok), "n_dropped": sum(r.get("status") == "dropped" for r in records),
            "n_failed": sum(r.get("status") == "error" for r in records),
            "n_windows": int(sum(len(r["offsets"]) for r in ok))}


def read_desync_records(path) -> dict[str, dict]:
    """The last record per clip name of a DeSync JSONL file (unparseable lines are ignored)."""
    return {rec["name"]: rec for rec in read_records(path) if "name" in rec}


def desync_dir(engine: SyncEngine, videos_dir, audios_dir, out_path, duration_sec: float | None = None,
               protocol: str = "first_last", layout: str = "av-benchmark", batch_clips: int = 8,
               resume: bool = False, progress: bool = False, fill_frames: int = 0, pairing: str = "clean",
               refine: bool = False) -> dict:
    """DeSync of every video/audio pair of two directories (`pairing`: module docstring).

    One JSON line per clip is appended to `out_path` as its batch finishes: {"name" (the audio stem),
    "video", "audio", "status": "ok", "settings", "result": DesyncClip.to_dict()}; {..., "status":
    "dropped", "settings", "reason"} for a clip av-benchmark drops (video or audio shorter than the
    duration; fill_frames: see analysis.desync.load_pair); {..., "status": "error", "error", "message"}
    for one that cannot be read; the others go on. resume: clips with an "ok" or "dropped" line computed
    with the same settings are not recomputed, failed ones are tried again. Returns the summary: mean
    DeSync over the ok clips of this directory pair, counts, settings, the dropped and failed clips and
    the unpaired stems."""
    out_path = Path(out_path)
    settings = {"protocol": protocol, "layout": get_layout(layout).name, "duration_sec": duration_sec,
                "fill_frames": check_fill_frames(fill_frames), "pairing": pairing, "refine": refine,
                "model_id": engine.model_id}
    pairs, video_only, audio_only = pair_files(videos_dir, audios_dir, pairing)
    done = {k: r for k, r in read_desync_records(out_path).items()
            if r.get("status") in ("ok", "dropped")} if resume else {}
    other = sorted(k for k, r in done.items() if r.get("settings") != settings)
    if other:
        raise InputError(f"{out_path} holds results for {other[:3]} computed with other settings "
                         f"({done[other[0]].get('settings')}, now {settings}); write to another file")
    todo = [(s, v, a) for s, v, a in pairs if s not in done]
    paths = {s: (v, a) for s, v, a in pairs}
    records = dict(done)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_output(out_path, resume) as out, \
            tqdm(total=len(todo), desc="sync-sdk desync", unit="clip", disable=not progress) as bar:
        for clip in desync_batch(engine.encoder, todo, duration_sec, protocol, layout, batch_clips, fill_frames, refine):
            v, a = paths[clip.name]
            rec = {"name": clip.name, "video": str(v), "audio": str(a)}
            if clip.dropped is not None:
                rec.update(status="dropped", settings=settings, reason=clip.dropped)
            elif clip.error is not None:
                err, _, msg = clip.error.partition(": ")
                rec.update(status="error", error=err, message=msg)
            else:
                rec.update(status="ok", settings=settings, result=clip.to_dict())
            out.write(rec)
            records[clip.name] = rec
            bar.update(1)
    summary = summarise([records[s] for s, _, _ in pairs if s in records])
    summary.update(settings=settings, video_only=video_only, audio_only=audio_only,
                   dropped=[s for s, _, _ in pairs if records.get(s, {}).get("status") == "dropped"],
                   failed=[s for s, _, _ in pairs if records.get(s, {}).get("status") == "error"])
    cut = sorted(set(audio_only) & set(video_only)) if pairing == "clean" else []
    if cut:
        summary["hint"] = (f"{len(cut)} audio stems equal a video stem but av-benchmark's name cleaning cuts them "
                           f"({', '.join(cut[:3])}); pairing='exact' (--pairing exact) pairs them")
    return summary
