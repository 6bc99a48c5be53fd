"""Corpus-scale batch scoring on Ray Data: manifest -> decode tasks -> model actors -> Parquet shards.

    summary = run_ray_batch("clips.csv", "scores/", model="synthetic-tiny")
    table = read_results("scores/")          # pyarrow.Table, one row per (path, start_sec, input_offset_sec)

Manifest: CSV (header row) or Parquet with a `path` (or `file`) column and optional `start_sec`
(window start, s) and `offset_sec` (an extra audio shift applied before predicting, s; the official
evaluation's shift) columns. Relative paths are relative to the manifest's folder.

Pipeline: decoding and preprocessing (`prepare_inputs`: PyAV, log-mel, RGB table) run in CPU tasks
(1 CPU each); an actor pool runs the encoders and the head, each actor holding one `SyncEngine`: one
actor per GPU, or without GPUs one per two CPUs; the actors take at most half of the CPUs, the
decode tasks the rest (`plan_workers`). Decoded windows travel as float32 arrays (~140 MB a clip). The driver writes the result rows to Parquet shards in
`out_dir` as they arrive (every `rows_per_shard` rows or `flush_sec` seconds, atomically: a shard is
complete or absent). A file that fails (missing, undecodable, too short, a backend error) becomes a
row with status "error", its exception class and message. Re-running with the same `out_dir` skips
every input that has an "ok" row (and, with retry_failed=False, those with an "error" row too).

Each clip is scored on its one window, as the official models answer: a model folder's shift views
(views.py, which `SyncEngine.predict` and the local `sync-sdk batch` combine) are not used here, since
each view would add another ~140 MB decoded window per clip; for synthetic-tiny that gives its
single-view accuracy (its model card).

Ray and pyarrow are the optional extra `pip install 'sync-sdk[ray]'`; this module imports them
only when a job runs. Result columns: see `result_schema()`.
"""
from __future__ import annotations

import csv
import math
import os
import secrets
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from sync_sdk.errors import BackendError, InputError, SyncSDKWarning

PATH_COLUMNS = ("path", "file")
SHARD_GLOB = "part-*.parquet"
DECODE_MEMORY = 512 << 20  # bytes a decode task reserves: the float32 window (~140 MB) and PyAV buffers
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
    models; null otherwise); probs: softmax over the model's classes.
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


def _read_shards(out_dir: str | Path, columns: list[str] | None = None) -> list:
    import pyarrow.parquet as pq
    tables = []
    for p in shard_paths(out_dir):
        try:
            tables.append(pq.read_table(p, columns=columns))
        except Exception as e:  # a foreign or damaged file must not stop a resume
            warnings.warn(f"{p}: unreadable result shard ignored ({e})", SyncSDKWarning, stacklevel=3)
    return tables


def finished_keys(out_dir: str | Path, retry_failed: bool = True) -> set[tuple[str, float, float]]:
    """Keys (see `job_key`) with an "ok" row in `out_dir` (and "error" rows unless retry_failed)."""
    keys = set()
    for t in _read_shards(out_dir, ["path", "start_sec", "input_offset_sec", "status"]):
        for path, start, off, status in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            if status == "ok" or not retry_failed:
                keys.add(job_key(path, start, off))
    return keys


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
           infer_sec: float, worker: str, run_id: str) -> dict:
    """A result row from one clip's logits: (21,) for a sync model, (2,) for synchronizability."""
    from sync_sdk.results import SyncResult, softmax
    row = {"path": job.path, "start_sec": job.start_sec, "input_offset_sec": job.offset_sec,
           "status": "ok", "model_id": model_id, "decode_sec": decode_sec, "infer_sec": infer_sec,
           "worker": worker, "run_id": run_id}
    if variant == "sync":
        res = SyncResult.from_logits(logits, start_sec=job.start_sec, source=job.path)
        row.update(offset_sec=res.offset_sec, class_index=res.class_index, confidence=res.confidence,
                   in_sync=res.in_sync, in_sync_tolerant=res.in_sync_tolerant, probs=res.probs.tolist())
    else:
        probs = softmax(np.asarray(logits, dtype=np.float32))
        row.update(sync_prob=float(probs[1]), probs=probs.tolist())
    return row


