"""SIGKILL `sync-sdk batch` at random moments, finish with --resume, and count what was lost or duplicated.

    python benchmarks/faults/kills.py --runs 10 --json benchmarks/results/kills.json
    run_kills(work_dir, runs=10, seed=0)  # {"runs" (SIGKILLed), "started", "lost", "duplicated", "torn_lines", ..., "ray"}

Inputs: a few synthetic clips (one given twice), a text file and a missing path. Each run is a fresh
`sync-sdk batch --model synthetic-tiny` process SIGKILLed at a random moment (in its first seconds, or
just after its first or second line), with --resume or --retry-failed at random. A run that ends before
its kill finishes a round: its output is checked and the next run starts afresh with --overwrite. A
last --resume run, not killed, finishes the job.
lost: inputs without a line in a finished output; duplicated: inputs with more than one line there;
torn_lines: unparseable lines, looked for after every kill and in the finished outputs.

Ray (`ray_runs` > 0, Ray installed): `batch --ray` on the same inputs; the first run's model actor is
SIGKILLed while it scores a batch and the run's shards are checked; then the folder starts afresh and
the other runs' drivers (with their local Ray clusters) are SIGKILLed at a random moment; a last
--resume run finishes and is checked. lost / duplicated: inputs without a row, or with more than one
row, in the Parquet shards.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
CLI = "import sys; from sync_sdk.cli.main import main; sys.exit(main(sys.argv[1:]))"
ACTOR_TITLE = "ray::MapWorker(MapBatches(ClipScorer))"  # the process title of a Ray batch model actor
FINISH_SEC = 600.0  # the most a run that is not killed may take
MAX_STARTS = 4  # runs started per run to SIGKILL, at most (a run may finish before its kill)


def make_inputs(folder: Path, clips: int = 4) -> list[str]:
    """Absolute paths: `clips` synthetic 5.2-s clips (the first listed twice), a text file, a missing path."""
    from sync_sdk.synthetic import generate_clip, write_clip
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(1, clips + 1):  # (seed 0 at this size makes the generator warn)
        path = folder / f"clip{seed}.mp4"
        if not path.is_file():
            write_clip(generate_clip(seed, offset_sec=0.2 * (seed % 5 - 2), duration_sec=5.2, size=(128, 160)), path)
        paths.append(str(path))
    (folder / "notes.txt").write_text("not a video\n")
    return [*paths, paths[0], str(folder / "notes.txt"), str(folder / "missing.mp4")]


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """`sync-sdk ARGS` in a new process (and process group) running this checkout's sync_sdk."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Pids of the processes below `pid` (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> str:
    """The command line (or process title) of `pid`, "" when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and every process below it (a local Ray cluster included), then reap it."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_until(proc: subprocess.Popen, delay: float) -> bool:
    """Wait `delay` s for `proc`; SIGKILL it (and its processes) if still running. True when killed."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        return True


def _n_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def kill_after_lines(proc: subprocess.Popen, out: Path, lines: int, delay: float) -> tuple[bool, int]:
    """SIGKILL `proc` `delay` s after it has appended `lines` lines to `out`, unless it ends first.
    (killed, lines it appended)."""
    appended, last, at = 0, _n_lines(out), None
    deadline = time.monotonic() + FINISH_SEC
    while proc.poll() is None:
        n = _n_lines(out)
        appended, last = appended + max(0, n - last), n  # a compaction or --overwrite shrinks the file
        now = time.monotonic()
        if at is None and appended >= lines:
            at = now + delay
        if (at is not None and now >= at) or now >= deadline:
            kill_tree(proc)
            return True, appended + max(0, _n_lines(out) - last)
        time.sleep(0.02)
    return False, appended


def check_jsonl(out: Path, inputs: list[str]) -> dict:
    """lost / duplicated inputs and torn (unparseable) lines of a batch's JSONL output."""
    lines = out.read_bytes().splitlines() if out.is_file() else []
    counts: Counter = Counter()
    torn = 0
    for line in lines:
        try:
            counts[os.path.abspath(json.loads(line)["file"])] += 1
        except (ValueError, KeyError, TypeError):
            torn += 1
    keys = {os.path.abspath(f) for f in inputs}
    return {"lost": sum(counts[k] == 0 for k in keys), "duplicated": sum(counts[k] > 1 for k in keys),
            "torn_lines": torn}


