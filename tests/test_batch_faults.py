"""`sync-sdk batch` outputs that lose nothing: whole-line appends, compaction on resume, what happens to
an existing --out (refused, --resume, --retry-failed, --overwrite), --out checks, --list paths, and
SIGKILLs at random moments followed by --resume (benchmarks/faults/kills.py)."""
import io
import json
import os
from pathlib import Path

import pytest

from sync_sdk.cli.main import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main
from sync_sdk.errors import InputError, MediaNotFoundError
from sync_sdk.serving.batch import read_file_list, run_batch
from sync_sdk.serving.jsonl import JsonlWriter, compact, open_output, read_records, repair_tail


class FakeEngine:
    """predict() without a model: files named bad* fail; counts the calls per file."""

    def __init__(self, fail_bad: bool = True) -> None:
        self.calls: list[str] = []
        self.fail_bad = fail_bad

    def predict(self, f: str, start_sec: float = 0.0, refine: bool = False):
        self.calls.append(os.path.basename(f))
        if self.fail_bad and os.path.basename(f).startswith("bad"):
            raise MediaNotFoundError(f"{f}: gone")
        return FakeResult(f)


class FakeResult:
    def __init__(self, f: str) -> None:
        self.f = f

    def to_dict(self) -> dict:
        return {"source": self.f, "offset_sec": 0.0}


def lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def names(path: Path) -> list[tuple[str, str]]:
    return [(os.path.basename(r["file"]), r["status"]) for r in lines(path)]


# ---------------------------------------------------------------------------- JSONL primitives
def test_writer_appends_each_line_with_one_write(tmp_path, monkeypatch):
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(bytes(data)) or real_write(fd, data))
    out = tmp_path / "o.jsonl"
    out.write_text('{"file": "old"}\n')
    with JsonlWriter(out) as w:
        w.write({"file": "a", "message": "x" * 100_000})
        w.write({"file": "b"})
    assert [json.loads(b) for b in writes] == [{"file": "a", "message": "x" * 100_000}, {"file": "b"}]
    assert all(b.endswith(b"\n") and b.count(b"\n") == 1 for b in writes)
    assert [r["file"] for r in read_records(out)] == ["old", "a", "b"]


@pytest.mark.parametrize("tail,kept", [(b'{"file": "c", "sta', ["a", "b"]), (b'{"file": "c"}', ["a", "b", "c"])])
def test_repair_tail(tmp_path, tail, kept):
    out = tmp_path / "o.jsonl"
    out.write_bytes(b'{"file": "a"}\n{"file": "b"}\n' + tail)
    with open_output(out, resume=True) as w:
        w.write({"file": "d"})
    assert [r["file"] for r in lines(out)] == [*kept, "d"]  # every line parses
    repair_tail(tmp_path / "none.jsonl")  # nothing to do


