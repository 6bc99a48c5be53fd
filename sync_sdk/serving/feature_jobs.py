"""Visual features of many clips: a folder or a file list -> feature shards and an index, resumable.

    summary = extract_features(engine, list_clips(folder="videos/"), "feats/", layout="mmaudio")
    feats = load_features("feats/")        # {clip name: float32 (S*8, D)}

out_dir/
  index.jsonl                   one line per clip (serving/jsonl.py: appended whole, fsynced):
                                {"name", "file", "status": "ok", "shard", "shape", "settings"} or
                                {"name", "file", "status": "error", "error", "message", "settings"}
  features-00000.safetensors    clip name -> float32 (S*8, D) (engine.visual_features), `shard_clips`
  (or .npz)                     clips a shard; NumPy .npz: one NAME.npy member per clip

A clip's name is its file's stem (two files with one stem are refused before any work). A shard is
written whole (temporary file, fsync, rename) before the index lines of its clips, so a killed run
leaves complete shards only and at most one shard of clips without a line. A resumed run (resume=True)
skips the clips with an "ok" line computed with the same settings, runs the others (failed ones again),
and deletes the shards no "ok" line names (those a kill left between shard and index). A clip that fails
is recorded and the run goes on.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError
from sync_sdk.inputs.layouts import get_layout
from sync_sdk.serving.batch import read_file_list
from sync_sdk.serving.desync_jobs import VIDEO_EXTS
from sync_sdk.serving.jsonl import JsonlWriter, compact, fsync_dir, read_records

FORMATS = ("safetensors", "npz")
INDEX = "index.jsonl"
_SHARD = re.compile(r"features-(\d{5,})\.(safetensors|npz)")


def list_clips(folder: str | Path | None = None, list_file: str | Path | None = None) -> list[tuple[str, str]]:
    """[(name, path)] of the videos (VIDEO_EXTS) in `folder` (not recursive), or of the paths in `list_file`
    (one a line, relative to its folder; "-" reads stdin; serving.batch.read_file_list); name = file stem.
    Raises InputError: neither or both given, a missing folder, two files with one stem."""
    if (folder is None) == (list_file is None):
        raise InputError("give a folder of videos or a file list, one of them")
    if folder is not None:
        d = Path(folder)
        if not d.is_dir():
            raise InputError(f"{d}: not a folder; a folder of videos is expected")
        paths = [str(p) for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in VIDEO_EXTS]
    else:
        paths = read_file_list(list_file)
    clips: dict[str, str] = {}
    for p in paths:
        name = Path(p).stem
        if name in clips and os.path.abspath(clips[name]) != os.path.abspath(p):
            raise InputError(f"two files share the clip name {name!r} ({clips[name]}, {p}); the features are "
                             f"stored by file stem, so rename one")
        clips.setdefault(name, p)
    return list(clips.items())


def extract_features(engine: SyncEngine, clips: Sequence[tuple[str, str]], out_dir: str | Path,
                     layout: str = "av-benchmark", duration_sec: float | None = None, fmt: str = "safetensors",
                     shard_clips: int = 64, resume: bool = False, overwrite: bool = False,
                     progress: bool = False) -> dict:
    """engine.visual_features of each (name, path) clip into shards of `out_dir` (module docstring).

    resume: keep what `out_dir` holds and run only the clips without an "ok" line; overwrite: delete the
    index and shards there first; neither: `out_dir` must hold no index lines. Returns the summary
    {"total", "ok", "failed", "skipped", "shards", "failures", "settings", "out_dir"}."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {fmt!r}")
    if isinstance(shard_clips, bool) or not isinstance(shard_clips, int) or shard_clips < 1:
        raise InputError(f"shard_clips must be a positive number of clips, got {shard_clips!r}")
    out = _prepare_dir(Path(out_dir), resume, overwrite)
    settings = {"layout": get_layout(layout).name, "duration_sec": duration_sec, "model_id": engine.model_id}
    done = _resume_state(out, settings) if resume else {}
    todo = [(n, p) for n, p in clips if n not in done]
    summary = {"total": len(clips), "ok": 0, "failed": 0, "skipped": len(clips) - len(todo), "shards": [],
               "failures": [], "settings": settings, "out_dir": str(out)}
    shard = _ShardBuffer(out, fmt, _next_shard(out))
    try:
        with JsonlWriter(out / INDEX) as index, \
                tqdm(todo, desc="sync-sdk visual-features", unit="clip", disable=not progress) as bar:
            for name, path in bar:
                try:
                    feats = engine.visual_features(path, layout=layout, duration_sec=duration_sec)
                except Exception as e:  # record any failure and go on with the next clip
                    rec = {"name": name, "file": str(path), "status": "error", "error": type(e).__name__,
                           "message": str(e), "settings": settings}
                    index.write(rec)
                    summary["failed"] += 1
                    summary["failures"].append({k: rec[k] for k in ("name", "file", "error", "message")})
                    continue
                shard.add(name, {"name": name, "file": str(path), "status": "ok", "shape": list(feats.shape),
                                 "settings": settings}, feats)
                summary["ok"] += 1
                if len(shard) >= shard_clips:
                    summary["shards"].append(shard.flush(index))
                bar.set_postfix(ok=summary["ok"], failed=summary["failed"])
            if len(shard):
                summary["shards"].append(shard.flush(index))
    finally:  # a retried clip's new line replaces its old one
        compact(out / INDEX, _name)
    return summary


