"""Media fuzzing (issue #27): damaged and crafted files, each run through `sync-sdk predict FILE --json`
in its own process under a time bound and a memory cap. Every one must end with a result or a typed
error: a SyncSDKError subclass named on the CLI's `sync-sdk: error: Class: message` line.

Outcomes: "ok"; the error class; "untyped_error" (an error line without a SyncSDKError class);
"crash" (a traceback on stderr, a death by signal, an exit code other than 0-3, or an "ok" exit
without a JSON result; MemoryError under the cap lands here); "hang" (the time bound ran out).

Files (families.py, round robin so that a small n covers every family): the undamaged bases (control),
truncation, bit flips in headers and payload, swapped containers, zero-length streams, absurd
dimensions, absurd audio formats, absurd timestamps and non-monotonic pts. Bases: a synthetic clip
(sync_sdk.synthetic, 5.6 s, 128x160) in mp4 / faststart mp4 / mkv / avi / webm / mov / mpegts / nut, a
second synthetic clip, and the real videos in /work/shared/reference/videos when present (originals and
their mkv / mpegts remuxes). The generator is deterministic for a seed; the files are not kept.

    python -m benchmarks.faults.media_fuzz [--n 300] [--seed 0] [--timeout 60] [--workers 2] \\
        [--out DIR] [--json benchmarks/results/media_fuzz.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

import sync_sdk
from benchmarks.faults.crafted import remux, write_av
from benchmarks.faults.families import CONTAINERS, FAMILIES, Bases
from sync_sdk import errors
from sync_sdk.synthetic import generate_clip, write_clip

REAL_DIR = Path("/work/shared/reference/videos")
ROOT = Path(sync_sdk.__file__).resolve().parents[1]
MEM_LIMIT_GB = 4.0  # address-space cap of each CLI process: an unbounded allocation fails instead of the machine
# the console script's code (setup.py entry point), after the memory cap
_CLI = ("import resource, sys; lim = int(float(sys.argv.pop(1)) * 2 ** 30); "
        "resource.setrlimit(resource.RLIMIT_AS, (lim, lim)); "
        "from sync_sdk.cli.main import main; sys.exit(main())")
_TRACEBACK = "Traceback (most recent call last)"
_ERROR = re.compile(r"^sync-sdk: error: (?:([A-Za-z_]\w*): )?", re.MULTILINE)


@dataclass(frozen=True)
class FuzzCase:
    """One fuzz file: its path, its family (families.FAMILIES) and what was done to make it."""
    path: Path
    family: str
    note: str


@dataclass(frozen=True)
class Outcome:
    """How the CLI ended on a case: outcome name, exit code (None: killed at the time bound), seconds,
    the CLI's error line (the last stderr lines for a crash), and whether stderr held a traceback."""
    case: FuzzCase
    outcome: str
    exit_code: int | None
    seconds: float
    detail: str
    traceback: bool = False


def make_fuzz_files(out_dir: str | Path, n: int = 300, seed: int = 0, real_dir: str | Path | None = REAL_DIR,
                    families: tuple[str, ...] | None = None) -> list[FuzzCase]:
    """Write n fuzz files into out_dir (bases under out_dir/bases) and return their cases, taking one
    file from each family in turn (`families`: a subset of families.FAMILIES, default all) until n are
    made or every family has ended. Real videos come from real_dir (*.mp4) when it exists."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bases = make_bases(out / "bases", real_dir)
    names = families or tuple(FAMILIES)
    streams = {name: FAMILIES[name](bases, np.random.default_rng([seed, k])) for k, name in enumerate(names)}
    cases: list[FuzzCase] = []
    while streams and len(cases) < n:
        for name in list(streams):
            recipe = next(streams[name], None) if len(cases) < n else None
            if recipe is None:
                del streams[name]
                continue
            note, make = recipe
            cases.append(FuzzCase(make(out / f"{len(cases):03d}_{name}"), name, note))
    return cases


def make_bases(folder: Path, real_dir: str | Path | None) -> Bases:
    """The synthetic clip in every container of families.CONTAINERS (+ faststart mp4, + a second clip)
    and the real videos (as they are, remuxed to mkv and mpegts)."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = generate_clip(3, duration_sec=5.6, size=(256, 320))
    small = replace(clip, frames=np.ascontiguousarray(clip.frames[:, ::2, ::2]))
    other = generate_clip(11, duration_sec=6.0, size=(256, 256), kind="beep_flash")
    files = {"synthetic.mp4": write_clip(small, folder / "synthetic.mp4"),
             "beep_flash.mp4": write_clip(replace(other, frames=other.frames[:, ::2, ::2]), folder / "beep_flash.mp4"),
             "faststart.mp4": write_av(folder / "faststart.mp4", small.frames, small.audio,
                                       options={"movflags": "+faststart"})}
    for suffix, (fmt, vcodec, acodec) in CONTAINERS.items():
        if suffix != ".mp4":
            files[f"synthetic{suffix}"] = write_av(folder / f"synthetic{suffix}", small.frames, small.audio,
                                                   fmt=fmt, vcodec=vcodec, acodec=acodec)
    real = sorted(Path(real_dir).glob("*.mp4")) if real_dir and Path(real_dir).is_dir() else []
    for path in real:
        files[path.name] = path
        for suffix in (".mkv", ".ts"):
            files[path.stem + suffix] = remux(path, folder / f"{path.stem}{suffix}")
    return Bases(small.frames, small.audio, clip.frames, files, real)


