"""DeSync over directories: every video/audio pair (paired by file stem), one JSON line per clip, resumable.

The score itself is analysis/desync.py; this job pairs the files, batches the clips through it, records
each clip (or its failure) as it finishes and sums up: the mean DeSync over the clips scored, as
av-benchmark reports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from sync_sdk.analysis.desync import desync_batch
from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError
from sync_sdk.inputs.presets import get_preset
from sync_sdk.serving.jsonl import open_output, read_records

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac", ".opus")


def pair_by_stem(videos_dir, audios_dir) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """([(stem, video, audio)] sorted by stem, stems with video only, stems with audio only)."""
    def index(d, exts):
        d = Path(d)
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
        return {p.stem: p for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in exts}
    videos, audios = index(videos_dir, VIDEO_EXTS), index(audios_dir, AUDIO_EXTS + VIDEO_EXTS)
    pairs = [(s, videos[s], audios[s]) for s in sorted(videos.keys() & audios.keys())]
    return pairs, sorted(videos.keys() - audios.keys()), sorted(audios.keys() - videos.keys())


def summarise(records: Sequence[dict]) -> dict:
    """Mean DeSync over the clips scored ok (av-benchmark's number), and the counts."""
    ok = [r["result"] for r in records if r.get("status") == "ok"]
    return {"desync": float(np.mean([r["desync"] for r in ok])) if ok else float("nan"),
            "n_clips": len(ok), "n_failed": sum(r.get("status") != "ok" for r in records),
            "n_windows": int(sum(len(r["offsets"]) for r in ok))}


def read_desync_records(path) -> dict[str, dict]:
    """The last record per clip name of a DeSync JSONL file (unparseable lines are ignored)."""
    return {rec["name"]: rec for rec in read_records(path) if "name" in rec}


def desync_dir(engine: SyncEngine, videos_dir, audios_dir, out_path, duration_sec: float | None = None,
               protocol: str = "first_last", preset: str = "av-benchmark", batch_clips: int = 8,
               resume: bool = False, progress: bool = False) -> dict:
    """DeSync of every video/audio pair (paired by file stem) of two directories.

    One JSON line per clip is appended to `out_path` as its batch finishes: {"name", "video", "audio",
    "status": "ok", "settings", "result": DesyncClip.to_dict()} or {..., "status": "error", "error",
    "message"}; a bad clip is recorded and the others go on. resume: clips with an "ok" line (computed
    with the same settings) are not recomputed, failed ones are tried again. Returns the summary:
    mean DeSync over the ok clips of this directory pair, counts, settings, unpaired stems."""
    out_path = Path(out_path)
    settings = {"protocol": protocol, "preset": get_preset(preset).name, "duration_sec": duration_sec,
                "model_id": engine.model_id}
    pairs, video_only, audio_only = pair_by_stem(videos_dir, audios_dir)
    done = {k: r for k, r in read_desync_records(out_path).items() if r.get("status") == "ok"} if resume else {}
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
        for clip in desync_batch(engine.encoder, todo, duration_sec, protocol, preset, batch_clips):
            v, a = paths[clip.name]
            rec = {"name": clip.name, "video": str(v), "audio": str(a)}
            if clip.error is None:
                rec.update(status="ok", settings=settings, result=clip.to_dict())
            else:
                err, _, msg = clip.error.partition(": ")
                rec.update(status="error", error=err, message=msg)
            out.write(rec)
            records[clip.name] = rec
            bar.update(1)
    summary = summarise([records[s] for s, _, _ in pairs if s in records])
    summary.update(settings=settings, video_only=video_only, audio_only=audio_only,
                   failed=[s for s, _, _ in pairs if records.get(s, {}).get("status") == "error"])
    return summary