def run_kills(work_dir: str | Path, runs: int = 10, seed: int = 0, max_delay: float = 4.0,
              ray_runs: int = 2) -> dict:
    """SIGKILL `runs` local batch runs (and `ray_runs` Ray ones) at random moments; see the module docstring.
    runs in the result counts the runs SIGKILLed; started, the processes started (those that finished
    before their kill included; at most MAX_STARTS * runs).

    A run is killed a random 0-`max_delay` s after it starts, or 0-1 s after it has written its first or
    second line; killed_mid_work counts the kills after a line of that run."""
    work = Path(work_dir).resolve()
    inputs = make_inputs(work / "inputs")
    rng = random.Random(seed)
    out = work / "results.jsonl"
    batch = ["batch", *inputs, "--out", str(out), "--model", "synthetic-tiny", "--shift-views", "0", "--threads",
             "1", "--quiet"]
    t0 = time.perf_counter()
    res = {"runs": 0, "started": 0, "killed_mid_work": 0, "rounds": 0, "inputs": len(set(inputs)), "lost": 0,
           "duplicated": 0, "torn_lines": 0}

    def finished() -> None:
        res["rounds"] += 1
        for k, v in check_jsonl(out, inputs).items():
            res[k] += v

    flag = "--overwrite"
    while res["runs"] < runs and res["started"] < MAX_STARTS * runs:
        res["started"] += 1
        lines = rng.randint(0, 2)  # 0: anywhere in the first max_delay s, start-up included
        delay = rng.uniform(0.0, max_delay if lines == 0 else 1.0)
        killed, appended = kill_after_lines(start_cli([*batch, flag], work), out, lines, delay)
        if killed:
            res["runs"] += 1
            res["killed_mid_work"] += appended > 0
            res["torn_lines"] += check_jsonl(out, inputs)["torn_lines"]
            flag = rng.choice(["--resume", "--retry-failed"])
        else:
            finished()
            flag = "--overwrite"
    run_until(start_cli([*batch, "--resume"], work), FINISH_SEC)
    finished()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    res["final_status"] = dict(Counter(r["status"] for r in lines))
    res["elapsed_sec"] = round(time.perf_counter() - t0, 1)
    if ray_runs > 0:
        res["ray"] = run_ray_kills(work, inputs, ray_runs, rng, max_delay)
    return res


def run_ray_kills(work: Path, inputs: list[str], runs: int, rng: random.Random, max_delay: float) -> dict:
    """`batch --ray`: the first run's model actor is SIGKILLed mid-batch and the run checked; then the
    output starts afresh and the later runs' drivers are SIGKILLed at a random moment; a last --resume
    run finishes and is checked. {"skipped": why} without Ray."""
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        return {"skipped": f"Ray Data is not installed ({e.name})"}
    manifest, out = work / "manifest.csv", work / "ray_scores"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["path"], *([p] for p in inputs)])
    batch = ["batch", "--ray", str(manifest), "--out", str(out), "--model", "synthetic-tiny", "--workers", "1",
             "--quiet"]
    t0 = time.perf_counter()
    res = {"runs": runs, "actor_killed": 0, "driver_killed": 0, "inputs": len(set(inputs)), "lost": 0,
           "duplicated": 0}
    proc = start_cli([*batch, "--overwrite"], work)
    res["actor_killed"] = int(kill_actor_mid_batch(proc.pid, rng.uniform(0.0, 1.0), lambda: proc.poll() is None) > 0)
    proc.wait(timeout=FINISH_SEC)
    checks = [check_shards(out, inputs)]
    flag = "--overwrite"
    for _ in range(runs - 1):
        res["driver_killed"] += run_until(start_cli([*batch, flag], work), rng.uniform(2.0, 4 * max_delay))
        flag = "--resume"
    run_until(start_cli([*batch, "--resume"], work), FINISH_SEC)
    checks.append(check_shards(out, inputs))
    for k in ("lost", "duplicated"):
        res[k] = sum(c[k] for c in checks)
    res["elapsed_sec"] = round(time.perf_counter() - t0, 1)
    return res


def check_shards(out: Path, inputs: list[str]) -> dict:
    """lost / duplicated inputs of a Ray batch's Parquet shards (rows per input path)."""
    import pyarrow.parquet as pq
    rows: Counter = Counter()
    for shard in sorted(out.glob("part-*.parquet")):
        rows.update(os.path.abspath(p) for p in pq.read_table(shard, columns=["path"]).column("path").to_pylist())
    keys = {os.path.abspath(p) for p in inputs}
    return {"lost": sum(rows[k] == 0 for k in keys), "duplicated": sum(rows[k] > 1 for k in keys)}


def kill_actor_mid_batch(root: int, delay: float, running: Callable[[], bool], timeout: float = 300.0) -> int:
    """SIGKILL the first Ray batch model actor below process `root` seen scoring a batch, `delay` s after
    that; its pid, or 0 when none was seen while `running()` and within `timeout` s."""
    end = time.monotonic() + timeout
    while running() and time.monotonic() < end:
        for pid in descendants(root):
            if cmdline(pid).startswith(ACTOR_TITLE + ".submit"):
                time.sleep(delay)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    return 0
                return pid
        time.sleep(0.05)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/sync_sdk_kills"), help="folder for inputs and outputs")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--ray-runs", type=int, default=2, help="0 leaves the Ray case out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    res = run_kills(args.work, runs=args.runs, seed=args.seed, ray_runs=args.ray_runs)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad = res["lost"] + res["duplicated"] + res["torn_lines"]
    bad += res.get("ray", {}).get("lost", 0) + res.get("ray", {}).get("duplicated", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