def test_compact_keeps_the_last_record_per_key_atomically(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_bytes(b'{"file": "a", "v": 1}\nnot json\n{"file": "b", "v": 1}\n{"x": 1}\n{"file": "a", "v": 2}\n'
                    b'\n{"file": "c", "v": 1}\n{"file": "b", "v')
    got = compact(out, lambda r: r.get("file"))
    assert {k: r["v"] for k, r in got.items()} == {"a": 2, "b": 1, "c": 1}
    assert out.read_text() == '{"file": "b", "v": 1}\n{"file": "a", "v": 2}\n{"file": "c", "v": 1}\n'
    assert os.listdir(tmp_path) == ["o.jsonl"]  # no temporary file left
    inode = out.stat().st_ino
    compact(out, lambda r: r.get("file"))  # nothing to drop: the file is left as it is
    assert out.stat().st_ino == inode
    assert compact(tmp_path / "none.jsonl", lambda r: r.get("file")) == {}


# ---------------------------------------------------------------------------- an existing --out
def test_existing_output_is_refused_without_a_mode(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    out.write_text('{"file": "a.mp4", "status": "ok"}\n')
    assert main(["batch", str(tmp_path / "a.mp4"), "--out", str(out), "--model", "synthetic-tiny"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "already holds results" in err and "--resume" in err and "--overwrite" in err
    assert out.read_text() == '{"file": "a.mp4", "status": "ok"}\n'  # untouched
    with pytest.raises(InputError, match="--retry-failed"):
        run_batch(FakeEngine(), ["x"], out)
    out.write_text("")  # an empty file is no result: written as a new one
    run_batch(FakeEngine(), [str(tmp_path / "x.mp4")], out, progress=False)
    assert names(out) == [("x.mp4", "ok")]


def test_overwrite_starts_afresh(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"file": "old.mp4", "status": "ok"}\n')
    run_batch(FakeEngine(), [str(tmp_path / "a.mp4")], out, mode="overwrite", progress=False)
    assert names(out) == [("a.mp4", "ok")]


def test_resume_skips_ok_and_failed_and_retry_failed_replaces_errors(tmp_path):
    out = tmp_path / "o.jsonl"
    files = [str(tmp_path / n) for n in ("a.mp4", "bad1.mp4", "b.mp4", "bad2.mp4")]
    first = run_batch(FakeEngine(), files[:2], out, progress=False)
    assert (first.ok, first.failed) == (1, 1)
    eng = FakeEngine()  # --resume: only the files without a line run; the failed one keeps its one line
    s = run_batch(eng, files, out, mode="resume", progress=False)
    assert eng.calls == ["b.mp4", "bad2.mp4"] and (s.skipped, s.failed_before, s.ok, s.failed) == (2, 1, 1, 1)
    assert names(out) == [("a.mp4", "ok"), ("bad1.mp4", "error"), ("b.mp4", "ok"), ("bad2.mp4", "error")]
    eng = FakeEngine(fail_bad=False)  # --retry-failed: the failed files run again, their new line replaces the old
    s = run_batch(eng, files, out, mode="retry-failed", progress=False)
    assert eng.calls == ["bad1.mp4", "bad2.mp4"] and (s.skipped, s.failed_before, s.ok) == (2, 0, 2)
    assert names(out) == [("a.mp4", "ok"), ("b.mp4", "ok"), ("bad1.mp4", "ok"), ("bad2.mp4", "ok")]
    eng = FakeEngine()
    assert run_batch(eng, files, out, mode="resume", progress=False).skipped == 4 and eng.calls == []


def test_resume_after_a_crash_compacts_the_file(tmp_path):
    """What a killed --retry-failed run can leave: an error line followed by its file's new line, and a
    cut last line. The next run keeps one line per file and runs only the cut file."""
    out = tmp_path / "o.jsonl"
    a, b, c = (str(tmp_path / n) for n in ("a.mp4", "b.mp4", "c.mp4"))
    out.write_text(json.dumps({"file": a, "status": "error"}) + "\n" + json.dumps({"file": b, "status": "ok"}) + "\n"
                   + json.dumps({"file": a, "status": "ok"}) + "\n" + '{"file": "' + c)
    eng = FakeEngine()
    s = run_batch(eng, [a, b, c], out, mode="resume", progress=False)
    assert eng.calls == ["c.mp4"] and s.skipped == 2
    assert names(out) == [("b.mp4", "ok"), ("a.mp4", "ok"), ("c.mp4", "ok")]


def test_a_file_given_twice_is_done_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.jsonl"
    eng = FakeEngine()
    s = run_batch(eng, ["a.mp4", str(tmp_path / "a.mp4"), "./a.mp4", "b.mp4"], out, progress=False)
    assert eng.calls == ["a.mp4", "b.mp4"] and s.total == 2 and names(out) == [("a.mp4", "ok"), ("b.mp4", "ok")]


# ---------------------------------------------------------------------------- --out and --list paths
def test_out_checks(tmp_path, capsys):
    argv = ["batch", str(tmp_path / "a.mp4"), "--model", "synthetic-tiny", "--out"]
    assert main([*argv, str(tmp_path)]) == EXIT_USAGE
    assert "is a folder" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "o.jsonl"
    assert main([*argv, str(missing)]) == EXIT_USAGE
    assert "does not exist; create it first" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()  # not created
    with pytest.raises(InputError, match="is a folder"):
        run_batch(FakeEngine(), ["a.mp4"], tmp_path, mode="resume")
    with pytest.raises(InputError, match="batch mode"):
        run_batch(FakeEngine(), ["a.mp4"], tmp_path / "o.jsonl", mode="append")


def test_list_paths_are_relative_to_the_list_file(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "files.txt"
    lst.write_text("# clips\na.mp4\n\n../clips/b.mp4\n/abs/c.mp4\n  ~/d.mp4  \n")
    monkeypatch.chdir(tmp_path)
    got = read_file_list("lists/files.txt")
    assert got == ["lists/a.mp4", "lists/../clips/b.mp4", "/abs/c.mp4", os.path.expanduser("~/d.mp4")]
    assert [os.path.abspath(p) for p in got[:2]] == [str(tmp_path / "lists" / "a.mp4"), str(tmp_path / "clips" / "b.mp4")]
    assert read_file_list(lst)[0] == str(tmp_path / "lists" / "a.mp4")
    (tmp_path / "here.txt").write_text("a.mp4\n")
    assert read_file_list("here.txt") == ["a.mp4"]  # a list in the current folder: unchanged
    monkeypatch.setattr("sys.stdin", io.StringIO("x.mp4\n# no\nsub/y.mp4\n"))
    assert read_file_list("-") == ["x.mp4", "sub/y.mp4"]  # stdin: relative to the current folder
    with pytest.raises(InputError, match="cannot read the file list"):
        read_file_list(tmp_path / "none.txt")


def test_cli_list_relative_to_its_folder_on_a_real_clip(tmp_path, capsys):
    from sync_sdk.synthetic import generate_clip, write_clip
    (tmp_path / "clips").mkdir()
    write_clip(generate_clip(1, duration_sec=5.2, size=(128, 160)), tmp_path / "clips" / "a.mp4")
    (tmp_path / "clips" / "list.txt").write_text("a.mp4\n")
    out = tmp_path / "o.jsonl"
    argv = ["batch", "--list", str(tmp_path / "clips" / "list.txt"), "--out", str(out), "--model", "synthetic-tiny",
            "--shift-views", "0", "--quiet"]
    assert main(argv) == EXIT_OK
    (rec,) = lines(out)
    assert rec["status"] == "ok" and rec["file"] == str(tmp_path / "clips" / "a.mp4")
    assert main([*argv, "--resume"]) == EXIT_OK and '"skipped": 1' in capsys.readouterr().err
    assert len(lines(out)) == 1


# ---------------------------------------------------------------------------- SIGKILL at random moments
def test_sigkills_then_resume_lose_nothing(tmp_path):
    from benchmarks.faults.kills import run_kills
    res = run_kills(tmp_path, runs=10, seed=1, ray_runs=0)
    assert res["runs"] == 10 and res["killed_mid_work"] >= 1, res  # ten SIGKILLs
    assert (res["lost"], res["duplicated"], res["torn_lines"]) == (0, 0, 0), res
    assert res["final_status"] == {"ok": 4, "error": 2}, res  # four clips (one listed twice), two bad inputs
    recs = lines(tmp_path / "results.jsonl")
    assert len(recs) == res["inputs"] == 6
    assert {r["error"] for r in recs if r["status"] == "error"} == {"MediaDecodeError", "MediaNotFoundError"}
    assert main(["batch", *(r["file"] for r in recs), "--out", str(tmp_path / "results.jsonl"), "--resume",
                 "--model", "synthetic-tiny", "--quiet"]) == EXIT_SOME_FAILED  # all done; two are errors
