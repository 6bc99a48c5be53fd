"""Batch jobs: predict many files, one JSON line per file written as soon as it finishes.

Line format (JSONL): {"file", "status": "ok", "elapsed_sec", "result": SyncResult.to_dict()} or
{"file", "status": "error", "elapsed_sec", "error": exception class name, "message"}.
A failure is recorded and the batch goes on. With `resume`, files that already have an "ok" line in
the output are skipped (failed ones are tried again); a partial last line from a crash is ignored.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from sync_sdk.engine import SyncEngine
from sync_sdk.errors import InputError
from sync_sdk.serving.jsonl import open_output, read_records, write_record


@dataclass
class BatchSummary:
    """Counts of one batch run, and the failed files with their reasons."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"total": self.total, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "failures": self.failures}


def read_file_list(path: str | Path) -> list[str]:
    """Paths from a text file, one per line; blank lines and lines starting with # are ignored."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read the file list {path}: {e.strerror or e}") from e
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _key(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def done_files(out_path: str | Path) -> set[str]:
    """Absolute paths with an "ok" line in an existing JSONL output (unparseable lines ignored)."""
    return {_key(rec["file"]) for rec in read_records(out_path) if rec.get("status") == "ok" and "file" in rec}


def run_batch(engine: SyncEngine, files: Iterable[str], out_path: str | Path, *, resume: bool = False,
              start_sec: float = 0.0, progress: bool = True) -> BatchSummary:
    """Predict each file with `engine` and append its JSON line to `out_path` as it finishes."""
    files = [str(f) for f in files]
    summary = BatchSummary(total=len(files))
    skip = done_files(out_path) if resume else set()
    todo = [f for f in files if _key(f) not in skip]
    summary.skipped = len(files) - len(todo)
    with open_output(Path(out_path), resume) as out, \
            tqdm(todo, desc="sync-sdk batch", unit="file", disable=not progress) as bar:
        for f in bar:
            t = time.perf_counter()
            try:
                res = engine.predict(f, start_sec=start_sec)
                rec = {"file": f, "status": "ok", "result": res.to_dict()}
                summary.ok += 1
            except Exception as e:  # record any failure and go on with the next file
                rec = {"file": f, "status": "error", "error": type(e).__name__, "message": str(e)}
                summary.failed += 1
                summary.failures.append({"file": f, "error": type(e).__name__, "message": str(e)})
            rec["elapsed_sec"] = round(time.perf_counter() - t, 4)
            write_record(out, rec)
            bar.set_postfix(ok=summary.ok, failed=summary.failed)
    return summary
