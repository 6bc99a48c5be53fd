"""The Ray batch job's files: manifests in (CSV/Parquet), result rows out (Parquet shards, atomic, resumable).

Manifest: a `path` (or `file`) column and optional `start_sec` (window start, s) and `offset_sec` (an
extra audio shift applied before predicting, s) columns; relative paths are relative to the manifest's
folder. Results: one row per input (`result_schema()`), written as `part-<run_id>-<seq>.parquet`.
pyarrow is part of the optional `ray` extra and imported when a file is read or written.
"""
from __future__ import annotations

import csv
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sync_sdk.errors import BackendError, InputError, SyncSDKWarning
from sync_sdk.results import SyncResult, softmax

PATH_COLUMNS = ("path", "file")
SHARD_GLOB = "part-*.parquet"
RAY_HINT = "pip install 'sync-sdk[ray]' (ray[data]==2.60.0, pyarrow)"


# ---------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class ClipJob:
    """One manifest row: a media path, the window start (s) and the audio shift applied first (s)."""

    path: str
    start_sec: float = 0.0
    offset_sec: float = 0.0

    @property
    def key(self) -> tuple[str, float, float]:
        return job_key(self.path, self.start_sec, self.offset_sec)


def job_key(path: str, start_sec: float, offset_sec: float) -> tuple[str, float, float]:
    """Identity of an input across runs (times rounded to the microsecond)."""
    return str(path), round(float(start_sec), 6), round(float(offset_sec), 6)


def _resolve(path: str, base: Path) -> str:
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _number(value, name: str, where: str, default: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name} {value!r} is not a number (seconds)") from None
    if math.isnan(x):
        return default
    if not math.isfinite(x):
        raise InputError(f"{where}: {name} {value!r} is not a finite number of seconds")
    return x


def _manifest_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                return list(csv.DictReader(f))
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq
            return pq.read_table(path).to_pylist()
    except ImportError as e:
        raise BackendError(f"reading a Parquet manifest needs pyarrow: {RAY_HINT}") from e
    except FileNotFoundError as e:
        raise InputError(f"manifest {path} does not exist") from e
    except (OSError, csv.Error, ValueError) as e:
        raise InputError(f"cannot read the manifest {path}: {e}") from e
    raise InputError(f"manifest {path}: expected a .csv or .parquet file, got {suffix or 'no suffix'!r}")


def read_clip_manifest(path: str | Path, start_sec: float = 0.0, offset_sec: float = 0.0) -> list[ClipJob]:
    """The jobs of a CSV/Parquet manifest, duplicates dropped (first kept), in manifest order.

    start_sec / offset_sec: values for rows (or manifests) without them.
    """
    path = Path(path)
    rows = _manifest_rows(path)
    columns = set(rows[0]) if rows else set()
    col = next((c for c in PATH_COLUMNS if c in columns), None)
    if rows and col is None:
        raise InputError(f"manifest {path}: no path column; expected one of {PATH_COLUMNS}, "
                         f"found {sorted(columns)}")
    jobs, seen = [], set()
    for i, row in enumerate(rows, start=1):
        where = f"manifest {path.name} row {i}"
        raw = row.get(col)
        if raw is None or not str(raw).strip():
            raise InputError(f"{where}: empty {col}")
        job = ClipJob(_resolve(str(raw).strip(), path.parent),
                      _number(row.get("start_sec"), "start_sec", where, start_sec),
                      _number(row.get("offset_sec"), "offset_sec", where, offset_sec))
        if job.key not in seen:
            seen.add(job.key)
            jobs.append(job)
    return jobs


# ---------------------------------------------------------------------------- results on disk
def result_schema():
    """Arrow schema of the result shards.

    path, start_sec, input_offset_sec: the input (absolute path; window start and audio shift, s).
    status: "ok" | "error"; error, message: exception class and text (null when ok).
    model_id; offset_sec, class_index, confidence, in_sync, in_sync_tolerant: the prediction as in
    `SyncResult` (sync models; null otherwise); sync_prob: P(synchronizable) (synchronizability
    models; null otherwise); probs: softmax over the model's classes; flags: what the window's media
    lacks ("silent_audio", "static_video": the answer rests on no evidence); view_shifts: the shift
    views (s) the answer combined.
    decode_sec: the decode task's time; infer_sec: the clip's share of its batch's encoder + head
    time; worker: "host:pid" of the actor; run_id: the run that wrote the row.
    """
    import pyarrow as pa
    return pa.schema([
        ("path", pa.string()), ("start_sec", pa.float64()), ("input_offset_sec", pa.float64()),
        ("status", pa.string()), ("error", pa.string()), ("message", pa.string()),
        ("model_id", pa.string()), ("offset_sec", pa.float64()), ("class_index", pa.int32()),
        ("confidence", pa.float64()), ("in_sync", pa.bool_()), ("in_sync_tolerant", pa.bool_()),
        ("sync_prob", pa.float64()), ("probs", pa.list_(pa.float32())),
        ("flags", pa.list_(pa.string())), ("view_shifts", pa.list_(pa.float64())),
        ("decode_sec", pa.float64()), ("infer_sec", pa.float64()), ("worker", pa.string()),
        ("run_id", pa.string()),
    ])


def rows_table(rows: list[dict]):
    """Result rows (dicts; missing columns are null) as a pyarrow.Table with `result_schema()`."""
    import pyarrow as pa
    return pa.Table.from_pylist(rows, schema=result_schema())


