"""JSON-lines outputs of batch jobs: one record per line, appended as each item finishes, resumable.

Each record is encoded whole and appended with one `os.write` on an O_APPEND descriptor, then fsynced:
a job killed at any point leaves complete lines only. A line cut short anyway (a full disk, a power
loss, a file from an older version) is unparseable: readers skip it, and `repair_tail` / `compact`
take it out before a resumed job appends to the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator


def read_records(path: str | Path) -> Iterator[dict]:
    """The dict records of a JSONL file in order; unparseable lines (a line cut by a crash) are skipped."""
    p = Path(path)
    if not p.is_file():
        return
    for line in p.read_bytes().splitlines():
        rec = _parse(line)
        if rec is not None:
            yield rec


def _parse(line: bytes) -> dict | None:
    try:
        rec = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return None
    return rec if isinstance(rec, dict) else None


class JsonlWriter:
    """Appends records to a JSONL file, one whole line per `os.write`, fsynced (a context manager)."""

    def __init__(self, path: str | Path, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags, 0o644)

    def write(self, record: dict) -> None:
        data = memoryview((json.dumps(record) + "\n").encode())
        while data:  # a regular file takes the line in one write unless the disk fills up
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repair_tail(path: str | Path) -> None:
    """End `path` with a newline: a last line without one is completed when it parses, else cut off."""
    p = Path(path)
    if not p.is_file():
        return
    data = p.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(p, "r+b") as f:
        if _parse(data[cut:]) is None:
            f.truncate(cut)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


def compact(path: str | Path, key: Callable[[dict], str | None]) -> dict[str, dict]:
    """Keep only the last record per `key(record)` in `path`, in the order written; unparseable lines
    and records without a key (None) go. The file is rewritten atomically (temporary file, fsync,
    os.replace), and only when something goes. Returns {key: record}."""
    p = Path(path)
    data = p.read_bytes() if p.is_file() else b""
    latest: dict[str, tuple[int, bytes, dict]] = {}
    n_lines = 0
    for i, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        n_lines += 1
        rec = _parse(line)
        k = None if rec is None else key(rec)
        if k is not None:
            latest[k] = (i, line, rec)
    if n_lines != len(latest) or (data and not data.endswith(b"\n")):
        kept = sorted(latest.values(), key=lambda item: item[0])
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for _, line, _ in kept))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, p.stat().st_mode & 0o777)
        os.replace(tmp, p)
        fsync_dir(p.parent)
    return {k: rec for k, (_, _, rec) in latest.items()}


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so that a rename or a new file in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_output(out_path: Path, resume: bool) -> JsonlWriter:
    """Append when resuming (after `repair_tail`), else start the file afresh."""
    if resume:
        repair_tail(out_path)
    return JsonlWriter(out_path, truncate=not resume)
