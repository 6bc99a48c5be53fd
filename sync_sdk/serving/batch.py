"""Batch jobs: predict many files, one JSON line per file written as soon as it finishes.

Line format (JSONL): {"file", "status": "ok", "elapsed_sec", "result": SyncResult.to_dict()} or
{"file", "status": "error", "elapsed_sec", "error": exception class name, "message"}.
A failure is recorded and the batch goes on; a file given twice is done once.

What happens to an `out_path` that already holds lines is the caller's choice (`mode`), as with GNU
parallel's --resume / --resume-failed:
- "new": refused (InputError) unless it is empty or absent;
- "overwrite": started afresh;
- "resume": files with a line (ok or error) are skipped, the others run;
- "retry-failed": files with an ok line are skipped, files whose line is an error run again.
Lines are appended whole (serving/jsonl.py), so a killed batch leaves only complete lines. A resumed
batch first compacts the file to its last line per file (a cut last line goes); after any run that
ends, the file holds exactly one line per file (a retried file's new line replaces its old one).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError
from sync_sdk.serving.jsonl import JsonlWriter, compact

MODES = ("new", "overwrite", "resume", "retry-failed")


@dataclass
class BatchSummary:
    """Counts of one batch run, and the failed files with their reasons.

    skipped: files left as they were in the output (mode "resume" / "retry-failed"); failed_before: those
    of them whose line is an error."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"total": self.total, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "failed_before": self.failed_before, "failures": self.failures}


def read_file_list(path: str | Path) -> list[str]:
    """Paths from a text file, one per line; blank lines and lines starting with # are ignored.

    Relative paths are relative to the list file's folder; "-" reads the paths from standard input,
    relative to the current folder."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except OSError as e:
        raise InputError(f"cannot read the file list {path}: {e.strerror or e}") from e
    base = "" if str(path) == "-" else os.path.dirname(path)
    return [os.path.join(base, os.path.expanduser(ln.strip())) for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def _key(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _record_key(rec: dict) -> str | None:
    return _key(rec["file"]) if isinstance(rec.get("file"), str) else None


def check_output_file(out_path: str | Path, mode: str = "new") -> Path:
    """`out_path` as a Path if the batch may write there in `mode` (see the module docstring), else
    InputError: a folder, a folder that does not exist, or (mode "new") a file that holds lines."""
    if mode not in MODES:
        raise InputError(f"batch mode must be one of {MODES}, got {mode!r}")
    out = Path(out_path)
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; expected a JSONL file path, e.g. {out / 'results.jsonl'}")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if mode == "new" and out.is_file() and out.stat().st_size:
        raise InputError(f"--out {out} already holds results: add --resume to run only the files without a "
                         f"line there, --retry-failed to also run its failed files again, or --overwrite "
                         f"to start it afresh")
    return out


def unique_files(files: Iterable[str]) -> list[str]:
    """`files` as strings, each file once (first kept; the same absolute path counts as the same file)."""
    seen: set[str] = set()
    out = []
    for f in map(str, files):
        if _key(f) not in seen:
            seen.add(_key(f))
            out.append(f)
    return out


def run_batch(engine: SyncEngine, files: Iterable[str], out_path: str | Path, *, mode: str = "new",
              start_sec: float = 0.0, progress: bool = True, refine: bool = False) -> BatchSummary:
    """Predict each file with `engine` (refine: continuous offsets, SyncEngine.predict) and append its
    JSON line to `out_path` as it finishes; `mode` says what to do with lines already there (module
    docstring)."""
    out = check_output_file(out_path, mode)
    files = unique_files(files)
    summary = BatchSummary(total=len(files))
    earlier = compact(out, _record_key) if mode in ("resume", "retry-failed") else {}
    keep = ("ok", "error") if mode == "resume" else ("ok",)
    todo = []
    for f in files:
        status = earlier.get(_key(f), {}).get("status")
        if status in keep:
            summary.skipped += 1
            summary.failed_before += status == "error"
        else:
            todo.append(f)
    try:
        with JsonlWriter(out, truncate=mode == "overwrite") as writer, \
                tqdm(todo, desc="sync-sdk batch", unit="file", disable=not progress) as bar:
            for f in bar:
                writer.write(_predict(engine, f, start_sec, summary, refine))
                bar.set_postfix(ok=summary.ok, failed=summary.failed)
    finally:  # a retried file's new line replaces its old one (after a kill: the next resume does it)
        if any(_key(f) in earlier for f in todo):
            compact(out, _record_key)
    return summary


def _predict(engine: SyncEngine, f: str, start_sec: float, summary: BatchSummary, refine: bool = False) -> dict:
    """The JSON line of one file (counted in `summary`)."""
    t = time.perf_counter()
    try:
        res = engine.predict(f, start_sec=start_sec, refine=refine)
        rec = {"file": f, "status": "ok", "result": res.to_dict()}
        summary.ok += 1
    except Exception as e:  # record any failure and go on with the next file
        rec = {"file": f, "status": "error", "error": type(e).__name__, "message": str(e)}
        summary.failed += 1
        summary.failures.append({"file": f, "error": type(e).__name__, "message": str(e)})
    rec["elapsed_sec"] = round(time.perf_counter() - t, 4)
    return rec
