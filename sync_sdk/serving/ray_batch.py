"""Corpus-scale batch scoring on Ray Data: manifest -> decode tasks -> model actors -> Parquet shards.

    summary = run_ray_batch("clips.csv", "scores/", model="synthetic-tiny")
    table = read_results("scores/")          # pyarrow.Table, one row per (path, start_sec, input_offset_sec)

Manifest: CSV (header row) or Parquet with a `path` (or `file`) column and optional `start_sec`
(window start, s) and `offset_sec` (an extra audio shift applied before predicting, s; the official
evaluation's shift) columns. Relative paths are relative to the manifest's folder.

Pipeline: decoding and preprocessing (`view_inputs`: PyAV, log-mel, RGB table) run in CPU tasks
(1 CPU each); an actor pool runs the encoders and the head, each actor holding one `SyncEngine`: one
actor per GPU, or without GPUs one per two CPUs; the actors take at most half of the CPUs, the
decode tasks the rest (`plan_workers`). Decoded windows travel as float32 arrays (~140 MB a clip).
The driver writes the result rows to Parquet shards in
`out_dir` as they arrive (every `rows_per_shard` rows or `flush_sec` seconds, atomically: a shard is
complete or absent). A file that fails (missing, undecodable, too short, a backend error) becomes a
row with status "error", its exception class and message. Re-running with the same `out_dir` skips
every input that has an "ok" row (and, with retry_failed=False, those with an "error" row too). A model
actor that dies (killed, out of memory) is replaced and its batch run again (Ray Data's actor restarts
and task retries); a killed driver loses only the rows not yet in a shard, which a re-run scores.

Each clip is answered as `SyncEngine.predict` answers it: the decode task prepares the model's shift
views (runtime/views.py; one view for the official models). Views share the clip's video crop, so a
view adds one 14-segment log-mel (~0.5 MB) to the ~140 MB decoded window, except a view whose audio
lies outside the media, which moves the video crop instead and carries its own; the actor combines
them through the segment-encoding seam.

Ray and pyarrow are the optional extra `pip install 'sync-sdk[ray]'`; this module imports them
only when a job runs. Manifests and result shards: serving/ray_results.py.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sync_sdk.engine import SyncEngine
from sync_sdk.errors import BackendError, InputError
from sync_sdk.inputs.views import View, view_inputs
from sync_sdk.runtime.loading import model_shift_views
from sync_sdk.runtime.views import SINGLE_VIEW
from sync_sdk.serving.ray_results import (
    RAY_HINT,
    ClipJob,
    ShardWriter,
    check_out_dir,
    error_row,
    ok_row,
    read_clip_manifest,
    row_status,
    rows_table,
)

DECODE_MEMORY = 512 << 20  # bytes a decode task reserves: the float32 window (~140 MB) and PyAV buffers


SEGMENT_SHAPES = {"vid": (16, 3, 224, 224), "aud": (1, 128, 66)}


def decode_row(row: dict, shift_views: Sequence[float] = SINGLE_VIEW) -> dict:
    """Ray Data map: one manifest row -> the model inputs of its window's views, or an error (never raises).

    Adds vid (K, S, 16, 3, 224, 224) float32, the K distinct video crops; aud (V, S, 1, 128, 66) float32,
    one per view; view_shift (V,) s, view_start (V,) s and view_vid (V,) (which vid each view uses);
    flags (the unshifted view's evidence flags, space-separated); error / message ("" when fine) and
    decode_sec. After an error K = V = 0.
    """
    t = time.perf_counter()
    out = {k: row[k] for k in ("path", "start_sec", "input_offset_sec")}
    try:
        views = view_inputs(row["path"], row["start_sec"], row["input_offset_sec"], shift_views)
        crops: list[np.ndarray] = []
        which: dict[int, int] = {}  # id of a view's vid array -> its index in crops
        for v in views:
            if id(v.vid) not in which:
                which[id(v.vid)] = len(crops)
                crops.append(np.ascontiguousarray(v.vid, np.float32))
        out.update(vid=np.stack(crops), aud=np.stack([np.ascontiguousarray(v.aud, np.float32) for v in views]),
                   view_shift=np.array([v.shift_sec for v in views]), view_start=np.array([v.start_sec for v in views]),
                   view_vid=np.array([which[id(v.vid)] for v in views], np.int64), flags=" ".join(views[0].flags),
                   error="", message="")
    except Exception as e:  # every failure becomes a result row
        out.update({k: np.zeros((0, 0, *s), np.float32) for k, s in SEGMENT_SHAPES.items()},
                   view_shift=np.zeros(0), view_start=np.zeros(0), view_vid=np.zeros(0, np.int64), flags="",
                   error=type(e).__name__, message=str(e) or repr(e))
    out["decode_sec"] = time.perf_counter() - t
    return out


def row_views(batch: dict, i: int) -> list[View]:
    """The views of clip i of a decoded batch (`decode_row`), video crops shared as decoded."""
    crops = list(np.asarray(batch["vid"][i]))  # one array object per crop: its views share its features
    return [View(float(d), float(s), crops[k], a) for d, s, k, a in
            zip(batch["view_shift"][i], batch["view_start"][i], batch["view_vid"][i], np.asarray(batch["aud"][i]))]


class ClipScorer:
    """Ray Data actor: holds one SyncEngine; a batch of decoded rows -> a pyarrow.Table of results.

    Clips of a batch go through the encoders together; when that fails, each clip is retried alone
    so one bad clip becomes one error row.
    """

    def __init__(self, model: str | None, run_id: str, backend: str = "auto", device: str = "auto",
                 precision: str = "auto", threads: int | None = None) -> None:
        kwargs = {"threads": threads} if threads else {}
        self.engine = SyncEngine.from_pretrained(model, backend=backend, device=device, precision=precision,
                                                 **kwargs)
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
        t = time.perf_counter()
        logits = self.engine.encoder.views_logits([row_views(batch, i) for i in idx])
        share = (time.perf_counter() - t) / len(idx)
        for i, lg in zip(idx, logits):
            rows[i] = ok_row(jobs[i], lg, self.engine.config.variant, self.engine.model_id,
                             float(batch["decode_sec"][i]), share, self.worker, self.run_id,
                             flags=str(batch["flags"][i]).split(), view_shifts=batch["view_shift"][i])

    def _error(self, job: ClipJob, error: str, message: str, decode_sec: float) -> dict:
        return error_row(job, error, message, self.engine.model_id, decode_sec, self.worker, self.run_id)


# ---------------------------------------------------------------------------- the job
@dataclass
class RayBatchSummary:
    """Counts of one run, where its shards went, and how long it took (s, from connecting to Ray).

    skipped: inputs with a row already (an ok one, or any with retry_failed=False); failed_before: those
    of them whose row is an error."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0
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
    earlier = row_status(out_dir)
    done = ("ok",) if retry_failed else ("ok", "error")
    todo = [j for j in jobs if earlier.get(j.key) not in done]
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    failed_before = 0 if retry_failed else sum(earlier.get(j.key) == "error" for j in jobs)
    summary = RayBatchSummary(total=len(jobs), skipped=len(jobs) - len(todo), failed_before=failed_before,
                              run_id=run_id)
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
              .map(decode_row, fn_kwargs={"shift_views": model_shift_views(model)}, num_cpus=1,
                   memory=DECODE_MEMORY)
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


def run_from_cli(args, mode: str = "new") -> int:
    """`sync-sdk batch --ray MANIFEST --out DIR`: run the job, print the summary (stderr); exit code
    0 when every row is ok, 1 when some failed. mode: what to do with rows already in DIR
    (`check_out_dir`; "resume" skips inputs with any row, "retry-failed" only those with an ok row)."""
    if len(args.files) != 1 or args.list:
        raise InputError("--ray takes one manifest (a .csv or .parquet file with a 'path' column) and no "
                         f"--list; got {len(args.files)} file(s)")
    out = check_out_dir(args.out, mode)
    summary = run_ray_batch(args.files[0], out, args.model, backend=args.backend, device=args.device,
                            precision=args.precision, threads=args.threads, workers=args.workers,
                            address=args.address, start_sec=args.start, progress=not args.quiet,
                            retry_failed=mode != "resume")
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "shards"}), file=sys.stderr)
    return 1 if summary.failed or summary.failed_before else 0
