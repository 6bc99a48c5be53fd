"""JSON-lines outputs of batch jobs: one record per line, appended as each item finishes, resumable."""
from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Iterator


def read_records(path: str | Path) -> Iterator[dict]:
    """The dict records of a JSONL file in order; unparseable lines (a line cut by a crash) are skipped."""
    p = Path(path)
    if not p.is_file():
        return
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            yield rec


def open_output(out_path: Path, resume: bool) -> IO[str]:
    """Append when resuming (after closing a partial last line), else start a new file."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if resume and out_path.is_file():
        data = out_path.read_bytes()
        f = open(out_path, "a", encoding="utf-8")
        if data and not data.endswith(b"\n"):
            f.write("\n")
        return f
    return open(out_path, "w", encoding="utf-8")


def write_record(out: IO[str], record: dict) -> None:
    """One record as one line, flushed at once (a crash loses at most the line being written)."""
    out.write(json.dumps(record) + "\n")
    out.flush()