# ---------------------------------------------------------------------------- running
def run_case(case: FuzzCase, timeout_sec: float = 60.0, model: str = "synthetic-tiny",
             mem_limit_gb: float = MEM_LIMIT_GB) -> Outcome:
    """`sync-sdk predict FILE --json --model MODEL` on one case in a new process, classified."""
    cmd = [sys.executable, "-c", _CLI, str(mem_limit_gb), "predict", str(case.path), "--json", "--model", model]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout_sec, env=env)
    except subprocess.TimeoutExpired:
        return Outcome(case, "hang", None, time.perf_counter() - t0, f"no exit within {timeout_sec} s")
    seconds = time.perf_counter() - t0
    outcome, detail = classify(run.returncode, run.stdout, run.stderr)
    return Outcome(case, outcome, run.returncode, seconds, detail, _TRACEBACK in run.stderr)


def classify(code: int, stdout: str, stderr: str) -> tuple[str, str]:
    """(outcome, detail) of one CLI run (see the module docstring)."""
    lines = stderr.strip().splitlines()
    if _TRACEBACK in stderr:
        return "crash", " | ".join(lines[-3:])
    if code < 0:
        return "crash", f"killed by signal {-code}"
    if code == 0:
        try:
            ok = json.loads(stdout).get("status") == "ok"
        except (ValueError, AttributeError):
            ok = False
        return ("ok", "") if ok else ("crash", f"exit 0 without a JSON result: {stdout[-200:]!r}")
    if code not in (1, 2, 3):
        return "crash", f"exit code {code}: " + " | ".join(lines[-3:])
    found = list(_ERROR.finditer(stderr))
    if not found:
        return "untyped_error", " | ".join(lines[-3:])
    name = found[-1].group(1)
    line = stderr[found[-1].start():].splitlines()[0]
    cls = getattr(errors, name or "", None)
    typed = isinstance(cls, type) and issubclass(cls, errors.SyncSDKError)
    return (name if typed else "untyped_error"), line


def run_fuzz(cases: list[FuzzCase], timeout_sec: float = 60.0, model: str = "synthetic-tiny", workers: int = 2,
             mem_limit_gb: float = MEM_LIMIT_GB, progress: bool = True) -> dict:
    """Run every case through the CLI (`workers` processes at a time) and summarise: {"files", "crashes",
    "hangs", "untyped", "outcomes": {outcome: count}, "per_family": {family: {outcome: count}},
    "slowest_sec", "slowest_file", "wall_sec", "timeout_sec", "failures": [crash / hang / untyped
    cases], "results": [every case]}."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda c: run_case(c, timeout_sec, model, mem_limit_gb), cases)
        results = list(tqdm(jobs, total=len(cases), desc="media fuzz", unit="file", disable=not progress))
    per_family: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        per_family[r.case.family][r.outcome] += 1
    outcomes = Counter(r.outcome for r in results)
    slowest = max(results, key=lambda r: r.seconds, default=None)
    rows = [{"file": r.case.path.name, "family": r.case.family, "note": r.case.note, "outcome": r.outcome,
             "exit_code": r.exit_code, "sec": round(r.seconds, 2), "detail": r.detail, "traceback": r.traceback}
            for r in results]
    bad = ("crash", "hang", "untyped_error")
    return {"files": len(results), "crashes": outcomes["crash"], "hangs": outcomes["hang"],
            "untyped": outcomes["untyped_error"], "outcomes": dict(outcomes.most_common()),
            "per_family": {f: dict(c.most_common()) for f, c in per_family.items()},
            "slowest_sec": round(slowest.seconds, 2) if slowest else 0.0,
            "slowest_file": slowest.case.path.name if slowest else None,
            "wall_sec": round(time.perf_counter() - t0, 1), "timeout_sec": timeout_sec,
            "failures": [row for row in rows if row["outcome"] in bad], "results": rows}


def main(argv: list[str] | None = None) -> int:
    """Generate, run, print the summary (and write it with --json); exit 1 on any crash, hang or untyped error."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="number of files (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds each CLI run may take (default 60)")
    p.add_argument("--workers", type=int, default=2, help="CLI processes at a time (default 2)")
    p.add_argument("--out", type=Path, help="folder for the files (default: a temporary one, removed)")
    p.add_argument("--json", type=Path, help="write the summary (without per-file rows) here")
    p.add_argument("--real-dir", type=Path, default=REAL_DIR, help=f"real videos (*.mp4; default {REAL_DIR})")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="media_fuzz_") as tmp:
        t0 = time.perf_counter()
        cases = make_fuzz_files(args.out or tmp, args.n, args.seed, args.real_dir)
        made = time.perf_counter() - t0
        summary = run_fuzz(cases, args.timeout, workers=args.workers)
    summary["generate_sec"] = round(made, 1)
    short = {k: v for k, v in summary.items() if k != "results"}
    print(json.dumps(short, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**short, "n": args.n, "seed": args.seed}, indent=1) + "\n")
    return 1 if summary["crashes"] or summary["hangs"] or summary["untyped"] else 0


if __name__ == "__main__":
    sys.exit(main())