# ---------------------------------------------------------------------------- pipeline stages
SEGMENT_SHAPES = {"vid": (16, 3, 224, 224), "aud": (1, 128, 66)}


def decode_row(row: dict) -> dict:
    """Ray Data map: one manifest row -> prepared inputs, or an error (never raises).

    Adds vid (S,16,3,224,224) float32 and aud (S,1,128,66) float32 (S = 0 after an error),
    error / message ("" when fine) and decode_sec.
    """
    t = time.perf_counter()
    out = {k: row[k] for k in ("path", "start_sec", "input_offset_sec")}
    try:
        from sync_sdk.inputs.window import prepare_inputs
        vid, aud = prepare_inputs(row["path"], offset_sec=row["input_offset_sec"], start_sec=row["start_sec"])
        out.update(vid=np.ascontiguousarray(vid, np.float32), aud=np.ascontiguousarray(aud, np.float32),
                   error="", message="")
    except Exception as e:  # every failure becomes a result row
        out.update({k: np.zeros((0, *s), np.float32) for k, s in SEGMENT_SHAPES.items()},
                   error=type(e).__name__, message=str(e) or repr(e))
    out["decode_sec"] = time.perf_counter() - t
    return out


def clip_logits(engine, vid: np.ndarray, aud: np.ndarray) -> np.ndarray:
    """Logits (B, num_classes) of B prepared clips: vid (B,S,16,3,224,224), aud (B,S,1,128,66) with
    S = the model's n_segments, through the engine's backend, `engine.max_batch` segments per call."""
    from sync_sdk.runtime.cache import array_module
    from sync_sdk.config import AUDIO_TOKENS_PER_SEGMENT, VIDEO_TOKENS_PER_SEGMENT
    from sync_sdk.engine import to_numpy
    b, s = vid.shape[:2]
    be, m = engine.backend, engine.max_batch

    def encode(fn, x):  # features stay where the backend puts them (NumPy, or CuPy on a GPU)
        x = x.reshape(b * s, *x.shape[2:])
        outs = [fn(x[i:i + m]) for i in range(0, len(x), m)]
        return outs[0] if len(outs) == 1 else array_module(outs[0]).concatenate(outs)

    vfeat, afeat = encode(be.encode_video, vid), encode(be.encode_audio, aud)
    return to_numpy(be.head(vfeat.reshape(b, s * VIDEO_TOKENS_PER_SEGMENT, -1),
                            afeat.reshape(b, s * AUDIO_TOKENS_PER_SEGMENT, -1)))