def shard_paths(out_dir: str | Path) -> list[Path]:
    """Finished shards of `out_dir`, oldest run first (names sort by run start time)."""
    d = Path(out_dir)
    return sorted(d.glob(SHARD_GLOB)) if d.is_dir() else []


def check_out_dir(out_dir: str | Path, mode: str) -> Path:
    """`out_dir` as a Path if a run in `mode` ("new", "overwrite", "resume", "retry-failed", as the local
    batch) may write there, else InputError: a file, a missing parent folder, or (mode "new") shards
    already there. Mode "overwrite" deletes the shards (and cut ones) it finds; nothing else is touched."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; --ray writes a folder of Parquet shards")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    shards = shard_paths(out)
    if mode == "new" and shards:
        raise InputError(f"--out {out} already holds {len(shards)} result shard(s): add --resume to run only "
                         f"the inputs without a row there, --retry-failed to also run its failed inputs again, "
                         f"or --overwrite to delete its shards and start afresh")
    if mode == "overwrite":
        for p in shards + sorted(out.glob("." + SHARD_GLOB + ".tmp")):
            p.unlink()
    return out


def _read_shards(out_dir: str | Path, columns: list[str] | None = None) -> list:
    import pyarrow.parquet as pq
    tables = []
    for p in shard_paths(out_dir):
        try:
            tables.append(pq.read_table(p, columns=columns))
        except Exception as e:  # a foreign or damaged file must not stop a resume
            warnings.warn(f"{p}: unreadable result shard ignored ({e})", SyncSDKWarning, stacklevel=3)
    return tables


def row_status(out_dir: str | Path) -> dict[tuple[str, float, float], str]:
    """The status of each key (see `job_key`) with rows in `out_dir`: "ok" when one of its rows is ok."""
    status: dict[tuple[str, float, float], str] = {}
    for t in _read_shards(out_dir, ["path", "start_sec", "input_offset_sec", "status"]):
        for path, start, off, st in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            k = job_key(path, start, off)
            if status.get(k) != "ok":
                status[k] = st
    return status


def read_results(out_dir: str | Path):
    """All result rows of `out_dir` as one pyarrow.Table, one row per input: its "ok" row when there
    is one, else its latest "error" row. Rows in shard order."""
    import pyarrow as pa
    tables = _read_shards(out_dir)
    if not tables:
        return result_schema().empty_table()
    table = pa.concat_tables(tables, promote_options="default")
    cols = [table.column(c).to_pylist() for c in ("path", "start_sec", "input_offset_sec", "status")]
    best: dict[tuple, int] = {}
    for i, (path, start, off, status) in enumerate(zip(*cols)):
        k = job_key(path, start, off)
        if k not in best or status == "ok" or cols[3][best[k]] != "ok":
            best[k] = i
    return table.take(sorted(best.values()))


class ShardWriter:
    """Buffers result tables and writes `part-<run_id>-<seq>.parquet` files atomically (tmp + rename)."""

    def __init__(self, out_dir: str | Path, run_id: str, rows_per_shard: int = 1000,
                 flush_sec: float = 60.0) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_id, self.rows_per_shard, self.flush_sec = run_id, int(rows_per_shard), float(flush_sec)
        self.shards: list[Path] = []
        self._buffer: list = []
        self._rows = 0
        self._since = time.monotonic()

    def add(self, table) -> None:
        """Queue rows; write a shard once `rows_per_shard` rows or `flush_sec` seconds have gathered."""
        self._buffer.append(table)
        self._rows += table.num_rows
        if self._rows >= self.rows_per_shard or time.monotonic() - self._since >= self.flush_sec:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        self._since = time.monotonic()
        if not self._rows:
            return
        table = pa.concat_tables(self._buffer)
        path = self.out_dir / f"part-{self.run_id}-{len(self.shards):05d}.parquet"
        tmp = path.with_name("." + path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        self.shards.append(path)
        self._buffer, self._rows = [], 0


# ---------------------------------------------------------------------------- rows
def error_row(job: ClipJob, error: str, message: str, model_id: str = "", decode_sec: float = 0.0,
              worker: str = "", run_id: str = "") -> dict:
    """A result row for an input that failed (`error` = exception class name)."""
    return {"path": job.path, "start_sec": job.start_sec, "input_offset_sec": job.offset_sec,
            "status": "error", "error": error, "message": message, "model_id": model_id or None,
            "decode_sec": decode_sec, "worker": worker or None, "run_id": run_id}


def ok_row(job: ClipJob, logits: np.ndarray, variant: str, model_id: str, decode_sec: float,
           infer_sec: float, worker: str, run_id: str, flags=(), view_shifts=(0.0,)) -> dict:
    """A result row from one clip's logits: (21,) for a sync model, (2,) for synchronizability;
    flags and view_shifts (s) as `SyncResult` has them."""
    row = {"path": job.path, "start_sec": job.start_sec, "input_offset_sec": job.offset_sec,
           "status": "ok", "model_id": model_id, "decode_sec": decode_sec, "infer_sec": infer_sec,
           "worker": worker, "run_id": run_id, "flags": list(flags),
           "view_shifts": sorted(float(d) for d in view_shifts)}
    if variant == "sync":
        res = SyncResult.from_logits(logits, start_sec=job.start_sec, source=job.path)
        row.update(offset_sec=res.offset_sec, class_index=res.class_index, confidence=res.confidence,
                   in_sync=res.in_sync, in_sync_tolerant=res.in_sync_tolerant, probs=res.probs.tolist())
    else:
        probs = softmax(np.asarray(logits, dtype=np.float32))
        row.update(sync_prob=float(probs[1]), probs=probs.tolist())
    return row