def load_features(out_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{name: float32 (S*8, D)} of the "ok" clips of an extract_features folder (only `names` if given)."""
    out = Path(out_dir)
    last = {r["name"]: r for r in read_records(out / INDEX) if _name(r)}
    recs = {n: r for n, r in last.items() if r.get("status") == "ok"}
    wanted = list(recs) if names is None else list(names)
    missing = [n for n in wanted if n not in recs]
    if missing:
        raise InputError(f"{out}: no features for {missing[:3]} ({len(missing)} clip(s)); "
                         f"{len(recs)} clips have features there")
    by_shard: dict[str, list[str]] = {}
    for n in wanted:
        by_shard.setdefault(recs[n]["shard"], []).append(n)
    feats = {}
    for shard, keys in by_shard.items():
        feats.update(_read_shard(out / shard, keys))
    return {n: feats[n] for n in wanted}


class _ShardBuffer:
    """Features waiting for their shard; `flush` writes the shard, then its clips' index lines."""

    def __init__(self, out: Path, fmt: str, number: int) -> None:
        self.out, self.fmt, self.number = out, fmt, number
        self.arrays: dict[str, np.ndarray] = {}
        self.records: list[dict] = []

    def __len__(self) -> int:
        return len(self.arrays)

    def add(self, name: str, record: dict, feats: np.ndarray) -> None:
        self.arrays[name] = np.ascontiguousarray(feats, np.float32)
        self.records.append(record)

    def flush(self, index: JsonlWriter) -> str:
        """Write the shard atomically, then append its clips' lines to `index`; returns the shard's name."""
        name = f"features-{self.number:05d}.{self.fmt}"
        tmp = self.out / f".{name}.{os.getpid()}.tmp"
        if self.fmt == "safetensors":
            from safetensors.numpy import save_file
            save_file(self.arrays, str(tmp), metadata={"content": "sync_sdk visual features (S*8, D) per clip"})
        else:
            with zipfile.ZipFile(tmp, "w") as z:  # what np.savez writes, without its keyword-name limits
                for key, arr in self.arrays.items():
                    with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, arr, allow_pickle=False)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.out / name)
        fsync_dir(self.out)
        for rec in self.records:
            index.write({**rec, "shard": name})
        self.arrays, self.records = {}, []
        self.number += 1
        return name


def _read_shard(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in keys}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in keys}


def _name(rec: dict) -> str | None:
    return rec["name"] if isinstance(rec.get("name"), str) else None


def _shards(out: Path) -> dict[str, int]:
    """{shard file name: its number} of the shards in `out`."""
    return {p.name: int(m.group(1)) for p in out.iterdir() if (m := _SHARD.fullmatch(p.name))}


def _next_shard(out: Path) -> int:
    return max(_shards(out).values(), default=-1) + 1


def _prepare_dir(out: Path, resume: bool, overwrite: bool) -> Path:
    """`out` created if absent; InputError for a file, or for lines there without resume / overwrite."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; a folder for the features and {INDEX} is expected")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    out.mkdir(exist_ok=True)
    index = out / INDEX
    if overwrite:
        for name in _shards(out):
            (out / name).unlink()
        index.unlink(missing_ok=True)
    elif not resume and index.is_file() and index.stat().st_size:
        raise InputError(f"--out {out} already holds features ({INDEX}): add --resume to run only the clips "
                         f"without features there, or --overwrite to start afresh")
    return out


def _resume_state(out: Path, settings: dict) -> dict[str, dict]:
    """{name: record} of the "ok" clips in `out` (after compacting its index); shards no ok line names are
    deleted. InputError when they were computed with other settings."""
    done = {k: r for k, r in compact(out / INDEX, _name).items() if r.get("status") == "ok"}
    other = sorted(k for k, r in done.items() if r.get("settings") != settings)
    if other:
        raise InputError(f"{out} holds features of {other[:3]} computed with other settings "
                         f"({done[other[0]].get('settings')}, now {settings}); write to another folder")
    named = {r.get("shard") for r in done.values()}
    for name in _shards(out):
        if name not in named:
            (out / name).unlink()
    return done