class ClipScorer:
    """Ray Data actor: holds one SyncEngine; a batch of decoded rows -> a pyarrow.Table of results.

    Clips of a batch go through the encoders together; when that fails, each clip is retried alone
    so one bad clip becomes one error row.
    """

    def __init__(self, model: str | None, run_id: str, backend: str = "auto", device: str = "auto",
                 precision: str = "auto", threads: int | None = None) -> None:
        from sync_sdk.engine import SyncEngine
        kwargs = {"threads": threads} if threads else {}
        self.engine = SyncEngine.from_pretrained(model, backend=backend, device=device,
                                                 precision=precision, shift_views=(0.0,), **kwargs)
        self.run_id = run_id
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict):
        n = len(batch["path"])
        jobs = [ClipJob(str(batch["path"][i]), float(batch["start_sec"][i]),
                        float(batch["input_offset_sec"][i])) for i in range(n)]
        rows: list[dict | None] = [None] * n
        good = []
        for i, job in enumerate(jobs):
            if batch["error"][i]:
                rows[i] = self._error(job, str(batch["error"][i]), str(batch["message"][i]),
                                      float(batch["decode_sec"][i]))
            else:
                good.append(i)
        groups = [good] if good else []
        while groups:
            idx = groups.pop()
            try:
                self._score(batch, jobs, idx, rows)
            except Exception as e:  # split the batch, or record the one clip that fails
                if len(idx) > 1:
                    groups += [[i] for i in idx]
                else:
                    i = idx[0]
                    rows[i] = self._error(jobs[i], type(e).__name__, str(e) or repr(e),
                                          float(batch["decode_sec"][i]))
        return rows_table(rows)

    def _score(self, batch: dict, jobs: list[ClipJob], idx: list[int], rows: list) -> None:
        s = self.engine.config.n_segments
        t = time.perf_counter()
        vid = np.stack([np.asarray(batch["vid"][i])[:s] for i in idx])
        aud = np.stack([np.asarray(batch["aud"][i])[:s] for i in idx])
        logits = clip_logits(self.engine, vid, aud)
        share = (time.perf_counter() - t) / len(idx)
        for i, lg in zip(idx, logits):
            rows[i] = ok_row(jobs[i], lg, self.engine.config.variant, self.engine.model_id,
                             float(batch["decode_sec"][i]), share, self.worker, self.run_id)

    def _error(self, job: ClipJob, error: str, message: str, decode_sec: float) -> dict:
        return error_row(job, error, message, self.engine.model_id, decode_sec, self.worker, self.run_id)


# ---------------------------------------------------------------------------- the job
@dataclass
class RayBatchSummary:
    """Counts of one run, where its shards went, and how long it took (s, from connecting to Ray)."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    workers: int = 0
    worker_kind: str = "cpu"
    elapsed_sec: float = 0.0
    run_id: str = ""
    shards: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def import_ray():
    """(ray, ray.data), or BackendError saying how to install the extra."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as e:
        raise BackendError(f"the Ray batch job needs Ray Data and pyarrow ({e.name} is missing): "
                           f"{RAY_HINT}") from e
    return ray, ray.data


@dataclass(frozen=True)
class WorkerPlan:
    """How the actor pool is laid out: count, resources per actor, engine device and threads."""

    workers: int
    num_gpus: float
    num_cpus: float
    device: str
    threads: int | None

    @property
    def kind(self) -> str:
        return "gpu" if self.num_gpus else "cpu"


def plan_workers(cluster_cpus: float, cluster_gpus: float, device: str = "auto", workers: int | None = None,
                 cpus_per_worker: float | None = None, threads: int | None = None) -> WorkerPlan:
    """The actor pool for a cluster of `cluster_cpus` CPUs and `cluster_gpus` GPUs.

    With GPUs (device "auto"/"cuda"): one actor per GPU by default; more actors than GPUs share them
    (num_gpus = GPUs / actors). Without: half as many actors as CPUs. Either way the actors take at
    most half of the CPUs together (at most one each), so the decode tasks (1 CPU each) keep the
    rest; an explicit `cpus_per_worker` that leaves them less than one CPU is refused.
    """
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    gpus = int(cluster_gpus) if device != "cpu" else 0
    if device.startswith("cuda") and not gpus:
        raise BackendError(f"device {device!r} asked for, but the Ray cluster has no GPUs")
    n = workers or gpus or max(1, int(cluster_cpus // 2))
    per = cpus_per_worker or min(1.0, max(cluster_cpus / 2, 0.5) / n)
    if cluster_cpus - n * per < 1:
        raise InputError(f"{n} workers x {per} CPUs leave {cluster_cpus - n * per:g} of the cluster's "
                         f"{cluster_cpus:g} CPUs to the decode tasks, which need 1; ask for fewer")
    if gpus:
        return WorkerPlan(n, min(1.0, gpus / n), per, "cuda", threads)
    return WorkerPlan(n, 0.0, per, "cpu", threads or max(1, int(per)))


def run_ray_batch(manifest: str | Path | Iterable[ClipJob], out_dir: str | Path, model: str | Path | None = None,
                  *, backend: str = "auto", device: str = "auto", precision: str = "auto",
                  workers: int | None = None, cpus_per_worker: float | None = None,
                  threads: int | None = None, address: str | None = None, batch_size: int = 4,
                  rows_per_shard: int = 1000, flush_sec: float = 60.0, retry_failed: bool = True,
                  start_sec: float = 0.0, progress: bool = True) -> RayBatchSummary:
    """Score every manifest row not yet finished in `out_dir`; see the module docstring.

    manifest: a CSV/Parquet path or ClipJobs. model/backend/device/precision/threads: as
    `SyncEngine.from_pretrained` (None = the official AudioSet checkpoint), for each actor (the model
    must be readable, or downloadable, on every node).
    workers: actors (default: one per GPU, else half the CPUs). batch_size: clips per actor call.
    address: a Ray cluster ("auto", "ray://host:10001"); None = the current one, or a new local one.
    Connects with `ray.init` unless Ray is already initialised (then it is left running).
    """
    ray, rd = import_ray()
    jobs = read_clip_manifest(manifest, start_sec=start_sec) if isinstance(manifest, (str, Path)) \
        else list(manifest)
    done = finished_keys(out_dir, retry_failed=retry_failed)
    todo = [j for j in jobs if j.key not in done]
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    summary = RayBatchSummary(total=len(jobs), skipped=len(jobs) - len(todo), run_id=run_id)
    if not todo:
        return summary

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=progress)
    try:
        t0 = time.perf_counter()
        res = ray.cluster_resources()
        plan = plan_workers(res.get("CPU", 1.0), res.get("GPU", 0.0), device, workers, cpus_per_worker, threads)
        summary.workers, summary.worker_kind = plan.workers, plan.kind
        rd.DataContext.get_current().enable_progress_bars = progress
        writer = ShardWriter(out_dir, run_id, rows_per_shard, flush_sec)
        items = [{"path": j.path, "start_sec": j.start_sec, "input_offset_sec": j.offset_sec} for j in todo]
        ds = (rd.from_items(items, override_num_blocks=min(len(items), 4096))
              # `memory` reserves room for a decoded window; it also keeps Ray Data from fusing the
              # decode into the actors, so decoding stays in CPU tasks beside them
              .map(decode_row, num_cpus=1, memory=DECODE_MEMORY)
              .map_batches(ClipScorer, batch_size=batch_size, batch_format="numpy",
                           compute=rd.ActorPoolStrategy(size=plan.workers),
                           num_gpus=plan.num_gpus, num_cpus=plan.num_cpus,
                           fn_constructor_kwargs=dict(
                               model=None if model is None else str(model), run_id=run_id, backend=backend,
                               device=plan.device, precision=precision, threads=plan.threads)))
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                writer.add(table)
                status = table.column("status").to_pylist()
                summary.ok += status.count("ok")
                summary.failed += len(status) - status.count("ok")
        finally:  # rows already scored are kept, also when the job fails or is interrupted
            writer.flush()
        summary.shards = [str(p) for p in writer.shards]
        summary.elapsed_sec = round(time.perf_counter() - t0, 3)
    finally:
        if started:
            ray.shutdown()
    return summary


def run_from_cli(args) -> int:
    """`sync-sdk batch --ray MANIFEST --out DIR`: run the job, print the summary (stderr); exit code
    0 when every row is ok, 1 when some failed."""
    import json
    import sys
    if len(args.files) != 1 or args.list:
        raise InputError("--ray takes one manifest (a .csv or .parquet file with a 'path' column) and no "
                         f"--list; got {len(args.files)} file(s)")
    summary = run_ray_batch(args.files[0], args.out, args.model, backend=args.backend, device=args.device,
                            precision=args.precision, threads=args.threads, workers=args.workers,
                            address=args.address, start_sec=args.start, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "shards"}), file=sys.stderr)
    return 1 if summary.failed else 0
